"""The detector protocol every face detector implements, and the wider one that coverage measurements need."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from efface.arrays import ImageArray
from efface.records import Face

__all__ = ["CandidateDetector", "FaceDetector", "detect_with_faint"]


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in an image.

    Attributes:
        name: a short model name recorded in the audit log, e.g. ``"centerface"``.
        weights_sha256: sha256 of the model weights (or a fixed tag for weightless fakes).
    """

    name: str
    weights_sha256: str

    def detect(self, image: ImageArray) -> tuple[Face, ...]:
        """Detects faces.

        Args:
            image: uint8 array of shape (H, W, 3), RGB.

        Returns:
            The faces found, boxes in the image's pixels, highest score first.
        """
        ...


@runtime_checkable
class CandidateDetector(FaceDetector, Protocol):
    """A detector with an operating threshold that also reports what scores below it (precision/recall curves,
    ``efface verify coverage``). ``MultiScaleDetector``, which every entry point builds, is one.
    """

    @property
    def score_threshold(self) -> float:
        """The operating threshold: ``detect`` returns exactly the part of ``detect_all`` scoring at least this."""
        ...

    def detect_all(self, image: ImageArray) -> tuple[Face, ...]:
        """Every detection down to the candidates' own floor, highest score first.

        Args:
            image: uint8 array of shape (H, W, 3), RGB.
        """
        ...


def detect_with_faint(detector: FaceDetector, image: ImageArray) -> tuple[tuple[Face, ...], tuple[Face, ...]]:
    """The faces ``detector.detect`` finds, and the faint candidates below its operating threshold (from the same
    single detection; none for a detector that reports nothing below it).

    Args:
        detector: the detector.
        image: uint8 array of shape (H, W, 3), RGB.

    Returns:
        The faces (what is anonymized) and the faint candidates (what a reviewer may want to see), best first.
    """
    if not isinstance(detector, CandidateDetector):
        return detector.detect(image), ()
    threshold = detector.score_threshold
    found = detector.detect_all(image)
    return (
        tuple(face for face in found if face.score >= threshold),
        tuple(face for face in found if face.score < threshold),
    )
