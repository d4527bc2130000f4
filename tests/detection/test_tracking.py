"""Carrying faces between video frames: hold-over, backward fill, detect-every-N, and the bookkeeping."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from efface.detection import tracking
from efface.detection.tracking import (
    DetectionPass,
    TemporalCover,
    TrackingSpec,
    center_distances,
    cover_frames,
    match_greedy,
)
from efface.records import BBox, Face

WIDTH, HEIGHT = 640, 360
MARKS = ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 8.0), (9.0, 10.0))


def _box_at(frame: int, *, start_xy: tuple[float, float], velocity_xy: tuple[float, float], size_px: float) -> BBox:
    x, y = start_xy[0] + velocity_xy[0] * frame, start_xy[1] + velocity_xy[1] * frame
    return BBox(x, y, x + size_px, y + size_px)


def _coverage(truth: BBox, faces: tuple[Face, ...]) -> float:
    """Fraction of the pixels of ``truth`` (inside the frame) that some face box covers."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5

    def inside(box: BBox) -> np.ndarray:
        return (xs >= box.x1) & (xs < box.x2) & (ys >= box.y1) & (ys < box.y2)

    wanted = inside(truth)
    covered = np.zeros_like(wanted)
    for face in faces:
        covered |= inside(face.box)
    return float((wanted & covered).sum() / wanted.sum())


def _run(spec: TrackingSpec, detections: list[tuple[Face, ...] | None]) -> list[tuple[Face, ...]]:
    return cover_frames(detections, spec, width=WIDTH, height=HEIGHT)


@pytest.mark.parametrize("lookback", [0, 8])
def test_linear_face_missed_for_three_frames_is_covered_on_every_frame(lookback: int) -> None:
    truth = [_box_at(i, start_xy=(40, 100), velocity_xy=(7, 2), size_px=48) for i in range(30)]
    detections = [() if 12 <= i < 15 else (Face(box, 0.9),) for i, box in enumerate(truth)]
    covered = _run(TrackingSpec(detect_every=1, lookback_frames=lookback), detections)
    assert len(covered) == 30
    for i, (box, faces) in enumerate(zip(truth, covered, strict=True)):
        assert _coverage(box, faces) >= 0.7, f"frame {i}"


@pytest.mark.parametrize(("speed_px", "first_covered"), [(2, 4), (6, 5)])
def test_first_missed_frames_are_backfilled_within_lookback_only(speed_px: float, first_covered: int) -> None:
    truth = [_box_at(i, start_xy=(40, 100), velocity_xy=(speed_px, 0), size_px=48) for i in range(30)]
    first_seen = 12
    detections = [(Face(box, 0.9),) if i >= first_seen else () for i, box in enumerate(truth)]
    covered = _run(TrackingSpec(detect_every=1, lookback_frames=8), detections)
    # The oldest lookback frame is final before the track's velocity is known: it gets the first box, grown,
    # which covers a slow face but not a fast one; the later frames get the box moved back along the motion.
    for i in range(first_covered, 30):
        assert _coverage(truth[i], covered[i]) >= 0.7, f"frame {i}"
    assert len(covered[first_seen - 8]) == 1
    assert all(covered[i] == () for i in range(first_seen - 8))


def test_first_five_missed_frames_of_a_moving_face_are_covered() -> None:
    truth = [_box_at(i, start_xy=(40, 100), velocity_xy=(6, 3), size_px=40) for i in range(20)]
    detections = [(Face(box, 0.9),) if i >= 5 else () for i, box in enumerate(truth)]
    covered = _run(TrackingSpec(detect_every=1, lookback_frames=8), detections)
    assert [_coverage(truth[i], covered[i]) >= 0.7 for i in range(20)] == [True] * 20


