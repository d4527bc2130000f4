"""Verification: how well efface finds and covers faces on an annotated sample."""

from typing import TYPE_CHECKING

from efface._lazy import lazy_exports
from efface.verify.annotations import (
    AnnotatedFace,
    AnnotatedImage,
    AnnotationFormat,
    WiderSubset,
    read_annotations,
)

if TYPE_CHECKING:
    from efface.verify.metrics import (
        COVERED_FRACTION,
        FALSE_POSITIVE_IOU,
        MATCH_IOU,
        PR_THRESHOLDS,
        CoverageAccumulator,
        CoverageReport,
        CoverageTally,
        FoundTally,
        HeightBin,
        box_overlaps,
        voc_ap,
        wider_ap,
    )

__all__ = [
    "COVERED_FRACTION",
    "FALSE_POSITIVE_IOU",
    "MATCH_IOU",
    "PR_THRESHOLDS",
    "AnnotatedFace",
    "AnnotatedImage",
    "AnnotationFormat",
    "CoverageAccumulator",
    "CoverageReport",
    "CoverageTally",
    "FoundTally",
    "HeightBin",
    "WiderSubset",
    "box_overlaps",
    "read_annotations",
    "voc_ap",
    "wider_ap",
]

# Imported on first use: the command line imports ``annotations`` for its options, and the metrics (NumPy
# arithmetic the photo path never runs) would come with them.
_LAZY = dict.fromkeys(
    (
        "COVERED_FRACTION",
        "FALSE_POSITIVE_IOU",
        "MATCH_IOU",
        "PR_THRESHOLDS",
        "CoverageAccumulator",
        "CoverageReport",
        "CoverageTally",
        "FoundTally",
        "HeightBin",
        "box_overlaps",
        "voc_ap",
        "wider_ap",
    ),
    "efface.verify.metrics",
)

__getattr__ = lazy_exports(__name__, _LAZY)
