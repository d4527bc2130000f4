"""A detector that returns faces it was given: for tests, dry runs of a pipeline and known boxes."""

from __future__ import annotations

from efface.arrays import ImageArray
from efface.detection.base import FaceDetector
from efface.detection.multiscale import MultiScaleSpec
from efface.records import Face

__all__ = ["StaticDetector", "StaticModels"]


class StaticDetector:
    """Returns the same faces for every image (the anonymizer clips them to the frame).

    Args:
        faces: the faces to return.
        name: the model name to report.
    """

    weights_sha256 = "0" * 64

    def __init__(self, faces: tuple[Face, ...] = (), *, name: str = "static") -> None:
        self.faces = tuple(faces)
        self.name = name
        self.calls = 0

    def detect(self, image: ImageArray) -> tuple[Face, ...]:
        self.calls += 1
        return self.faces


class StaticModels:
    """Models that give one fake detector for every spec: tests of the pipeline, the pool and the service.

    Args:
        detector: returned by ``detector(spec)`` whatever the spec (default: a ``StaticDetector`` of ``faces``).
        faces: the faces of the default detector.
    """

    def __init__(self, detector: FaceDetector | None = None, *, faces: tuple[Face, ...] = ()) -> None:
        self._detector: FaceDetector = detector if detector is not None else StaticDetector(faces)
        self.specs: list[MultiScaleSpec] = []

    @property
    def name(self) -> str:
        return self._detector.name

    @property
    def weights_sha256(self) -> str:
        return self._detector.weights_sha256

    def detector(self, spec: MultiScaleSpec) -> FaceDetector:
        self.specs.append(spec)
        return self._detector
