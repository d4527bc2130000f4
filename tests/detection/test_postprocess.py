from __future__ import annotations

import numpy as np
import pytest

from efface.detection.postprocess import (
    MAX_WORKING_PIXELS,
    TILE_MARGIN_PX,
    RawDetections,
    decode_centerface,
    detect_tiled,
    favour_large,
    nms,
    padded_size,
    pairwise_iou,
    plan_tiles,
    to_original_pixels,
)


@pytest.mark.parametrize(
    ("hw", "expected"),
    [((1, 1), (32, 32)), ((32, 32), (32, 32)), ((33, 64), (64, 64)), ((480, 641), (480, 672))],
)
def test_padded_size(hw: tuple[int, int], expected: tuple[int, int]) -> None:
    assert padded_size(*hw) == expected


def test_padded_size_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least 1x1"):
        padded_size(0, 10)


def _maps(h: int = 8, w: int = 10) -> tuple[np.ndarray, ...]:
    return (
        np.zeros((1, 1, h, w), np.float32),
        np.zeros((1, 2, h, w), np.float32),
        np.zeros((1, 2, h, w), np.float32),
        np.zeros((1, 10, h, w), np.float32),
    )


def test_decode_empty_when_nothing_above_threshold() -> None:
    assert len(decode_centerface(*_maps(), score_threshold=0.5)) == 0


def test_decode_one_face() -> None:
    heat, scale, offset, marks = _maps()
    heat[0, 0, 3, 5] = 0.9
    scale[0, :, 3, 5] = (np.log(10.0), np.log(5.0))  # height 40 px, width 20 px at stride 4
    offset[0, :, 3, 5] = (0.25, 0.5)
    marks[0, 0::2, 3, 5] = 0.5  # every landmark at the box centre (y)
    marks[0, 1::2, 3, 5] = 0.5  # ... and (x)
    raw = decode_centerface(heat, scale, offset, marks, score_threshold=0.5)
    cx, cy = (5 + 0.5 + 0.5) * 4, (3 + 0.25 + 0.5) * 4
    np.testing.assert_allclose(raw.boxes_xyxy[0], [cx - 10, cy - 20, cx + 10, cy + 20], rtol=1e-6)
    np.testing.assert_allclose(raw.scores, [0.9])
    np.testing.assert_allclose(raw.landmarks_xy[0], np.tile([cx, cy], (5, 1)), rtol=1e-6)