@pytest.mark.parametrize(("hold_frames", "detect_every", "span"), [(0, 1, 0), (3, 1, 3), (8, 1, 8), (1, 3, 5)])
def test_track_ends_after_hold(hold_frames: int, detect_every: int, span: int) -> None:
    spec = TrackingSpec(hold_frames=hold_frames, detect_every=detect_every, lookback_frames=0)
    assert spec.hold_span_frames == span
    face = Face(BBox(100, 100, 150, 150), 0.8)
    last_seen = 6
    detections: list[tuple[Face, ...] | None] = [
        ((face,) if i <= last_seen else ()) if i % detect_every == 0 else None for i in range(40)
    ]
    cover = TemporalCover(spec, width=WIDTH, height=HEIGHT)
    covered = [faces for pushed in detections for _, faces in cover.push(pushed)] + [f for _, f in cover.flush()]
    counts = [len(faces) for faces in covered]
    assert counts[: last_seen + 1 + span] == [1] * (last_seen + 1 + span)
    assert counts[last_seen + 1 + span :] == [0] * (40 - last_seen - 1 - span)
    assert cover.stats.held_boxes == span + sum(1 for i in range(last_seen) if i % detect_every)


def test_held_box_grows_and_keeps_the_score() -> None:
    face = Face(BBox(100, 100, 140, 120), 0.6, MARKS)
    covered = _run(TrackingSpec(detect_every=1, lookback_frames=0, growth_per_frame=0.1), [(face,), (), ()])
    assert covered[0] == (face,)
    (held1,), (held2,) = covered[1], covered[2]
    assert held1.box == BBox(98, 99, 142, 121)
    assert held2.box == BBox(96, 98, 144, 122)
    assert (held1.score, held1.landmarks_xy) == (0.6, ())


@pytest.mark.parametrize("lookback", [0, 8])
def test_crossing_faces_missed_at_the_crossing_stay_covered_and_keep_their_tracks(lookback: int) -> None:
    n = 36
    left = [_box_at(i, start_xy=(20, 150), velocity_xy=(9, 0), size_px=44) for i in range(n)]
    right = [_box_at(i, start_xy=(560, 160), velocity_xy=(-9, 0), size_px=44) for i in range(n)]
    # They meet around frame 30; both are missed for three frames right at the crossing.
    crossing = range(28, 31)
    detections = [() if i in crossing else (Face(left[i], 0.9), Face(right[i], 0.8)) for i in range(n)]
    cover = TemporalCover(TrackingSpec(detect_every=1, lookback_frames=lookback), width=WIDTH, height=HEIGHT)
    covered = [faces for pushed in detections for _, faces in cover.push(pushed)] + [f for _, f in cover.flush()]
    for i in range(n):
        assert _coverage(left[i], covered[i]) >= 0.7, f"left face, frame {i}"
        assert _coverage(right[i], covered[i]) >= 0.7, f"right face, frame {i}"
    # Every detection after the crossing was taken up by an existing track: no swap, no new track.
    assert cover.stats.tracks == 2


@pytest.mark.parametrize("lookback", [0, 8])
def test_detect_every_third_frame_covers_a_moving_face_on_every_frame(lookback: int) -> None:
    spec = TrackingSpec(detect_every=3, lookback_frames=lookback)
    truth = [_box_at(i, start_xy=(30, 40), velocity_xy=(8, 5), size_px=40) for i in range(40)]
    cover = TemporalCover(spec, width=WIDTH, height=HEIGHT)
    covered = []
    for i, box in enumerate(truth):
        covered += [
            faces
            for _, faces in cover.push((Face(box, 0.9),) if cover.detection_pass(i) is DetectionPass.FULL else None)
        ]
    covered += [faces for _, faces in cover.flush()]
    # Without lookback the frames right after the first detection have only its box, grown: the velocity
    # is known from the second detection on (with lookback, the gap is interpolated).
    for i, (box, faces) in enumerate(zip(truth, covered, strict=True)):
        if lookback or i >= 3:
            assert _coverage(box, faces) >= 0.7, f"frame {i}"
    assert cover.stats.frames_with_detections == 14
    assert cover.stats.frames_covered == 40
    # 20 % of its width per frame: the detections 3 frames apart do not overlap, they are matched by distance.
    assert cover.stats.tracks == 1


def _light_pass_run(
    spec: TrackingSpec, full: list[tuple[Face, ...]], light: list[tuple[Face, ...]]
) -> tuple[list[tuple[Face, ...]], TemporalCover]:
    """Pushes ``full[i]`` on full-detection frames, ``light[i]`` on light-pass frames, None on the rest."""
    cover = TemporalCover(spec, width=WIDTH, height=HEIGHT)
    by_pass = {DetectionPass.FULL: full, DetectionPass.LIGHT: light}
    covered: list[tuple[Face, ...]] = []
    for i in range(len(full)):
        chosen = by_pass.get(cover.detection_pass(i))
        covered += [faces for _, faces in cover.push(chosen[i] if chosen is not None else None)]
    covered += [faces for _, faces in cover.flush()]
    return covered, cover


