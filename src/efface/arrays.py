"""Names for the numpy arrays that cross efface's module boundaries.

numpy's annotations carry the dtype, not the shape or the colour order: those conventions are in the
names below and in the docstrings of the functions that take them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ImageArray", "MaskArray"]

ImageArray = npt.NDArray[np.uint8]
"""uint8 (H, W, 3) RGB pixels, or a region of them; (H, W) for a single channel such as alpha."""

MaskArray = npt.NDArray[np.bool_]
"""bool (H, W): True where a pixel belongs to the region."""
