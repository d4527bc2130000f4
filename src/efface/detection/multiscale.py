"""Detectors built from detectors: one model run at several scales, mirrored, on focused tiles, or several
models together, fused into one set of faces.

Why: a single-scale CenterFace pass misses most faces under ~20 px (too few pixels for its stride-4 map)
and very large close-ups (bigger than its receptive field). A down-scaled pass finds the large ones; an
up-scaled pass finds the small ones, but costs 4x a full pass at 2x. The *focus* pass spends that cost
only where small faces can be: on tiles around the faint, small candidates of the full-resolution pass.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from efface.arrays import ImageArray
from efface.detection.postprocess import (
    RawDetections,
    above,
    check_image,
    concat,
    favour_large,
    fuse_passes,
    suppress,
    to_faces,
)
from efface.records import Face

__all__ = [
    "FocusSpec",
    "MultiScaleDetector",
    "MultiScaleSpec",
    "ScalableDetector",
    "combined_sha256",
    "select_focus_cells",
]


class ScalableDetector(Protocol):
    """A detector that can run at a chosen input scale and on batches of same-sized images."""

    name: str
    weights_sha256: str

    def detect_raw(self, image: ImageArray, *, input_scale: float) -> RawDetections: ...

    def detect_batch_raw(self, images: list[ImageArray], *, input_scale: float) -> list[RawDetections]: ...


@dataclass(frozen=True, slots=True)
class FocusSpec:
    """An up-scaled pass run only on grid cells that hold small, faint candidates.

    Attributes:
        scale: up-scaling of the focused tiles.
        cell_px: grid cell size in original pixels.
        margin_px: context added around each cell (the tile is ``cell_px + 2 * margin_px`` wide).
        candidate_score: a full-resolution detection at least this confident marks its cell ...
        candidate_max_height_px: ... when it is at most this tall.
        max_cells: at most this many cells per image (the most confident candidates first).
    """

    scale: float = 2.0
    cell_px: int = 128
    margin_px: int = 32
    candidate_score: float = 0.1
    candidate_max_height_px: float = 48.0
    max_cells: int = 64

    def __post_init__(self) -> None:
        if not self.scale > 1.0:
            raise ValueError(f"focus scale must be > 1, got {self.scale}")
        if self.cell_px < 16 or self.margin_px < 0 or self.max_cells < 1:
            raise ValueError(
                f"focus needs cell_px >= 16, margin_px >= 0, max_cells >= 1, got "
                f"{self.cell_px}, {self.margin_px}, {self.max_cells}"
            )


@dataclass(frozen=True, slots=True)
class MultiScaleSpec:
    """How a ``MultiScaleDetector`` combines passes.

    Attributes:
        scales: full-image passes, as input scale factors.
        flip_scales: additional full-image passes on the mirrored image.
        focus: the focused up-scaled pass, or None; its candidates come from the pass at scale 1.
        score_threshold: operating threshold on the fused score.
        match_iou: detections of different passes overlapping this much are one face.
        nms_iou: final suppression of overlapping fused faces.
        is_noisy_or: fuse the passes' scores as ``1 - prod(1 - s)`` rather than taking the best.
        large_face_px: boxes at least this tall count as large for ``large_face_score``.
        large_face_score: the fused score at which a large box becomes operating (its score is lifted onto
            ``score_threshold``, see ``favour_large``); None applies one threshold to every size.
    """

    scales: tuple[float, ...] = (1.0,)
    flip_scales: tuple[float, ...] = ()
    focus: FocusSpec | None = None
    score_threshold: float = 0.3
    match_iou: float = 0.5
    nms_iou: float = 0.3
    is_noisy_or: bool = False
    large_face_px: float = 48.0
    large_face_score: float | None = None

    def __post_init__(self) -> None:
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in (*self.scales, *self.flip_scales)):
            raise ValueError(f"scales must be positive and non-empty, got {self.scales} / {self.flip_scales}")
        if self.focus is not None and 1.0 not in self.scales:
            raise ValueError("a focus pass takes its candidates from the scale-1 pass; add 1.0 to scales")
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if self.large_face_score is not None and not 0.0 < self.large_face_score < 1.0:
            raise ValueError(f"large_face_score must be in (0, 1), got {self.large_face_score}")
        if not (self.large_face_px > 0 and math.isfinite(self.large_face_px)):
            raise ValueError(f"large_face_px must be positive, got {self.large_face_px}")

    def as_dict(self) -> dict[str, object]:
        return {
            "scales": list(self.scales),
            "flip_scales": list(self.flip_scales),
            "focus": None
            if self.focus is None
            else {
                "scale": self.focus.scale,
                "cell_px": self.focus.cell_px,
                "margin_px": self.focus.margin_px,
                "candidate_score": self.focus.candidate_score,
                "candidate_max_height_px": self.focus.candidate_max_height_px,
                "max_cells": self.focus.max_cells,
            },
            "score_threshold": self.score_threshold,
            "match_iou": self.match_iou,
            "nms_iou": self.nms_iou,
            "score_fusion": "noisy_or" if self.is_noisy_or else "max",
            "large_face_px": self.large_face_px,
            "large_face_score": self.large_face_score,
        }


def select_focus_cells(
    candidates: RawDetections, *, focus: FocusSpec, width_px: int, height_px: int
) -> list[tuple[int, int]]:
    """The grid cells (column, row) that hold a small, faint candidate, most confident first.

    Args:
        candidates: detections of the full-resolution pass, at any score.
        focus: the focus settings.
        width_px: image width.
        height_px: image height.
    """
    heights = candidates.boxes_xyxy[:, 3] - candidates.boxes_xyxy[:, 1]
    chosen = (candidates.scores >= focus.candidate_score) & (heights <= focus.candidate_max_height_px)
    order = np.argsort(-candidates.scores[chosen], kind="stable")
    boxes = candidates.boxes_xyxy[chosen][order]
    columns = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2 // focus.cell_px).astype(int), 0, None)
    rows = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2 // focus.cell_px).astype(int), 0, None)
    max_col, max_row = (width_px - 1) // focus.cell_px, (height_px - 1) // focus.cell_px
    cells: list[tuple[int, int]] = []
    for cell in zip(np.minimum(columns, max_col).tolist(), np.minimum(rows, max_row).tolist(), strict=True):
        if cell not in cells:
            cells.append(cell)
            if len(cells) == focus.max_cells:
                break
    return cells


class MultiScaleDetector:
    """Runs base detectors in several passes and fuses what they find.

    Args:
        base: the main detector, built with a low score threshold (it yields the candidates; the
            operating threshold is applied after fusion).
        spec: the passes and thresholds.
        extra: further detectors run once at scale 1 and fused in (e.g. a user-supplied YuNet).
    """

    def __init__(self, base: ScalableDetector, spec: MultiScaleSpec, *, extra: Sequence[ScalableDetector] = ()) -> None:
        self.base = base
        self.spec = spec
        self.extra = tuple(extra)
        self.name = "+".join((base.name, *(d.name for d in self.extra)))
        self.weights_sha256 = combined_sha256(base, self.extra)

    @property
    def score_threshold(self) -> float:
        """The operating threshold (the spec's)."""
        return self.spec.score_threshold

    def detect(self, image: ImageArray) -> tuple[Face, ...]:
        """Faces scoring at least the operating threshold, best first."""
        return to_faces(above(self.detect_all_raw(image), self.spec.score_threshold))

    def detect_all(self, image: ImageArray) -> tuple[Face, ...]:
        """Every fused detection down to the base detectors' own thresholds (for precision/recall curves).

        ``detect`` returns exactly the part of this that scores at least the operating threshold.
        """
        return to_faces(self.detect_all_raw(image))

    def detect_all_raw(self, image: ImageArray) -> RawDetections:
        check_image(image)
        height, width = image.shape[:2]
        parts: list[RawDetections] = []
        full_resolution: RawDetections | None = None
        for scale in self.spec.scales:
            found = self.base.detect_raw(image, input_scale=scale)
            parts.append(found)
            if scale == 1.0:
                full_resolution = found
        if self.spec.flip_scales:
            mirrored = np.ascontiguousarray(image[:, ::-1])
            for scale in self.spec.flip_scales:
                parts.append(_unmirror(self.base.detect_raw(mirrored, input_scale=scale), width))
        if self.spec.focus is not None and full_resolution is not None:
            parts.append(self._focus_pass(image, full_resolution, self.spec.focus))
        for detector in self.extra:
            parts.append(detector.detect_raw(image, input_scale=1.0))
        fused = fuse_passes(parts, match_iou=self.spec.match_iou, is_noisy_or=self.spec.is_noisy_or)
        fused = suppress(fused, iou_threshold=self.spec.nms_iou)
        fused = _clip(fused, width, height)
        if self.spec.large_face_score is not None:
            fused = favour_large(
                fused,
                min_height_px=self.spec.large_face_px,
                large_score=self.spec.large_face_score,
                score_threshold=self.spec.score_threshold,
            )
        return fused

    def _focus_pass(self, image: ImageArray, candidates: RawDetections, focus: FocusSpec) -> RawDetections:
        height, width = image.shape[:2]
        cells = select_focus_cells(candidates, focus=focus, width_px=width, height_px=height)
        if not cells:
            return RawDetections.empty()
        tile_px = focus.cell_px + 2 * focus.margin_px
        tiles, origins = [], []
        for column, row in cells:
            x0, y0 = column * focus.cell_px - focus.margin_px, row * focus.cell_px - focus.margin_px
            # Zero-padded where the tile passes the image's edge; only the tile is copied, never the image.
            cx0, cy0 = max(0, x0), max(0, y0)
            cx1, cy1 = min(width, x0 + tile_px), min(height, y0 + tile_px)
            tiles.append(
                np.asarray(
                    cv2.copyMakeBorder(
                        np.ascontiguousarray(image[cy0:cy1, cx0:cx1]),
                        cy0 - y0,
                        y0 + tile_px - cy1,
                        cx0 - x0,
                        x0 + tile_px - cx1,
                        cv2.BORDER_CONSTANT,
                        value=(0, 0, 0),
                    ),
                    np.uint8,
                )
            )
            origins.append((x0, y0))
        found = self.base.detect_batch_raw(tiles, input_scale=focus.scale)
        kept = []
        for (x0, y0), raw in zip(origins, found, strict=True):
            if len(raw) == 0:
                continue
            offset = np.asarray([x0, y0], np.float32)
            boxes = raw.boxes_xyxy + np.tile(offset, 2)
            # Keep what is centred in the cell (plus half the margin): tile borders cut faces in half.
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 - x0, (boxes[:, 1] + boxes[:, 3]) / 2 - y0
            lo, hi = focus.margin_px / 2, tile_px - focus.margin_px / 2
            inside = np.flatnonzero((cx >= lo) & (cx < hi) & (cy >= lo) & (cy < hi))
            kept.append(RawDetections(boxes[inside], raw.scores[inside], (raw.landmarks_xy + offset)[inside]))
        if not kept:
            return RawDetections.empty()
        return suppress(concat(kept), iou_threshold=self.spec.nms_iou)


def _unmirror(detections: RawDetections, width_px: int) -> RawDetections:
    boxes = detections.boxes_xyxy.copy()
    boxes[:, [0, 2]] = width_px - detections.boxes_xyxy[:, [2, 0]]
    landmarks = detections.landmarks_xy.copy()
    landmarks[:, :, 0] = width_px - landmarks[:, :, 0]
    # Mirroring swaps left and right: eyes (0, 1) and mouth corners (3, 4).
    landmarks = landmarks[:, [1, 0, 2, 4, 3]]
    return RawDetections(boxes, detections.scores, landmarks)


def _clip(detections: RawDetections, width_px: int, height_px: int) -> RawDetections:
    boxes = detections.boxes_xyxy.copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width_px)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height_px)
    return RawDetections(boxes, detections.scores, detections.landmarks_xy)


def combined_sha256(base: ScalableDetector, extra: Sequence[ScalableDetector]) -> str:
    """The weights hash of fused models: the base's own when it runs alone."""
    if not extra:
        return base.weights_sha256
    return hashlib.sha256("".join((base.weights_sha256, *(d.weights_sha256 for d in extra))).encode()).hexdigest()
