"""Face detectors: the protocol, CenterFace, and a static fake."""

from efface.detection.base import CandidateDetector, FaceDetector
from efface.detection.static import StaticDetector

__all__ = ["CandidateDetector", "FaceDetector", "StaticDetector"]
