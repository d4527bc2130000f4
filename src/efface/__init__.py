"""efface: GDPR-grade face anonymization for photos and video.

Detect every face, transform it irreversibly, keep no original, audit everything.

From Python::

    import efface

    with efface.Session(method="fill", db_url="sqlite:///audit.sqlite3") as session:
        results = session.anonymize_paths("photos/", output_dir="anonymized/")
        anonymized = session.anonymize_bytes(jpeg_bytes, name="upload.jpg")

``load_models`` loads the detector once to share it between sessions with other settings. The heavy parts
(onnxruntime, SQLAlchemy) are imported on first use of these names, not by ``import efface``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from efface._lazy import lazy_exports

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
    Preset,
    TransformSpec,
    WriteMode,
)

if TYPE_CHECKING:
    from efface.api import AnonymizedContent, Session, load_models
    from efface.config import Settings, load_settings

__all__ = [
    "AnonymizationResult",
    "AnonymizedContent",
    "BBox",
    "EffaceError",
    "Face",
    "MaskShape",
    "Method",
    "Outcome",
    "Preset",
    "Session",
    "Settings",
    "TransformSpec",
    "WriteMode",
    "__version__",
    "load_models",
    "load_settings",
]

# Imported on first use: the command line's audit commands never load onnxruntime.
_LAZY = {
    "AnonymizedContent": "efface.api",
    "Session": "efface.api",
    "load_models": "efface.api",
    "Settings": "efface.config",
    "load_settings": "efface.config",
}

__getattr__ = lazy_exports(__name__, _LAZY)
