"""Pure pre- and post-processing shared by the detectors: input sizing, CenterFace decoding,
non-maximum suppression and rescaling to the original image. No model runtime is imported here; NMS runs in
OpenCV's C++ (stateless; the tests hold it to a numpy reference of the same greedy rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from efface.arrays import ImageArray
from efface.records import BBox, Face

__all__ = [
    "MAX_WORKING_PIXELS",
    "TILE_MARGIN_PX",
    "RawDetections",
    "Tile",
    "above",
    "check_image",
    "concat",
    "decode_centerface",
    "detect_tiled",
    "fuse_passes",
    "nms",
    "padded_size",
    "pairwise_iou",
    "plan_tiles",
    "suppress",
    "to_faces",
    "to_original_pixels",
]

# CenterFace predicts one cell per 4x4 input pixels.
CENTERFACE_STRIDE = 4
# The largest network input run in one piece. A pass whose input (the image after its scale) is bigger runs
# on overlapping tiles of at most this size, one after another: a pass's memory (~190 MB per MP on CenterFace)
# then stops growing with the image. 12.6 MP keeps every photo up to 4096x3072 (phones' 12 MP) in one piece.
MAX_WORKING_PIXELS = 12_600_000
# How far, in network-input pixels, each tile reaches past the part it owns: a face up to twice this size is
# whole in the tile that owns its centre. Bigger faces are the down-scaled passes' to find.
TILE_MARGIN_PX = 256


class RawDetections:
    """Detections as parallel arrays, before they become ``Face`` records.

    Attributes:
        boxes_xyxy: float32 (N, 4).
        scores: float32 (N,).
        landmarks_xy: float32 (N, 5, 2).
    """

    __slots__ = ("boxes_xyxy", "landmarks_xy", "scores")

    def __init__(
        self,
        boxes_xyxy: npt.NDArray[np.floating],
        scores: npt.NDArray[np.floating],
        landmarks_xy: npt.NDArray[np.floating],
    ) -> None:
        n = len(scores)
        if boxes_xyxy.shape != (n, 4) or landmarks_xy.shape != (n, 5, 2):
            raise ValueError(
                f"expected boxes (N, 4) and landmarks (N, 5, 2) for N={n}, "
                f"got {boxes_xyxy.shape} and {landmarks_xy.shape}"
            )
        self.boxes_xyxy: npt.NDArray[np.float32] = boxes_xyxy.astype(np.float32, copy=False)
        self.scores: npt.NDArray[np.float32] = scores.astype(np.float32, copy=False)
        self.landmarks_xy: npt.NDArray[np.float32] = landmarks_xy.astype(np.float32, copy=False)

    @classmethod
    def empty(cls) -> RawDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, indices: npt.NDArray[np.integer]) -> RawDetections:
        return RawDetections(self.boxes_xyxy[indices], self.scores[indices], self.landmarks_xy[indices])


def padded_size(height_px: int, width_px: int, *, multiple: int = 32) -> tuple[int, int]:
    """Rounds an image size up to the next multiple (the network's total stride).

    Returns:
        ``(height, width)`` of the zero-padded network input.
    """
    if height_px < 1 or width_px < 1:
        raise ValueError(f"image size must be at least 1x1, got {width_px}x{height_px}")
    return (math.ceil(height_px / multiple) * multiple, math.ceil(width_px / multiple) * multiple)


def decode_centerface(
    heatmap: npt.NDArray[np.float32],
    scale: npt.NDArray[np.float32],
    offset: npt.NDArray[np.float32],
    landmarks: npt.NDArray[np.float32],
    *,
    score_threshold: float,
    stride: int = CENTERFACE_STRIDE,
) -> RawDetections:
    """Decodes CenterFace's four output maps of one image into boxes in network-input pixels.

    Args:
        heatmap: (1, 1, h, w) face-centre probability per cell.
        scale: (1, 2, h, w) log of box height and width in units of ``stride``.
        offset: (1, 2, h, w) sub-cell offset of the centre (y, x).
        landmarks: (1, 10, h, w) five (y, x) pairs, relative to the box corner in box units.
        score_threshold: cells scoring below this are dropped.
        stride: input pixels per output cell.

    Returns:
        Unsuppressed detections; boxes may extend past the input.
    """
    heat = heatmap[0, 0]
    ys, xs = np.nonzero(heat > score_threshold)
    if len(ys) == 0:
        return RawDetections.empty()
    scores = heat[ys, xs]
    heights = np.exp(scale[0, 0, ys, xs]) * stride
    widths = np.exp(scale[0, 1, ys, xs]) * stride
    centre_y = (ys + offset[0, 0, ys, xs] + 0.5) * stride
    centre_x = (xs + offset[0, 1, ys, xs] + 0.5) * stride
    x1 = centre_x - widths / 2.0
    y1 = centre_y - heights / 2.0
    boxes = np.stack([x1, y1, x1 + widths, y1 + heights], axis=1)
    marks = landmarks[0][:, ys, xs].T.reshape(-1, 5, 2)  # (N, 5, (y, x))
    landmarks_xy = np.stack(
        [marks[:, :, 1] * widths[:, None] + x1[:, None], marks[:, :, 0] * heights[:, None] + y1[:, None]],
        axis=2,
    )
    return RawDetections(boxes, scores, landmarks_xy)


def nms(
    boxes_xyxy: npt.NDArray[np.floating], scores: npt.NDArray[np.floating], *, iou_threshold: float
) -> npt.NDArray[np.int64]:
    """Greedy non-maximum suppression: boxes best first (ties in input order), each dropped when it overlaps
    a kept box by an IoU above ``iou_threshold``. Two boxes without area count as the same box (OpenCV's
    rule); a box without area never suppresses one with area, nor the reverse.

    Runs ``cv2.dnn.NMSBoxes``: on the ~400 candidates of a crowd photo it takes a tenth of the time of a
    full numpy IoU matrix, with the same result.

    Args:
        boxes_xyxy: (N, 4) float boxes.
        scores: (N,) scores.
        iou_threshold: a box overlapping a kept, higher-scoring box by more than this is dropped.

    Returns:
        Indices of the kept boxes, highest score first.
    """
    if len(scores) == 0:
        return np.zeros((0,), dtype=np.int64)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    ranked = np.asarray(scores, dtype=np.float64)
    if ranked.min() <= 0.0:  # OpenCV keeps only scores above its (non-negative) score threshold
        ranked = ranked - ranked.min() + 1.0
    # NMSBoxes reads (N, 4) and (N,) arrays directly; its stubs name only the Python sequences it also takes.
    kept = cv2.dnn.NMSBoxes(
        xywh,  # type: ignore[arg-type]
        ranked,  # type: ignore[arg-type]
        score_threshold=0.0,
        nms_threshold=float(iou_threshold),
    )
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def to_original_pixels(
    detections: RawDetections, *, resize_factor: float, width_px: int, height_px: int
) -> RawDetections:
    """Maps detections from the resized network input back to the original image and clips them.

    Args:
        detections: boxes and landmarks in network-input pixels.
        resize_factor: network-input pixels per original pixel.
        width_px: original image width.
        height_px: original image height.

    Returns:
        Detections in original pixels; boxes clipped to the image, boxes left with no area dropped.
    """
    if resize_factor <= 0:
        raise ValueError(f"resize_factor must be positive, got {resize_factor}")
    boxes = detections.boxes_xyxy / resize_factor
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width_px)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height_px)
    landmarks = detections.landmarks_xy / resize_factor
    has_area = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
    return RawDetections(boxes[has_area], detections.scores[has_area], landmarks[has_area])


def concat(parts: list[RawDetections]) -> RawDetections:
    """All detections of several passes in one set."""
    if not parts:
        return RawDetections.empty()
    return RawDetections(
        np.concatenate([p.boxes_xyxy for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.landmarks_xy for p in parts]),
    )


def pairwise_iou(a_xyxy: npt.NDArray[np.floating], b_xyxy: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4); (N, M), 0 where a union is empty."""
    inter_w = np.clip(
        np.minimum(a_xyxy[:, None, 2], b_xyxy[None, :, 2]) - np.maximum(a_xyxy[:, None, 0], b_xyxy[None, :, 0]), 0, None
    )
    inter_h = np.clip(
        np.minimum(a_xyxy[:, None, 3], b_xyxy[None, :, 3]) - np.maximum(a_xyxy[:, None, 1], b_xyxy[None, :, 1]), 0, None
    )
    inter = inter_w * inter_h
    area_a = (a_xyxy[:, 2] - a_xyxy[:, 0]) * (a_xyxy[:, 3] - a_xyxy[:, 1])
    area_b = (b_xyxy[:, 2] - b_xyxy[:, 0]) * (b_xyxy[:, 3] - b_xyxy[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.zeros_like(inter, dtype=np.float64)
    np.divide(inter, union, out=iou, where=union > 0)
    return iou


def fuse_passes(parts: list[RawDetections], *, match_iou: float = 0.5, is_noisy_or: bool = False) -> RawDetections:
    """Weighted box fusion of the detections of several passes (scales, flips, tiles, models).

    Detections are taken best first; each unassigned one leads a cluster of the unassigned detections
    overlapping it by at least ``match_iou``. From every pass the cluster keeps its best member; the fused
    box and landmarks are the score-weighted mean of those. Averaging the passes' boxes makes the box fit
    the face better than any single pass.

    Args:
        parts: one set per pass, each already suppressed within itself.
        match_iou: overlap at which two detections are taken as the same face.
        is_noisy_or: fused score ``1 - prod(1 - s)`` over the passes' best members (a face that several
            passes see is more likely a face than one that a single pass sees), instead of the best score.

    Returns:
        One detection per cluster, best first. Clusters may still overlap a little; run ``nms`` after.
    """
    pass_ids = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)]) if parts else np.zeros(0, int)
    merged = concat(parts)
    if len(merged) == 0:
        return merged
    order = np.argsort(-merged.scores, kind="stable")
    merged, pass_ids = merged.take(order), pass_ids[order]
    is_neighbour = pairwise_iou(merged.boxes_xyxy, merged.boxes_xyxy) >= match_iou
    np.fill_diagonal(is_neighbour, True)
    # Most detections overlap nothing else: they are their own cluster, unchanged.
    is_alone = is_neighbour.sum(axis=1) == 1
    boxes = merged.boxes_xyxy.astype(np.float64)
    scores = merged.scores.astype(np.float64)
    landmarks = merged.landmarks_xy.astype(np.float64)
    is_kept = is_alone.copy()
    assigned = is_alone.copy()
    for leader in np.flatnonzero(~is_alone):
        if assigned[leader]:
            continue
        members = np.flatnonzero(is_neighbour[leader] & ~assigned)
        assigned[members] = True
        is_kept[leader] = True
        # members are in descending score order, so the first of each pass is its best
        _, first = np.unique(pass_ids[members], return_index=True)
        best = members[first]
        weights = scores[best] / scores[best].sum() if scores[best].sum() > 0 else np.full(len(best), 1 / len(best))
        boxes[leader] = (boxes[best] * weights[:, None]).sum(axis=0)
        landmarks[leader] = (landmarks[best] * weights[:, None, None]).sum(axis=0)
        if is_noisy_or:
            scores[leader] = 1.0 - np.prod(1.0 - scores[best])
    fused = RawDetections(boxes[is_kept], scores[is_kept], landmarks[is_kept])
    # Noisy-OR can lift a cluster above a better-scoring single detection: keep best-first order.
    return fused.take(np.argsort(-fused.scores, kind="stable"))


