from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from efface.records import BBox, Face
from efface.verify import (
    AnnotatedFace,
    AnnotatedImage,
    CoverageAccumulator,
    CoverageReport,
    CoverageTally,
    FoundTally,
    HeightBin,
    box_overlaps,
    read_annotations,
    voc_ap,
    wider_ap,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WIDER_DEV = DATA / "wider-dev"


def _image(*boxes: tuple[float, float, float, float], ignored: tuple[int, ...] = ()) -> AnnotatedImage:
    faces = tuple(AnnotatedFace(BBox(*box), is_ignored=i in ignored) for i, box in enumerate(boxes))
    return AnnotatedImage(Path("img.jpg"), faces)


def _det(box: tuple[float, float, float, float], score: float) -> Face:
    return Face(BBox(*box), score)


def _report(
    images: list[AnnotatedImage],
    detections: list[tuple[Face, ...]],
    *,
    threshold: float = 0.5,
    masks: list[np.ndarray | None] | None = None,
) -> CoverageReport:
    accumulator = CoverageAccumulator(threshold)
    for index, (image, faces) in enumerate(zip(images, detections, strict=True)):
        accumulator.add(image, faces, None if masks is None else masks[index])
    return accumulator.report()


A = (0.0, 0.0, 30.0, 30.0)
B = (100.0, 0.0, 130.0, 30.0)
C = (200.0, 0.0, 230.0, 30.0)


# --- pure functions --------------------------------------------------------------------------------------------


def test_box_overlaps_continuous_and_pixel_inclusive() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    query = np.array([[0, 0, 10, 10]], dtype=float)
    np.testing.assert_allclose(box_overlaps(boxes, query)[:, 0], [1.0, 50 / 150, 0.0])
    # +1 convention: sides are 11 px; the overlap of the shifted box is 6 x 11.
    np.testing.assert_allclose(box_overlaps(boxes, query, is_pixel_inclusive=True)[:, 0], [1.0, 66 / 176, 0.0])
    assert box_overlaps(np.zeros((0, 4)), query).shape == (0, 1)
    assert box_overlaps(boxes, np.zeros((0, 4))).shape == (3, 0)
    # Two empty (zero-area) boxes: no union, IoU 0 rather than a division by zero.
    assert box_overlaps(np.array([[1, 1, 1, 1.0]]), np.array([[1, 1, 1, 1.0]]))[0, 0] == 0.0


@pytest.mark.parametrize(
    ("recall", "precision", "expected"),
    [
        ([1.0], [1.0], 1.0),
        ([0.5, 1.0], [1.0, 0.5], 0.75),
        # The envelope: precision at recall 0.5 is lifted to the later 0.8.
        ([0.5, 0.5, 1.0], [0.4, 0.6, 0.8], 0.8),
        ([0.0, 0.0], [0.0, 0.0], 0.0),
        ([], [], 0.0),
    ],
)
def test_voc_ap(recall: list[float], precision: list[float], expected: float) -> None:
    assert voc_ap(np.array(recall), np.array(precision)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("height_px", "expected"),
    [
        (0.0, {HeightBin.ALL, HeightBin.UNDER_20}),
        (19.9, {HeightBin.ALL, HeightBin.UNDER_20}),
        (20.0, {HeightBin.ALL, HeightBin.FROM_20_TO_50, HeightBin.AT_LEAST_20}),
        (49.9, {HeightBin.ALL, HeightBin.FROM_20_TO_50, HeightBin.AT_LEAST_20}),
        (50.0, {HeightBin.ALL, HeightBin.AT_LEAST_20, HeightBin.AT_LEAST_50}),
        (400.0, {HeightBin.ALL, HeightBin.AT_LEAST_20, HeightBin.AT_LEAST_50}),
    ],
)
def test_height_bins(height_px: float, expected: set[HeightBin]) -> None:
    assert set(HeightBin.of(height_px)) == expected


def test_tallies_validate() -> None:
    assert FoundTally(1, 2).share == 0.5
    assert FoundTally().share is None
    with pytest.raises(ValueError, match="found <= total"):
        FoundTally(3, 2)
    assert CoverageTally(1, 2, 1.5).mean_fraction == 0.75
    with pytest.raises(ValueError, match="covered <= total"):
        CoverageTally(3, 2, 1.0)
    with pytest.raises(ValueError, match="fraction_sum"):
        CoverageTally(1, 2, 2.5)


# --- AP --------------------------------------------------------------------------------------------------------


def test_perfect_detector() -> None:
    images = [_image(A, B), _image(C)]
    detections = [(_det(A, 0.9), _det(B, 0.8)), (_det(C, 0.7),)]
    assert wider_ap(images, detections) == pytest.approx(1.0)
    report = _report(images, detections)
    assert report.ap == pytest.approx(1.0)
    assert report.recall == 1.0
    assert report.false_positives == 0


def test_equal_scores_do_not_break_normalisation() -> None:
    # Official min-max normalisation divides by zero here; every prediction is put at the top instead.
    assert wider_ap([_image(A, B)], [(_det(A, 1.0), _det(B, 1.0))]) == pytest.approx(1.0)
    assert wider_ap([_image(A)], [(_det(A, 0.3),)]) == pytest.approx(1.0)


def test_detection_on_ignored_face_is_neither_hit_nor_false_positive() -> None:
    # Face B is ignored and its detection scores highest: were it a false positive, the first point of the curve
    # would have precision 0 and AP would be 0.5.
    images = [_image(A, B, ignored=(1,))]
    detections = [(_det(B, 0.9), _det(A, 0.8))]
    assert wider_ap(images, detections) == pytest.approx(1.0)
    report = _report(images, detections)
    assert (report.faces, report.ignored_faces) == (1, 1)
    assert report.found_by_height[HeightBin.ALL] == FoundTally(1, 1)
    assert (report.detections, report.false_positives) == (2, 0)


def test_duplicate_detection_is_a_false_positive_for_ap() -> None:
    # Normalised scores 1, 0.5, 0: (P, R) = (1, 0.5), then (0.5, 0.5) with the duplicate, then (2/3, 1).
    images = [_image(A, B)]
    detections = [(_det(A, 0.9), _det((1, 0, 31, 30), 0.8), _det(B, 0.7))]
    assert wider_ap(images, detections) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    # A duplicate overlaps a face, so it is no false positive at the operating threshold.
    assert _report(images, detections).false_positives == 0


def test_false_positive_ranked_first_halves_ap() -> None:
    images = [_image(A)]
    detections = [(_det(C, 0.9), _det(A, 0.5))]
    assert wider_ap(images, detections) == pytest.approx(0.5)


def test_predictions_on_images_without_faces_do_not_count_for_ap() -> None:
    # The official protocol skips images without annotated faces; false positives per image still see them.
    images = [_image(A), _image()]
    detections = [(_det(A, 0.8),), (_det(C, 0.95),)]
    report = _report(images, detections)
    assert report.ap == pytest.approx(1.0)
    assert (report.false_positives, report.fp_per_image) == (1, 0.5)


def test_no_detections_at_all() -> None:
    images = [_image(A, B), _image()]
    assert wider_ap(images, [(), ()]) == 0.0
    report = _report(images, [(), ()])
    assert (report.ap, report.recall, report.detections, report.fp_per_image) == (0.0, 0.0, 0, 0.0)


def test_ap_and_recall_use_the_official_pixel_inclusive_overlap() -> None:
    face, detection = (0, 0, 5, 5), (1, 1, 6, 6)
    # Continuous IoU 16/34 = 0.47, official +1 IoU 25/47 = 0.53.
    assert BBox(*face).iou(BBox(*detection)) < 0.5
    images, detections = [_image(face)], [(_det(detection, 0.9),)]
    report = _report(images, detections)
    assert report.ap == pytest.approx(1.0)
    assert report.recall == 1.0
    assert report.false_positives == 0


def test_wider_ap_arguments() -> None:
    with pytest.raises(ValueError, match="one detection tuple per image"):
        wider_ap([_image(A)], [])
    with pytest.raises(ValueError, match="AP is undefined"):
        wider_ap([_image(A, ignored=(0,)), _image()], [(), ()])


# --- operating threshold -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "expected_found", "expected_detections"),
    [(0.0, 2, 3), (0.4, 2, 3), (0.41, 1, 2), (0.6, 1, 2), (0.61, 0, 1), (0.9, 0, 1), (0.91, 0, 0)],
)
def test_threshold_cuts(threshold: float, expected_found: int, expected_detections: int) -> None:
    images = [_image(A, B)]
    detections = [(_det(A, 0.6), _det(B, 0.4), _det(C, 0.9))]
    report = _report(images, detections, threshold=threshold)
    assert report.found_by_height[HeightBin.ALL] == FoundTally(expected_found, 2)
    assert report.detections == expected_detections
    assert report.false_positives == (1 if threshold <= 0.9 else 0)


