from __future__ import annotations

import numpy as np
import pytest

from efface.transforms import functional as F


def _noise(h: int = 64, w: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("kernel_px", [1.0, 7.5, 48.0, 1000.0])
def test_blur_keeps_shape_and_smooths(kernel_px: float) -> None:
    region = _noise()
    out = F.gaussian_blur(region, kernel_px=kernel_px)
    assert out.shape == region.shape and out.dtype == np.uint8
    assert out.astype(float).std() <= region.astype(float).std()
    assert not np.shares_memory(out, region)


def test_stronger_blur_removes_more_detail() -> None:
    region = _noise(200, 200)
    weak, strong = (F.gaussian_blur(region, kernel_px=k).astype(float).std() for k in (5, 200))
    assert strong < weak / 3


@pytest.mark.parametrize("kernel_px", [0.0, -1.0])
def test_blur_rejects_non_positive_kernel(kernel_px: float) -> None:
    with pytest.raises(ValueError, match="kernel_px"):
        F.gaussian_blur(_noise(), kernel_px=kernel_px)


def test_pixelate_makes_uniform_cells() -> None:
    out = F.pixelate(_noise(60, 60), block_px=20)
    for y in (0, 20, 40):
        for x in (0, 20, 40):
            cell = out[y : y + 20, x : x + 20].reshape(-1, 3)
            assert (cell == cell[0]).all()


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3)])
def test_empty_regions_pass_through(shape: tuple[int, int, int]) -> None:
    empty = np.zeros(shape, np.uint8)
    assert F.gaussian_blur(empty, kernel_px=5).shape == shape
    assert F.pixelate(empty, block_px=5).shape == shape


def test_fill_is_solid() -> None:
    out = F.fill(_noise(), rgb=(10, 20, 30))
    assert (out.reshape(-1, 3) == (10, 20, 30)).all()


def test_ellipse_mask() -> None:
    mask = F.ellipse_mask(10, 20, center_xy=(10, 5), axes_xy=(10, 5))
    assert mask[5, 10] and not mask[0, 0] and not mask[9, 19]
    assert mask.sum() == pytest.approx(np.pi * 10 * 5, rel=0.1)
    with pytest.raises(ValueError, match="semi-axes"):
        F.ellipse_mask(4, 4, center_xy=(2, 2), axes_xy=(0, 1))
