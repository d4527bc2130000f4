"""Verification: how well efface finds and covers faces on an annotated sample."""

from efface.verify.annotations import (
    AnnotatedFace,
    AnnotatedImage,
    AnnotationFormat,
    WiderSubset,
    read_annotations,
)
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
