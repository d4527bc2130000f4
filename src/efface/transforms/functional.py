"""Pure anonymization functions on an image region. Each returns a new array; inputs are not modified.

Regions are uint8 arrays of shape (h, w, 3). Sizes are in pixels of the region's own grid.
"""

from __future__ import annotations

import math
from typing import cast

import cv2
import numpy as np

from efface.arrays import ImageArray, MaskArray

__all__ = ["ellipse_mask", "fill", "gaussian_blur", "pixelate"]

# The blur runs on a copy downscaled so the kernel spans about this many pixels: the cost stays flat
# however large the face, and the area-averaging downscale only adds to the blur.
_WORKING_KERNEL_PX = 24.0


def _resize(region: ImageArray, size_wh: tuple[int, int], *, interpolation: int) -> ImageArray:
    # cv2 returns the dtype it is given; its stubs promise only "some numeric array" (cv2.typing.MatLike).
    return cast(ImageArray, cv2.resize(region, size_wh, interpolation=interpolation))


def gaussian_blur(region: ImageArray, *, kernel_px: float) -> ImageArray:
    """Gaussian blur whose kernel spans ``kernel_px`` pixels (sigma = kernel_px / 6).

    Args:
        region: uint8 (h, w, 3).
        kernel_px: kernel width in region pixels; > 0.

    Returns:
        The blurred region, same shape and dtype.
    """
    if not kernel_px > 0:
        raise ValueError(f"kernel_px must be positive, got {kernel_px}")
    height, width = region.shape[:2]
    if height == 0 or width == 0:
        return region.copy()
    downscale = min(1.0, _WORKING_KERNEL_PX / kernel_px)
    work_w, work_h = max(1, round(width * downscale)), max(1, round(height * downscale))
    work = region
    if (work_w, work_h) != (width, height):
        work = _resize(region, (work_w, work_h), interpolation=cv2.INTER_AREA)
    work_kernel = kernel_px * (work_w / width)
    sigma = max(work_kernel / 6.0, 0.3)
    ksize = 2 * math.ceil(3.0 * sigma) + 1
    # As in _resize: cv2 keeps the input's dtype, whatever its stubs say.
    blurred = cast(
        ImageArray,
        cv2.GaussianBlur(work, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT),
    )
    if blurred.shape[:2] != (height, width):
        blurred = _resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)
    return blurred


def pixelate(region: ImageArray, *, block_px: float) -> ImageArray:
    """Replaces the region by cells of ``block_px`` pixels, each the mean colour of its area.

    Args:
        region: uint8 (h, w, 3).
        block_px: cell width in pixels; >= 1.

    Returns:
        The pixelated region, same shape and dtype.
    """
    if not block_px >= 1:
        raise ValueError(f"block_px must be >= 1, got {block_px}")
    height, width = region.shape[:2]
    if height == 0 or width == 0:
        return region.copy()
    cells_w, cells_h = max(1, math.ceil(width / block_px)), max(1, math.ceil(height / block_px))
    small = _resize(region, (cells_w, cells_h), interpolation=cv2.INTER_AREA)
    return _resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def fill(region: ImageArray, *, rgb: tuple[int, int, int]) -> ImageArray:
    """A region of one solid colour."""
    out = np.empty_like(region)
    out[...] = np.asarray(rgb, dtype=region.dtype)
    return out


def ellipse_mask(
    height_px: int, width_px: int, *, center_xy: tuple[float, float], axes_xy: tuple[float, float]
) -> MaskArray:
    """A boolean mask of the pixels whose centres lie inside an axis-aligned ellipse.

    Args:
        height_px: mask height.
        width_px: mask width.
        center_xy: ellipse centre in mask pixels (may lie outside the mask).
        axes_xy: semi-axes in pixels; > 0.

    Returns:
        bool (height_px, width_px).
    """
    if not (axes_xy[0] > 0 and axes_xy[1] > 0):
        raise ValueError(f"ellipse semi-axes must be positive, got {axes_xy}")
    ys = (np.arange(height_px, dtype=np.float32) + 0.5 - center_xy[1]) / axes_xy[1]
    xs = (np.arange(width_px, dtype=np.float32) + 0.5 - center_xy[0]) / axes_xy[0]
    return (ys[:, None] ** 2 + xs[None, :] ** 2) <= 1.0
