"""Anonymizers: validate the strength of a ``TransformSpec`` once, then apply it to faces."""

from __future__ import annotations

import math

import numpy as np

from efface.arrays import ImageArray, MaskArray
from efface.errors import WeakTransformError
from efface.records import (
    MAX_PIXELATE_BLOCKS,
    MIN_BLUR_KERNEL_FRACTION,
    BBox,
    Face,
    MaskShape,
    Method,
    TransformSpec,
)
from efface.transforms import functional as F

__all__ = ["Anonymizer", "check_strength"]


def check_strength(spec: TransformSpec) -> None:
    """Refuses a transform weaker than the legal floor. This is the one place the floor is enforced.

    The floor: a Gaussian kernel at least 1/10 of the face box width, or a pixelation whose cells are
    at least as wide (at most 10 cells across the face). Both strengths are checked whatever the method,
    so a below-floor value is refused even while another method is selected.

    Raises:
        WeakTransformError: the spec is below the floor.
    """
    if spec.blur_kernel_fraction < MIN_BLUR_KERNEL_FRACTION:
        raise WeakTransformError(
            f"blur kernel of {spec.blur_kernel_fraction:g} x the face width is below the floor of "
            f"{MIN_BLUR_KERNEL_FRACTION:g} x the face width; such a blur does not anonymize"
        )
    if spec.pixelate_blocks > MAX_PIXELATE_BLOCKS:
        raise WeakTransformError(
            f"pixelation into {spec.pixelate_blocks} blocks across the face is finer than the floor of "
            f"{MAX_PIXELATE_BLOCKS} blocks; such a pixelation does not anonymize"
        )


class Anonymizer:
    """Applies one ``TransformSpec`` to the faces of images.

    Args:
        spec: the method, region and strength. Checked against the floor here, once.

    Raises:
        WeakTransformError: the spec is weaker than the legal floor.
    """

    def __init__(self, spec: TransformSpec) -> None:
        check_strength(spec)
        self.spec = spec

    def region_for(self, face: Face) -> BBox:
        """The region anonymized for a face (unclipped): its box grown by ``spec.box_scale``."""
        return face.box.scaled(self.spec.box_scale)

    def _face_mask(self, face: Face, height: int, width: int) -> tuple[tuple[slice, slice], MaskArray] | None:
        """Where a face's region lies in the frame: the crop window and the mask within it, or None when
        the face is degenerate (box under one pixel after clipping) or its region holds no pixel."""
        visible = face.box.clipped(width, height)
        if visible.width < 1 or visible.height < 1:
            return None
        region = self.region_for(face)
        x1, y1 = max(0, math.floor(region.x1)), max(0, math.floor(region.y1))
        x2, y2 = min(width, math.ceil(region.x2)), min(height, math.ceil(region.y2))
        if x2 - x1 < 1 or y2 - y1 < 1:
            return None
        if self.spec.mask_shape is MaskShape.ELLIPSE:
            cx, cy = region.center_xy
            mask = F.ellipse_mask(
                y2 - y1,
                x2 - x1,
                center_xy=(cx - x1, cy - y1),
                axes_xy=(max(region.width / 2.0, 0.5), max(region.height / 2.0, 0.5)),
            )
            if not mask.any():
                return None
        else:
            mask = np.ones((y2 - y1, x2 - x1), dtype=bool)
        return (slice(y1, y2), slice(x1, x2)), mask

    def region_mask(self, height: int, width: int, faces: tuple[Face, ...]) -> MaskArray:
        """The pixels ``apply`` would change for these faces.

        Returns:
            bool (height, width), True inside the union of the faces' regions.
        """
        union = np.zeros((height, width), dtype=bool)
        for face in faces:
            placed = self._face_mask(face, height, width)
            if placed is not None:
                window, mask = placed
                union[window] |= mask
        return union

    def apply(self, image: ImageArray, faces: tuple[Face, ...]) -> tuple[ImageArray, int]:
        """Anonymizes every face.

        Args:
            image: uint8 (H, W, 3) RGB; not modified.
            faces: faces in the image's pixels.

        Returns:
            The anonymized copy and the number of faces whose region was changed (a face box under
            one pixel after clipping to the frame is skipped and not counted).
        """
        out = image.copy()
        height, width = image.shape[:2]
        anonymized = 0
        for face in faces:
            placed = self._face_mask(face, height, width)
            if placed is None:
                continue
            window, mask = placed
            crop = out[window]
            treated = self._treat(crop, face_width_px=max(face.box.width, 1.0))
            crop[mask] = treated[mask]
            anonymized += 1
        return out, anonymized

    def _treat(self, crop: ImageArray, *, face_width_px: float) -> ImageArray:
        spec = self.spec
        match spec.method:
            case Method.BLUR:
                return F.gaussian_blur(crop, kernel_px=spec.blur_kernel_fraction * face_width_px)
            case Method.PIXELATE:
                return F.pixelate(crop, block_px=max(face_width_px / spec.pixelate_blocks, 1.0))
            case Method.FILL:
                return F.fill(crop, rgb=spec.fill_rgb)