def suppress(detections: RawDetections, *, iou_threshold: float) -> RawDetections:
    """``nms`` applied to a detection set."""
    return detections.take(nms(detections.boxes_xyxy, detections.scores, iou_threshold=iou_threshold))


def favour_large(
    detections: RawDetections, *, min_height_px: float, large_score: float, score_threshold: float
) -> RawDetections:
    """Lifts the scores of boxes at least ``min_height_px`` tall so that ``large_score`` lands on
    ``score_threshold``: a size prior, because a large box that the model scores faintly is far more often a
    face (turned, occluded, blurred) than a small one, and a missed large face is the most identifiable miss.

    The map is piecewise linear and increasing on [0, 1] (0 -> 0, ``large_score`` -> ``score_threshold``,
    1 -> 1), so large boxes keep their order among themselves; smaller boxes are unchanged. With
    ``large_score >= score_threshold`` nothing changes.
    """
    if large_score >= score_threshold or len(detections) == 0:
        return detections
    heights = detections.boxes_xyxy[:, 3] - detections.boxes_xyxy[:, 1]
    is_large = heights >= min_height_px
    if not is_large.any():
        return detections
    raw = detections.scores.astype(np.float64)
    lifted = np.where(
        raw < large_score,
        raw * (score_threshold / large_score),
        score_threshold + (raw - large_score) * ((1.0 - score_threshold) / (1.0 - large_score)),
    )
    scores = np.where(is_large, np.clip(lifted, 0.0, 1.0), raw)
    lifted_set = RawDetections(detections.boxes_xyxy, scores, detections.landmarks_xy)
    return lifted_set.take(np.argsort(-lifted_set.scores, kind="stable"))