@pytest.mark.parametrize(
    ("boxes", "scores", "iou", "kept"),
    [
        (np.zeros((0, 4)), np.zeros(0), 0.3, []),
        ([[0, 0, 10, 10]], [0.5], 0.3, [0]),
        ([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.6, 0.9, 0.7], 0.3, [1, 2]),
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], 0.4, [0, 1]),  # IoU 1/3 stays below 0.4
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], 0.3, [0]),
        ([[0, 0, 0, 0], [0, 0, 0, 0]], [0.9, 0.8], 0.3, [0]),  # degenerate boxes never divide by zero
        ([[0, 0, 0, 0], [0, 0, 10, 10]], [0.9, 0.8], 0.3, [0, 1]),
        ([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12]], [0.5, 0.5, 0.5], 0.3, [0]),  # ties: input order
        ([[0, 0, 10, 10], [20, 0, 30, 10]], [0.0, -0.5], 0.3, [0, 1]),  # any score, even <= 0, is ranked
    ],
)
def test_nms(boxes: list, scores: list, iou: float, kept: list[int]) -> None:
    result = nms(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), iou_threshold=iou)
    assert result.tolist() == kept


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    overlaps = pairwise_iou(boxes[order].astype(np.float64), boxes[order].astype(np.float64))
    is_suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for rank in range(len(order)):
        if not is_suppressed[rank]:
            keep.append(int(order[rank]))
            is_suppressed |= overlaps[rank] > iou_threshold
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_nms_matches_the_greedy_rule_on_crowded_random_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 300, (400, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(4, 60, (400, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0.1, 1.0, 400).astype(np.float32)
    for iou in (0.3, 0.5):
        assert nms(boxes, scores, iou_threshold=iou).tolist() == _reference_nms(boxes, scores, iou)


def test_to_original_pixels_rescales_clips_and_drops_outside_boxes() -> None:
    raw = RawDetections(
        np.asarray([[10, 10, 30, 50], [-20, -20, 8, 8], [300, 300, 340, 340]], np.float32),
        np.asarray([0.9, 0.8, 0.7], np.float32),
        np.zeros((3, 5, 2), np.float32),
    )
    out = to_original_pixels(raw, resize_factor=2.0, width_px=100, height_px=100)
    np.testing.assert_allclose(out.boxes_xyxy, [[5, 5, 15, 25], [0, 0, 4, 4]])
    np.testing.assert_allclose(out.scores, [0.9, 0.8])


def test_raw_detections_validates_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        RawDetections(np.zeros((2, 3)), np.zeros(2), np.zeros((2, 5, 2)))


def _dets(heights: list[float], scores: list[float]) -> RawDetections:
    boxes = np.array([[0.0, 0.0, h, h] for h in heights], np.float32)
    return RawDetections(boxes, np.array(scores, np.float32), np.zeros((len(scores), 5, 2), np.float32))


def test_favour_large_lifts_only_large_boxes_onto_the_threshold() -> None:
    found = favour_large(
        _dets([100, 100, 100, 20, 20], [0.15, 0.05, 0.9, 0.15, 0.5]),
        min_height_px=48,
        large_score=0.15,
        score_threshold=0.35,
    )
    assert found.boxes_xyxy[:, 3].tolist() == [100, 20, 100, 20, 100]
    lifted_best = 0.35 + (0.9 - 0.15) * 0.65 / 0.85
    assert found.scores.tolist() == pytest.approx([lifted_best, 0.5, 0.35, 0.15, 0.05 * 0.35 / 0.15], abs=1e-6)
    assert np.all(np.diff(found.scores) <= 0)  # still best first


@pytest.mark.parametrize("large_score", [0.35, 0.5])
def test_favour_large_changes_nothing_unless_large_boxes_need_less(large_score: float) -> None:
    given = _dets([100, 20], [0.2, 0.3])
    found = favour_large(given, min_height_px=48, large_score=large_score, score_threshold=0.35)
    assert found.scores.tolist() == pytest.approx([0.2, 0.3])


def test_favour_large_keeps_the_score_range() -> None:
    found = favour_large(_dets([60, 60], [0.0, 1.0]), min_height_px=48, large_score=0.1, score_threshold=0.5)
    assert sorted(found.scores.tolist()) == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize(
    ("height_px", "width_px", "input_scale", "tiles"),
    [
        (3024, 4032, 1.0, 1),  # a 12 MP photo: one piece, as before tiling
        (4096, 3072, 1.0, 1),  # exactly the largest one piece
        (7000, 7000, 1.0, 9),  # the service's largest image
        (7000, 7000, 0.5, 1),  # its half-size pass
        (3024, 4032, 2.0, 6),  # an up-scaled pass over a 12 MP photo
        (600, 40_000, 1.0, 14),  # a panorama: one row
        (1, 1, 1.0, 1),
    ],
)
def test_plan_tiles_bounds_every_piece_and_owns_every_pixel_once(
    height_px: int, width_px: int, input_scale: float, tiles: int
) -> None:
    planned = plan_tiles(height_px, width_px, input_scale=input_scale)
    assert len(planned) == tiles
    for tile in planned:
        working_px = (tile.y1_px - tile.y0_px) * (tile.x1_px - tile.x0_px) * input_scale**2
        assert working_px <= MAX_WORKING_PIXELS * 1.001  # rounding of a pixel at the scale
    # Every centre (a grid of them, the image's corners and beyond its edges) is owned by exactly one tile.
    ys = np.linspace(-5, height_px + 5, 41)
    xs = np.linspace(-5, width_px + 5, 41)
    for y in ys:
        for x in xs:
            owners = [t for t in planned if t.own_xyxy[0] <= x < t.own_xyxy[2] and t.own_xyxy[1] <= y < t.own_xyxy[3]]
            assert len(owners) == 1, (x, y)
            # A face up to twice the margin (in network pixels), centred here, lies whole in its owner tile.
            half_px = TILE_MARGIN_PX / input_scale
            owner = owners[0]
            if 0 <= x < width_px and 0 <= y < height_px:
                assert owner.x0_px <= max(0, x - half_px) and min(width_px, x + half_px) <= owner.x1_px
                assert owner.y0_px <= max(0, y - half_px) and min(height_px, y + half_px) <= owner.y1_px


def test_detect_tiled_finds_a_face_on_a_tile_border_once_in_image_pixels() -> None:
    image = np.zeros((300, 1000, 3), np.uint8)
    image[100:160, 480:540] = 255  # a "face" across the border of the two tiles below
    calls: list[tuple[int, int]] = []

    def detect_whole(part: np.ndarray) -> RawDetections:
        calls.append(part.shape[:2])
        ys, xs = np.nonzero(part[:, :, 0])
        if len(ys) == 0:
            return RawDetections.empty()
        box = np.asarray([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        return RawDetections(box, np.asarray([0.9], np.float32), np.zeros((1, 5, 2), np.float32))

    # 400 px pieces with 64 px margins: four tiles, owning x from 0, 250, 500 and 750.
    found = detect_tiled(
        image, input_scale=1.0, nms_iou=0.3, detect_whole=detect_whole, max_working_pixels=400 * 400, margin_px=64
    )
    assert len(calls) == 4 and all(h * w <= 400 * 400 for h, w in calls)
    assert found.boxes_xyxy.tolist() == [[480.0, 100.0, 540.0, 160.0]]
    whole = detect_tiled(image, input_scale=1.0, nms_iou=0.3, detect_whole=detect_whole)
    assert len(calls) == 5 and calls[-1] == (300, 1000)  # under the bound: one piece, as before tiling
    assert whole.boxes_xyxy.tolist() == found.boxes_xyxy.tolist()
