"""``measure_coverage`` with fake detectors: the operating threshold is the detector's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from efface.detection import StaticDetector
from efface.pipeline import Policy
from efface.records import BBox, Face
from efface.verify.annotations import AnnotatedFace, AnnotatedImage
from efface.verify.coverage import measure_coverage

FACE = BBox(20, 20, 60, 70)


class _Candidates(StaticDetector):
    """Finds the annotated face at a score just under the threshold and a stray box well above it."""

    score_threshold = 0.5

    def detect_all(self, image: np.ndarray) -> tuple[Face, ...]:
        return (Face(BBox(80, 80, 95, 95), 0.9), Face(FACE, 0.45))

    def detect(self, image: np.ndarray) -> tuple[Face, ...]:
        return tuple(face for face in self.detect_all(image) if face.score >= self.score_threshold)


def _sample(tmp_path: Path) -> list[AnnotatedImage]:
    path = tmp_path / "a.png"
    Image.fromarray(np.full((100, 100, 3), 128, np.uint8)).save(path)
    return [AnnotatedImage(path, (AnnotatedFace(FACE),))]


def test_coverage_is_taken_at_the_detectors_threshold(tmp_path: Path) -> None:
    seen: list[AnnotatedImage] = []
    run = measure_coverage(_sample(tmp_path), detector=_Candidates(), policy=Policy(), on_image=seen.append)
    assert run.report.score_threshold == 0.5
    assert run.report.recall == 0.0  # the face scored 0.45: a candidate, not found at the threshold
    assert run.report.fp_per_image == 1.0
    assert len(seen) == 1