@pytest.mark.parametrize(("light_passes", "first_covered"), [(True, 4), (False, 6)])
def test_a_large_face_walking_in_is_covered_from_the_light_pass_that_sees_it(
    light_passes: bool, first_covered: int
) -> None:
    # It enters on frame 4, between the full detections of frames 3 and 6; no look-back to fill in before.
    truth = [_box_at(i, start_xy=(40, 100), velocity_xy=(10, 0), size_px=120) for i in range(15)]
    seen = [(Face(box, 0.9),) if i >= 4 else () for i, box in enumerate(truth)]
    spec = TrackingSpec(detect_every=3, lookback_frames=0, light_passes=light_passes)
    covered, cover = _light_pass_run(spec, seen, seen)
    assert [bool(faces) for faces in covered] == [i >= first_covered for i in range(15)]
    for i in range(first_covered, 15):
        assert _coverage(truth[i], covered[i]) >= 0.7, f"frame {i}"
    assert cover.stats.tracks == 1


def test_a_small_face_the_light_pass_misses_is_carried_as_without_light_passes() -> None:
    # Only the full detections see it; the light passes in between find nothing, and the hold is in frames,
    # so with no hold-over at all (hold_frames 0) it is still covered up to the next full detection.
    truth = [_box_at(i, start_xy=(200, 200), velocity_xy=(2, 1), size_px=14) for i in range(30)]
    full = [(Face(box, 0.6),) for box in truth]
    nothing: list[tuple[Face, ...]] = [() for _ in truth]
    runs = {}
    for light_passes in (True, False):
        spec = TrackingSpec(detect_every=3, hold_frames=0, lookback_frames=2, light_passes=light_passes)
        runs[light_passes] = _light_pass_run(spec, full, nothing)
    (with_light, cover), (without_light, _) = runs[True], runs[False]
    assert with_light == without_light
    assert all(_coverage(box, faces) >= 0.7 for box, faces in zip(truth, with_light, strict=True))
    assert cover.stats.tracks == 1


def test_light_passes_keep_a_fast_face_on_one_track_and_add_its_detections() -> None:
    # 25 px per frame on a 40 px face: two full detections apart it has moved almost twice its width.
    truth = [_box_at(i, start_xy=(10, 40), velocity_xy=(25, 4), size_px=40) for i in range(24)]
    seen = [(Face(box, 0.9),) for box in truth]
    spec = TrackingSpec(detect_every=3, lookback_frames=0, light_passes=True)
    covered, cover = _light_pass_run(spec, seen, seen)
    # Every frame has a detection of its own, at the face.
    assert all(_coverage(box, faces) >= 0.7 for box, faces in zip(truth, covered, strict=True))
    assert cover.stats.frames_with_detections == 24
    assert cover.stats.tracks == 1
    assert cover.stats.held_boxes == 0


def test_without_distance_matching_a_fast_face_restarts_its_track_at_every_detection() -> None:
    truth = [_box_at(i, start_xy=(30, 40), velocity_xy=(8, 5), size_px=40) for i in range(12)]
    spec = TrackingSpec(detect_every=3, match_distance_boxes=0)
    cover = TemporalCover(spec, width=WIDTH, height=HEIGHT)
    for i, box in enumerate(truth):
        cover.push((Face(box, 0.9),) if cover.detection_pass(i) is DetectionPass.FULL else None)
    cover.flush()
    assert cover.stats.tracks == 4


def test_center_distances() -> None:
    tracks = np.asarray([[0, 0, 10, 20], [100, 100, 100, 100]], np.float64)
    detections = np.asarray([[5, 0, 15, 20], [0, 30, 10, 50], [0, 0, 30, 20], [100, 100, 101, 101]], np.float64)
    distances = center_distances(tracks, detections)
    np.testing.assert_allclose(distances[0, :2], [0.5, 1.5])
    # A width three times the track's is another face; a 0 px track box counts as 1 px.
    assert np.isnan(distances[0, 2])
    assert distances[1, 3] == pytest.approx(0.5)


