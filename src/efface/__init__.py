"""efface: GDPR-grade face anonymization for photos.

Detect every face, transform it irreversibly, keep no original, audit everything.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("efface")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

from efface.errors import EffaceError
from efface.records import (
    AnonymizationResult,
    BBox,
    Face,
    MaskShape,
    Method,
    Outcome,
    TransformSpec,
    WriteMode,
)

__all__ = [
    "AnonymizationResult",
    "BBox",
    "EffaceError",
    "Face",
    "MaskShape",
    "Method",
    "Outcome",
    "TransformSpec",
    "WriteMode",
    "__version__",
]
