"""Anonymizing transforms: pure functions and the strength-checked ``Anonymizer``."""

from efface.transforms.core import Anonymizer, check_strength

__all__ = ["Anonymizer", "check_strength"]