_F, _L, _N = DetectionPass.FULL, DetectionPass.LIGHT, DetectionPass.NONE


@pytest.mark.parametrize(
    ("detect_every", "light_passes", "expected"),
    [
        (1, False, [_F] * 7),
        (1, True, [_F] * 7),
        (3, False, [_F, _N, _N] * 2 + [_F]),
        (3, True, [_F, _L, _L] * 2 + [_F]),
        (2, True, [_F, _L] * 3 + [_F]),
    ],
)
def test_detection_pass(detect_every: int, light_passes: bool, expected: list[DetectionPass]) -> None:
    cover = TemporalCover(TrackingSpec(detect_every=detect_every, light_passes=light_passes), width=10, height=10)
    assert [cover.detection_pass(i) for i in range(7)] == expected
    with pytest.raises(ValueError, match="frame_index"):
        cover.detection_pass(-1)


@pytest.mark.parametrize("lookback", [0, 1, 5])
@pytest.mark.parametrize("frames", [0, 1, 3, 20])
def test_each_frame_comes_back_once_in_order_after_lookback_later_frames(lookback: int, frames: int) -> None:
    cover = TemporalCover(TrackingSpec(detect_every=1, lookback_frames=lookback), width=WIDTH, height=HEIGHT)
    face = Face(BBox(10, 10, 50, 50), 0.9)
    returned: list[int] = []
    for i in range(frames):
        out = cover.push((face,) if i % 4 == 0 else () if i % 4 == 1 else None)
        assert [index for index, _ in out] == ([i - lookback] if i >= lookback else [])
        returned += [index for index, _ in out]
    returned += [index for index, _ in cover.flush()]
    assert returned == list(range(frames))
    assert cover.stats.frames == frames
    with pytest.raises(RuntimeError, match="after flush"):
        cover.push(())


def test_without_hold_and_lookback_the_output_is_the_input() -> None:
    rng = np.random.default_rng(7)
    detections: list[tuple[Face, ...] | None] = []
    for i in range(60):
        if i % 7 == 3:
            detections.append(None)
            continue
        faces = []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(-20, WIDTH - 20), rng.uniform(-20, HEIGHT - 20)
            w = rng.uniform(5, 120)
            faces.append(Face(BBox(x, y, x + w, y + w * 1.2), float(rng.uniform(0.3, 1.0)), MARKS))
        detections.append(tuple(faces))
    covered = _run(TrackingSpec(detect_every=1, hold_frames=0, lookback_frames=0), detections)
    assert covered == [faces or () for faces in detections]


def test_detections_come_first_and_unchanged_even_outside_the_frame() -> None:
    inside = Face(BBox(10, 10, 50, 50), 0.7, MARKS)
    overhanging = Face(BBox(-30, 300, 40, 400), 0.5)
    covered = _run(TrackingSpec(detect_every=1, lookback_frames=0), [(inside, overhanging), (overhanging,)])
    assert covered[0] == (inside, overhanging)
    # Frame 1: the detection first, then the missed face held over: grown 4 %, no landmarks, same score.
    assert covered[1] == (overhanging, Face(BBox(9.2, 9.2, 50.8, 50.8), 0.7))


def test_carried_boxes_are_clipped_and_dropped_once_outside_the_frame() -> None:
    # A face leaving through the right edge at 30 px/frame, then missed.
    truth = [_box_at(i, start_xy=(500, 200), velocity_xy=(30, 0), size_px=60) for i in range(12)]
    detections = [(Face(box, 0.9),) if i < 3 else () for i, box in enumerate(truth)]
    covered = _run(TrackingSpec(detect_every=1, hold_frames=8, lookback_frames=0), detections)
    carried = [face for faces in covered[3:] for face in faces]
    assert carried, "the face is held while part of it is still in the frame"
    for face in carried:
        assert 0 <= face.box.x1 <= face.box.x2 <= WIDTH and 0 <= face.box.y1 <= face.box.y2 <= HEIGHT
        assert face.box.width >= 1 and face.box.height >= 1
    # Moving on at 30 px/frame, the predicted box has left the frame within a few frames: nothing is carried.
    assert covered[-1] == ()