def above(detections: RawDetections, score_threshold: float) -> RawDetections:
    """The detections scoring at least ``score_threshold``."""
    return detections.take(np.flatnonzero(detections.scores >= score_threshold))


def check_image(image: ImageArray) -> None:
    """Refuses anything but a uint8 (H, W, 3) array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")


def to_faces(detections: RawDetections) -> tuple[Face, ...]:
    """Detections as ``Face`` records, in their order."""
    return tuple(
        Face(
            box=BBox(*(float(v) for v in box)),
            score=float(min(max(score, 0.0), 1.0)),
            landmarks_xy=tuple((float(x), float(y)) for x, y in marks),
        )
        for box, score, marks in zip(detections.boxes_xyxy, detections.scores, detections.landmarks_xy, strict=True)
    )


@dataclass(frozen=True, slots=True)
class Tile:
    """A piece of an image run on its own, and the part of the image whose detections it keeps.

    Attributes:
        x0_px, y0_px, x1_px, y1_px: the tile, in original pixels (end exclusive).
        own_xyxy: detections whose centre lies here, in original pixels, are this tile's (the image's outer
            tiles own everything beyond the image too).
    """

    x0_px: int
    y0_px: int
    x1_px: int
    y1_px: int
    own_xyxy: tuple[float, float, float, float]

    def crop(self, image: ImageArray) -> ImageArray:
        """The tile's pixels (a view)."""
        return image[self.y0_px : self.y1_px, self.x0_px : self.x1_px]

    def keep_owned(self, detections: RawDetections) -> RawDetections:
        """Detections in tile pixels moved to image pixels, keeping those centred in the part the tile owns."""
        offset = np.asarray([self.x0_px, self.y0_px], np.float32)
        boxes = detections.boxes_xyxy + np.tile(offset, 2)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        x0, y0, x1, y1 = self.own_xyxy
        inside = np.flatnonzero((cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1))
        return RawDetections(boxes[inside], detections.scores[inside], (detections.landmarks_xy + offset)[inside])


