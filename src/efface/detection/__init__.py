"""Face detectors: the protocol, CenterFace, and a static fake."""

from efface.detection.base import FaceDetector
from efface.detection.static import StaticDetector, StaticModels

__all__ = ["FaceDetector", "StaticDetector", "StaticModels"]