def test_backfill_skips_frames_where_a_detection_already_covers_the_box() -> None:
    face = Face(BBox(100, 100, 160, 160), 0.9)
    other = Face(BBox(400, 100, 460, 160), 0.9)
    # Frame 0 sees only `other`; from frame 1 on both faces are detected, `face` starts a track at frame 1.
    covered = _run(
        TrackingSpec(detect_every=1, lookback_frames=4, hold_frames=0), [(other,), (face, other), (face, other)]
    )
    assert covered[0][0] == other
    assert len(covered[0]) == 2
    assert _coverage(face.box, covered[0]) == 1.0
    assert covered[1] == (face, other)
    assert covered[2] == (face, other)


def test_stats_count_what_was_added() -> None:
    face = Face(BBox(100, 100, 150, 150), 0.9)
    cover = TemporalCover(TrackingSpec(detect_every=1, lookback_frames=3, hold_frames=2), width=WIDTH, height=HEIGHT)
    for faces in [(), (), (face,), (face,), (), (face,), (), (), (), ()]:
        cover.push(faces)
    cover.flush()
    stats = cover.stats
    assert stats.as_dict() == {
        "frames": 10,
        "frames_with_detections": 3,
        # frames 0-1 backfilled, 2-3 and 5 detected, 4 held, 6-7 held, 8-9 after the hold
        "frames_covered": 8,
        "held_boxes": 3,
        "backfilled_boxes": 2,
        "interpolated_boxes": 0,
        "tracks": 1,
    }


def test_interpolation_fills_a_gap_the_prediction_got_wrong() -> None:
    # The face slows from 20 to 6 px/frame while missed (frames 4-6): the prediction runs ahead of it.
    xs = [100 + 20 * min(i, 3) + 6 * max(i - 3, 0) for i in range(10)]
    boxes = [BBox(x, 100, x + 80, 180) for x in xs]
    detections = [(Face(b, 0.9),) if i < 4 or i >= 7 else () for i, b in enumerate(boxes)]
    gap = range(4, 7)
    held_only = _run(TrackingSpec(detect_every=1, lookback_frames=0), detections)
    assert min(_coverage(boxes[i], held_only[i]) for i in gap) < 0.7
    cover = TemporalCover(TrackingSpec(detect_every=1, lookback_frames=8), width=WIDTH, height=HEIGHT)
    covered = [faces for pushed in detections for _, faces in cover.push(pushed)] + [f for _, f in cover.flush()]
    assert [_coverage(box, faces) for box, faces in zip(boxes, covered, strict=True)] == [1.0] * 10
    assert (cover.stats.held_boxes, cover.stats.interpolated_boxes, cover.stats.tracks) == (3, 3, 1)


@pytest.mark.parametrize(
    ("iou", "expected"),
    [
        (np.zeros((0, 0)), []),
        (np.zeros((2, 0)), []),
        (np.zeros((0, 3)), []),
        (np.asarray([[0.9, 0.5], [0.8, 0.1]]), [(0, 0)]),
        (np.asarray([[0.9, 0.5], [0.8, 0.4]]), [(0, 0), (1, 1)]),
        (np.asarray([[0.5, 0.9], [0.8, 0.1]]), [(0, 1), (1, 0)]),
        (np.asarray([[0.2, 0.1]]), []),
        (np.asarray([[0.5, 0.5], [0.5, 0.5]]), [(0, 0), (1, 1)]),
        (np.asarray([[np.nan, 0.4], [0.5, np.nan]]), [(1, 0), (0, 1)]),
    ],
)
def test_match_greedy_table(iou: np.ndarray, expected: list[tuple[int, int]]) -> None:
    assert match_greedy(iou, min_score=0.3) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"match_iou": 0.0}, "match_iou"),
        ({"match_iou": 1.5}, "match_iou"),
        ({"match_iou": float("nan")}, "match_iou"),
        ({"match_distance_boxes": -1.0}, "match_distance_boxes"),
        ({"hold_frames": -1}, "hold_frames"),
        ({"hold_frames": 2.5}, "hold_frames"),
        ({"lookback_frames": -1}, "lookback_frames"),
        ({"detect_every": 0}, "detect_every"),
        ({"detect_every": True}, "detect_every"),
        ({"light_passes": 1}, "light_passes"),
        ({"growth_per_frame": -0.1}, "growth_per_frame"),
        ({"growth_per_frame": float("inf")}, "growth_per_frame"),
        ({"velocity_damping": 1.2}, "velocity_damping"),
        ({"velocity_damping": -0.1}, "velocity_damping"),
    ],
)
def test_spec_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackingSpec(**kwargs)  # type: ignore[arg-type]