def test_recall_by_height_bin_edges() -> None:
    faces = [(0, 0, 10, 19.9), (20, 0, 30, 20), (40, 0, 60, 50), (80, 0, 90, 49.9), (100, 0, 110, 10)]
    images = [_image(*faces)]
    # Every face but the last is found.
    detections = [tuple(_det(box, 0.9) for box in faces[:-1])]
    report = _report(images, detections)
    assert {b.value: (t.found, t.total) for b, t in report.found_by_height.items()} == {
        "all": (4, 5),
        "<20": (1, 2),
        "20-50": (2, 2),
        ">=20": (3, 3),
        ">=50": (1, 1),
    }
    assert report.recall == pytest.approx(0.8)


@pytest.mark.parametrize(("width", "is_false_positive"), [(29.0, True), (29.2, True), (29.5, False), (31.0, False)])
def test_false_positive_iou_edge(width: float, is_false_positive: bool) -> None:
    # With the +1 convention, IoU of a (width x 100) box at the corner of a 100 x 100 face is (width + 1) / 101.
    images = [_image((0, 0, 100, 100))]
    report = _report(images, [(_det((0, 0, width, 100), 0.9),)])
    assert report.false_positives == int(is_false_positive)
    assert report.recall == 0.0


def test_false_positive_counts_ignored_faces_as_faces() -> None:
    report = _report([_image(A, ignored=(0,))], [(_det((0, 0, 30, 10), 0.9),)])  # IoU 1/3 with the ignored face
    assert report.false_positives == 0
    assert report.faces == 0
    assert report.recall is None


