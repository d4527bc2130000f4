"""Detectors built from detectors: fusion arithmetic, focus tiling, presets, and the real model on a crowd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efface.detection.base import CandidateDetector
from efface.detection.centerface import CenterFaceDetector
from efface.detection.multiscale import FocusSpec, MultiScaleDetector, MultiScaleSpec, select_focus_cells
from efface.detection.postprocess import RawDetections, fuse_passes, pairwise_iou
from efface.detection.presets import CANDIDATE_SCORE, preset_spec
from efface.records import Preset

SHARED = Path(__file__).resolve().parents[3] / "shared"


def _raw(boxes: list[list[float]], scores: list[float]) -> RawDetections:
    n = len(scores)
    marks = np.zeros((n, 5, 2), np.float32)
    return RawDetections(np.asarray(boxes, np.float32).reshape(n, 4), np.asarray(scores, np.float32), marks)


def test_pairwise_iou_table() -> None:
    a = np.asarray([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.asarray([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(pairwise_iou(a, b), [[1, 1 / 3, 0], [0, 0, 0]], atol=1e-6)


def test_fusion_averages_boxes_of_different_passes_by_score() -> None:
    fused = fuse_passes([_raw([[0, 0, 10, 10]], [0.9]), _raw([[2, 0, 12, 10]], [0.3])], match_iou=0.5)
    assert len(fused) == 1
    np.testing.assert_allclose(fused.boxes_xyxy[0], [0.5, 0, 10.5, 10], atol=1e-5)
    assert fused.scores[0] == pytest.approx(0.9)


def test_fusion_keeps_separate_faces_and_one_member_per_pass() -> None:
    first = _raw([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.4])
    fused = fuse_passes([first, _raw([[0, 0, 10, 10]], [0.9])], match_iou=0.5)
    # The 0.8 box of the same pass joins the cluster but is not averaged in: one member per pass.
    assert len(fused) == 2
    np.testing.assert_allclose(fused.boxes_xyxy[0], [0, 0, 10, 10], atol=1e-5)
    np.testing.assert_allclose(fused.scores, [0.9, 0.4])


@pytest.mark.parametrize("parts", [[], [RawDetections.empty()], [RawDetections.empty(), RawDetections.empty()]])
def test_fusion_of_nothing_is_empty(parts: list[RawDetections]) -> None:
    assert len(fuse_passes(parts)) == 0


def test_focus_cells_pick_small_faint_candidates_once_each() -> None:
    focus = FocusSpec(cell_px=100, candidate_score=0.1, candidate_max_height_px=40, max_cells=3)
    candidates = _raw(
        [
            [10, 10, 30, 30],  # cell (0, 0)
            [15, 12, 35, 32],  # same cell again
            [250, 150, 270, 170],  # cell (2, 1)
            [500, 10, 600, 110],  # too tall
            [700, 700, 710, 710],  # too faint
            [990, 590, 1010, 610],  # centre outside the frame: clamped to the last cell
        ],
        [0.5, 0.4, 0.2, 0.9, 0.05, 0.3],
    )
    cells = select_focus_cells(candidates, focus=focus, width_px=1000, height_px=600)
    assert cells == [(0, 0), (9, 5), (2, 1)]


@pytest.mark.parametrize(
    "kwargs",
    [{"scales": ()}, {"scales": (0.0,)}, {"scales": (0.5,), "focus": FocusSpec()}, {"score_threshold": 1.0}],
)
def test_spec_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        MultiScaleSpec(**kwargs)


def test_presets_differ_and_threshold_override_keeps_the_passes() -> None:
    specs = {preset: preset_spec(preset) for preset in Preset}
    assert specs[Preset.BALANCED].focus is not None
    assert len(specs[Preset.THOROUGH].scales) > len(specs[Preset.FAST].scales)
    override = preset_spec(Preset.BALANCED, score_threshold=0.6)
    assert override.score_threshold == 0.6 and override.focus == specs[Preset.BALANCED].focus
    assert override.large_face_score == specs[Preset.BALANCED].large_face_score
    # a user's threshold below the large-face score applies to every size
    assert preset_spec(Preset.BALANCED, score_threshold=0.1).large_face_score is None


def test_the_recall_preset_takes_every_candidate_of_the_balanced_passes() -> None:
    recall, balanced = preset_spec(Preset.RECALL), preset_spec(Preset.BALANCED)
    assert (recall.scales, recall.flip_scales, recall.focus) == (balanced.scales, balanced.flip_scales, balanced.focus)
    assert recall.score_threshold == CANDIDATE_SCORE and recall.large_face_score is None


@pytest.fixture(scope="module")
def base() -> CenterFaceDetector:
    return CenterFaceDetector(score_threshold=CANDIDATE_SCORE)


def _crowd(astronaut: np.ndarray) -> np.ndarray:
    """A synthetic crowd: 24 copies of the portrait shrunk so the faces are 9 to 14 px tall."""
    canvas = np.full((480, 960, 3), 150, np.uint8)
    rng = np.random.default_rng(3)
    for row in range(3):
        for col in range(8):
            side = int(rng.integers(38, 56))
            tile = np.asarray(Image.fromarray(astronaut).resize((side, side), Image.Resampling.LANCZOS))
            y, x = 40 + row * 150 + int(rng.integers(0, 40)), 20 + col * 115 + int(rng.integers(0, 30))
            canvas[y : y + side, x : x + side] = tile
    return canvas


@pytest.mark.slow
def test_balanced_finds_more_small_faces_than_one_scale(base: CenterFaceDetector, astronaut: np.ndarray) -> None:
    crowd = _crowd(astronaut)
    single = MultiScaleDetector(base, MultiScaleSpec(scales=(1.0,), score_threshold=0.3)).detect(crowd)
    balanced = MultiScaleDetector(base, preset_spec(Preset.BALANCED)).detect(crowd)
    assert len(balanced) >= len(single) + 6, (len(single), len(balanced))
    assert len(balanced) <= 24


@pytest.mark.slow
def test_detect_is_detect_all_above_the_threshold(base: CenterFaceDetector, astronaut: np.ndarray) -> None:
    detector = MultiScaleDetector(base, preset_spec(Preset.BALANCED))
    crowd = _crowd(astronaut)
    every = detector.detect_all(crowd)
    assert detector.detect(crowd) == tuple(f for f in every if f.score >= detector.spec.score_threshold)
    assert len(every) > len(detector.detect(crowd))
    assert isinstance(detector, CandidateDetector) and detector.score_threshold == detector.spec.score_threshold


@pytest.mark.slow
def test_mirrored_pass_maps_back(base: CenterFaceDetector, astronaut: np.ndarray) -> None:
    mirrored_only = MultiScaleDetector(base, MultiScaleSpec(scales=(1.0,), flip_scales=(1.0,), score_threshold=0.5))
    (face,) = mirrored_only.detect(astronaut)
    (plain,) = CenterFaceDetector().detect(astronaut)
    assert face.box.iou(plain.box) > 0.85
    left_eye, right_eye = face.landmarks_xy[:2]
    assert left_eye[0] < right_eye[0]


@pytest.mark.slow
def test_real_crowd_photo_multiscale_beats_single_scale(base: CenterFaceDetector) -> None:
    folder = SHARED / "data" / "wider-dev" / "images" / "0--Parade"
    if not folder.is_dir():
        pytest.skip(f"evaluation data not present: {folder}")
    image = np.asarray(Image.open(folder / "0_Parade_Parade_0_102.jpg").convert("RGB"))
    single = MultiScaleDetector(base, MultiScaleSpec(scales=(1.0,), score_threshold=0.3)).detect(image)
    balanced = MultiScaleDetector(base, preset_spec(Preset.BALANCED)).detect(image)
    assert len(balanced) > len(single)
