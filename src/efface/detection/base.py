"""The detector protocol every face detector implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from efface.arrays import ImageArray
from efface.records import Face

__all__ = ["FaceDetector"]


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