def test_empty_images_and_empty_report() -> None:
    report = _report([_image(), _image()], [(), ()])
    assert (report.images, report.faces, report.ap, report.recall, report.fp_per_image) == (2, 0, None, None, 0.0)
    empty = CoverageAccumulator(0.5).report()
    assert (empty.images, empty.ap, empty.fp_per_image, empty.covered_share) == (0, None, None, None)
    json.dumps(empty.as_dict(), allow_nan=False)


@pytest.mark.parametrize("threshold", [-0.1, 1.1, float("nan")])
def test_bad_threshold(threshold: float) -> None:
    with pytest.raises(ValueError, match="score_threshold"):
        CoverageAccumulator(threshold)


# --- coverage --------------------------------------------------------------------------------------------------


def _mask_covering(pixels: int, *, shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    """A mask with the first ``pixels`` pixels (row-major) of the 10 x 10 box at the origin set."""
    mask = np.zeros(shape, dtype=bool)
    box = np.zeros((10, 10), dtype=bool)
    box.flat[:pixels] = True
    mask[:10, :10] = box
    return mask


@pytest.mark.parametrize(("pixels", "is_covered"), [(69, False), (70, True), (71, True), (100, True), (0, False)])
def test_coverage_threshold(pixels: int, is_covered: bool) -> None:
    images = [_image((0, 0, 10, 10))]
    report = _report(images, [()], masks=[_mask_covering(pixels)])
    tally = report.covered_by_height[HeightBin.ALL]
    assert (tally.covered, tally.total) == (int(is_covered), 1)
    assert report.mean_covered_fraction == pytest.approx(pixels / 100)
    assert report.covered_by_height[HeightBin.UNDER_20] == tally
    assert report.covered_by_height[HeightBin.AT_LEAST_20].total == 0


def test_coverage_over_several_faces_clipping_and_ignored() -> None:
    mask = np.zeros((40, 40), dtype=bool)
    mask[:, :5] = True  # the visible half of the first face
    mask[10:30, 20:40] = True  # the second face lies fully inside
    faces = [
        (-5, 0, 5, 10),  # half outside the frame: measured on its visible 5 x 10 pixels -> 1.0
        (20, 10, 40, 30),  # 20 px high, inside -> 1.0
        (100, 100, 110, 110),  # fully outside the frame: not measured
        (10, 0, 20, 10),  # not covered -> 0.0
        (20, 10, 30, 20),  # ignored: not measured
    ]
    report = _report([_image(*faces, ignored=(4,))], [()], masks=[mask])
    assert report.coverage_images == 1
    assert report.covered_by_height[HeightBin.ALL] == CoverageTally(2, 3, 2.0)
    assert report.covered_by_height[HeightBin.FROM_20_TO_50] == CoverageTally(1, 1, 1.0)
    assert report.covered_share == pytest.approx(2 / 3)
    # Recall still counts every non-ignored face, the one outside the frame included.
    assert report.found_by_height[HeightBin.ALL] == FoundTally(0, 4)


def test_coverage_only_over_images_with_a_mask() -> None:
    images = [_image((0, 0, 10, 10)), _image((0, 0, 10, 10))]
    report = _report(images, [(), ()], masks=[_mask_covering(100), None])
    assert report.coverage_images == 1
    assert report.covered_by_height[HeightBin.ALL] == CoverageTally(1, 1, 1.0)


def test_coverage_with_the_anonymizer_region() -> None:
    from efface.records import MaskShape, TransformSpec
    from efface.transforms import Anonymizer

    face_box = (40.0, 40.0, 60.0, 64.0)
    detections = (_det(face_box, 0.9),)
    image = _image(face_box)
    for shape, box_scale in ((MaskShape.RECTANGLE, 1.0), (MaskShape.ELLIPSE, 1.3)):
        anonymizer = Anonymizer(TransformSpec(mask_shape=shape, box_scale=box_scale))
        mask = anonymizer.region_mask(100, 100, detections)
        report = _report([image], [detections], masks=[mask])
        assert report.covered_share == 1.0
    # An ellipse inscribed in the box itself leaves the corners out: pi / 4 of the box, still above 0.7.
    anonymizer = Anonymizer(TransformSpec(mask_shape=MaskShape.ELLIPSE, box_scale=1.0))
    report = _report([image], [detections], masks=[anonymizer.region_mask(100, 100, detections)])
    assert report.mean_covered_fraction == pytest.approx(np.pi / 4, abs=0.03)
    assert report.covered_share == 1.0


@pytest.mark.parametrize("mask", [np.zeros((5, 5), dtype=np.uint8), np.zeros((5, 5, 3), dtype=bool)])
def test_bad_mask(mask: np.ndarray) -> None:
    with pytest.raises(ValueError, match="region_mask must be bool"):
        CoverageAccumulator(0.5).add(_image(A), (), mask)


# --- report ----------------------------------------------------------------------------------------------------


def test_report_as_dict_is_json_ready() -> None:
    images = [_image(A, B, ignored=(1,)), _image()]
    detections = [(_det(A, 0.9), _det(C, 0.6)), (_det(C, 0.2),)]
    report = _report(images, detections, masks=[_mask_covering(80, shape=(40, 300)), None])
    data = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    assert data["images"] == 2
    assert data["faces"] == 1
    assert data["ignored_faces"] == 1
    assert data["recall"] == 1.0
    assert data["recall_by_height"][">=20"] == {"found": 1, "total": 1, "share": 1.0}
    assert data["detections"] == 2
    assert data["false_positives"] == 1
    assert data["fp_per_image"] == 0.5
    assert data["coverage"]["images"] == 1
    assert data["coverage"]["by_height"]["<20"] == {"covered": 0, "total": 0, "share": None, "mean_fraction": None}
    assert 0.0 < data["ap"] <= 1.0


def test_report_validates_itself() -> None:
    found = {b: FoundTally() for b in HeightBin}
    covered = {b: CoverageTally() for b in HeightBin}
    fields = {
        "score_threshold": 0.5,
        "images": 1,
        "faces": 0,
        "ignored_faces": 0,
        "ap": None,
        "detections": 0,
        "false_positives": 0,
        "found_by_height": found,
        "coverage_images": 0,
        "covered_by_height": covered,
    }
    CoverageReport(**fields)  # type: ignore[arg-type]
    for change, message in (
        ({"false_positives": 1}, "exceed detections"),
        ({"ap": 1.5}, "ap must be"),
        ({"coverage_images": 2}, "coverage_images"),
        ({"found_by_height": {HeightBin.ALL: FoundTally()}}, "one entry per HeightBin"),
        ({"images": -1}, "must not be negative"),
    ):
        with pytest.raises(ValueError, match=message):
            CoverageReport(**{**fields, **change})  # type: ignore[arg-type]


# --- real data -------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not WIDER_DEV.is_dir(), reason=f"evaluation data folder {WIDER_DEV} is absent")
def test_wider_dev_hard_ground_truth_as_predictions() -> None:
    images = read_annotations(
        WIDER_DEV / "wider_face_gt.txt",
        images_root=WIDER_DEV / "images",
        subset="hard",
        difficulty_file=WIDER_DEV / "difficulty.json",
    )
    assert len(images) == 198
    assert sum(len(image.faces) for image in images) == 2657
    counted = sum(len(image.counted_faces) for image in images)
    assert 0 < counted < 2657

    detections = [tuple(Face(face.box, 1.0) for face in image.faces) for image in images]
    assert wider_ap(images, detections) == pytest.approx(1.0, abs=1e-3)
    accumulator = CoverageAccumulator(0.5)
    for image, faces in zip(images, detections, strict=True):
        accumulator.add(image, faces, None)
    report = accumulator.report()
    assert report.faces == counted
    assert report.recall == 1.0
    assert report.false_positives == 0
    assert report.ap == pytest.approx(1.0, abs=1e-3)


def test_over_redaction_counts_masked_pixels_outside_every_annotated_face() -> None:
    accumulator = CoverageAccumulator(0.5)
    mask = np.zeros((20, 20), bool)
    mask[0:10, 0:10] = True  # 100 px, of which the 5x5 face box holds 25
    accumulator.add(_image((0, 0, 5, 5)), (), mask)
    report = accumulator.report()
    assert (report.redacted_px, report.redacted_outside_faces_px) == (100, 75)
    assert report.over_redaction_share == 0.75
    assert CoverageAccumulator(0.5).report().over_redaction_share is None
