"""Measures detection and anonymization coverage on an annotated sample with exactly the detector and
anonymizer that ``efface anonymize`` builds from the same settings. Nothing is written to the images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from efface.detection.base import CandidateDetector
from efface.detection.postprocess import check_image
from efface.errors import UnreadableFileError
from efface.media.images import decode_image
from efface.pipeline.core import Policy
from efface.verify.annotations import AnnotatedImage
from efface.verify.metrics import CoverageAccumulator, CoverageReport

__all__ = ["CoverageRun", "measure_coverage"]


@dataclass(frozen=True, slots=True)
class CoverageRun:
    """A coverage report and what it cost.

    Attributes:
        report: the figures.
        detection_s: time spent detecting, summed over the images.
        total_s: wall time including decoding and scoring.
    """

    report: CoverageReport
    detection_s: float
    total_s: float

    @property
    def images_per_s(self) -> float:
        return self.report.images / self.total_s if self.total_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            **self.report.as_dict(),
            "detection_s_per_image": self.detection_s / max(self.report.images, 1),
            "images_per_s": self.images_per_s,
        }


def measure_coverage(
    images: Sequence[AnnotatedImage],
    *,
    detector: CandidateDetector,
    policy: Policy,
    on_image: Callable[[AnnotatedImage], None] | None = None,
) -> CoverageRun:
    """Runs the detector on every annotated image and scores it at the detector's operating threshold.

    Args:
        images: the annotated sample.
        detector: the detector ``anonymize`` would use (``models.detector(policy.detection)``); it also reports
            what scores below its threshold, for the precision/recall curve.
        policy: the codec and anonymizer ``anonymize`` would use.
        on_image: called after each image (progress).

    Raises:
        InputError: an image cannot be read or decoded.
    """
    score_threshold = detector.score_threshold
    accumulator = CoverageAccumulator(score_threshold)
    detection_s = 0.0
    t0 = time.perf_counter()
    for image in images:
        try:
            content = image.path.read_bytes()
        except OSError as exc:
            raise UnreadableFileError(f"cannot read: {exc.strerror or exc}", path=image.path) from exc
        decoded = decode_image(content, path=image.path, options=policy.codec)
        pixels = decoded.pixels
        check_image(pixels)
        t_detect = time.perf_counter()
        every = detector.detect_all(pixels)
        detection_s += time.perf_counter() - t_detect
        operating = tuple(face for face in every if face.score >= score_threshold)
        mask = policy.anonymizer.region_mask(pixels.shape[0], pixels.shape[1], operating)
        accumulator.add(image, every, mask)
        if on_image is not None:
            on_image(image)
    return CoverageRun(report=accumulator.report(), detection_s=detection_s, total_s=time.perf_counter() - t0)
