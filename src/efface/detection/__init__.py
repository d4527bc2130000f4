"""Face detectors: the protocol, CenterFace, and a static fake."""

from efface.detection.base import CandidateDetector, FaceDetector
from efface.detection.static import StaticDetector, StaticModels

__all__ = ["CandidateDetector", "FaceDetector", "StaticDetector", "StaticModels"]