def test_default_detects_every_third_frame_with_light_passes_and_keeps_its_invariants() -> None:
    spec = TrackingSpec()
    assert (spec.detect_every, spec.light_passes) == (3, True)
    # The frames between two detections can be interpolated, and a face missed by one full detection is
    # still held until the next one and beyond.
    assert spec.lookback_frames >= spec.detect_every - 1
    assert spec.hold_span_frames == (spec.hold_frames + 1) * spec.detect_every - 1 >= 2 * spec.detect_every


def test_spec_round_trips_through_as_dict() -> None:
    spec = TrackingSpec(detect_every=2, hold_frames=3, light_passes=True)
    assert TrackingSpec(**spec.as_dict()) == spec  # type: ignore[arg-type]


def test_frame_size_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 1x1"):
        TemporalCover(TrackingSpec(), width=0, height=10)


def test_module_examples() -> None:
    assert doctest.testmod(tracking).failed == 0


def test_degenerate_and_outside_detections_pass_through_without_carried_slivers() -> None:
    rng = np.random.default_rng(3)
    degenerate = [
        Face(BBox(50, 50, 50, 50), 0.5),  # a point
        Face(BBox(50, 50, 50.5, 90), 0.5),  # under 1 px wide
        Face(BBox(-100, -100, -10, -10), 0.5),  # entirely outside
        Face(BBox(WIDTH + 5, 10, WIDTH + 60, 70), 0.5),
    ]
    detections: list[tuple[Face, ...] | None] = []
    for i in range(40):
        picked = [degenerate[j] for j in range(4) if rng.random() < 0.5]
        detections.append(None if i % 5 == 4 else tuple(picked))
    covered = _run(TrackingSpec(), detections)
    assert len(covered) == 40
    for given, faces in zip(detections, covered, strict=True):
        given = given or ()
        assert faces[: len(given)] == given
        for face in faces[len(given) :]:
            assert 0 <= face.box.x1 <= face.box.x2 <= WIDTH
            assert 0 <= face.box.y1 <= face.box.y2 <= HEIGHT
            assert face.box.width >= 1 and face.box.height >= 1


def test_every_face_of_a_final_frame_names_its_track() -> None:
    """Two faces moving apart: each keeps its track id on every frame, detected or carried over a missed frame."""
    spec = TrackingSpec(lookback_frames=2, hold_frames=2, detect_every=1, light_passes=False)
    cover = TemporalCover(spec, width=400, height=200)
    left = [Face(BBox(10.0 + 4 * i, 50.0, 50.0 + 4 * i, 100.0), 0.9) for i in range(6)]
    right = [Face(BBox(300.0 - 4 * i, 50.0, 340.0 - 4 * i, 100.0), 0.8) for i in range(6)]
    frames = []
    for i in range(6):
        faces = (left[i],) if i == 3 else (left[i], right[i])  # the right face is missed on frame 3
        frames.extend(cover.push_tracked(faces))
    frames.extend(cover.flush_tracked())
    assert [frame.index for frame in frames] == list(range(6))
    for frame in frames:
        assert len(frame.track_ids) == len(frame.faces) == len(frame.is_detected)
        assert sorted(frame.track_ids) == [0, 1]
    missed = frames[3]
    assert missed.is_detected == (True, False)  # the right face carried by its track (interpolated)
    by_track = {track: face for track, face in zip(missed.track_ids, missed.faces, strict=True)}
    assert by_track[1].box.x1 > 200 and by_track[0].box.x1 < 100
    # ``push`` gives the same frames and faces, without the tracks.
    plain = TemporalCover(spec, width=400, height=200)
    untracked = []
    for i in range(6):
        untracked.extend(plain.push((left[i],) if i == 3 else (left[i], right[i])))
    untracked.extend(plain.flush())
    assert untracked == [(frame.index, frame.faces) for frame in frames]