def _spans(length_px: int, *, input_scale: float, side_px: int, margin_px: int) -> list[tuple[int, int, float, float]]:
    """Along one axis: (start, end, owned from, owned to) of each tile, in original pixels."""
    working_px = length_px * input_scale
    count = 1 if working_px <= side_px else math.ceil(working_px / (side_px - 2 * margin_px))
    edges = [round(index * length_px / count) for index in range(count + 1)]
    margin_original_px = math.ceil(margin_px / input_scale)
    spans = []
    for index in range(count):
        owned_from = -math.inf if index == 0 else float(edges[index])
        owned_to = math.inf if index == count - 1 else float(edges[index + 1])
        start = max(0, edges[index] - margin_original_px)
        end = min(length_px, edges[index + 1] + margin_original_px)
        spans.append((start, end, owned_from, owned_to))
    return spans


def plan_tiles(
    height_px: int,
    width_px: int,
    *,
    input_scale: float,
    max_working_pixels: int = MAX_WORKING_PIXELS,
    margin_px: int = TILE_MARGIN_PX,
) -> list[Tile]:
    """Cuts a pass into overlapping tiles whose network input is at most ``max_working_pixels``.

    Args:
        height_px: image height.
        width_px: image width.
        input_scale: the pass's resize factor.
        max_working_pixels: the largest network input (after scaling) run in one piece.
        margin_px: network-input pixels each tile reaches past the part it owns.

    Returns:
        One tile covering the image when its scaled size is at most ``max_working_pixels``; otherwise a grid
        whose owned parts split the image without gap or overlap.
    """
    if height_px < 1 or width_px < 1 or not input_scale > 0:
        raise ValueError(f"expected a non-empty image and a positive scale, got {width_px}x{height_px}, {input_scale}")
    if height_px * width_px * input_scale**2 <= max_working_pixels:
        return [Tile(0, 0, width_px, height_px, (-math.inf, -math.inf, math.inf, math.inf))]
    side_px = math.isqrt(max_working_pixels)
    if side_px <= 4 * margin_px:
        raise ValueError(f"max_working_pixels {max_working_pixels} leaves no room inside margins of {margin_px} px")
    rows = _spans(height_px, input_scale=input_scale, side_px=side_px, margin_px=margin_px)
    columns = _spans(width_px, input_scale=input_scale, side_px=side_px, margin_px=margin_px)
    return [
        Tile(x0, y0, x1, y1, (own_x0, own_y0, own_x1, own_y1))
        for (y0, y1, own_y0, own_y1) in rows
        for (x0, x1, own_x0, own_x1) in columns
    ]


def detect_tiled(
    image: ImageArray,
    *,
    input_scale: float,
    nms_iou: float,
    detect_whole: Callable[[ImageArray], RawDetections],
    max_working_pixels: int = MAX_WORKING_PIXELS,
    margin_px: int = TILE_MARGIN_PX,
) -> RawDetections:
    """Runs one pass of a detector in bounded memory: whole when small enough, else tile by tile.

    Args:
        image: uint8 (H, W, 3).
        input_scale: the pass's resize factor.
        nms_iou: suppression of the tiles' overlapping detections.
        detect_whole: the pass on one image (or tile), returning detections in its own original pixels.
        max_working_pixels: see ``plan_tiles``.
        margin_px: see ``plan_tiles``.
    """
    height, width = image.shape[:2]
    tiles = plan_tiles(
        height, width, input_scale=input_scale, max_working_pixels=max_working_pixels, margin_px=margin_px
    )
    if len(tiles) == 1:
        return detect_whole(image)
    found = [tile.keep_owned(detect_whole(tile.crop(image))) for tile in tiles]
    return suppress(concat(found), iou_threshold=nms_iou)
