"""Per-request options become ``Settings`` and then a ``Policy`` through ``build_policy``, the path every entry
point takes, so the strength floor and every other check apply to a request exactly as to the CLI. A policy is
cheap (no model is loaded): every request runs on the process's one copy of the models.
"""

from __future__ import annotations

from efface.config import Settings
from efface.records import Method, Preset
from efface.service.errors import InvalidOptionError

__all__ = ["OptionKey", "resolve_options"]

# The settings a request changes, as sorted (name, value) pairs: hashable, and () for the server's own.
OptionKey = tuple[tuple[str, object], ...]


def resolve_options(
    base: Settings,
    *,
    method: Method | None = None,
    strength: float | None = None,
    threshold: float | None = None,
    preset: Preset | None = None,
) -> OptionKey:
    """The settings a request's options change, relative to the server's.

    ``strength`` means the blur kernel as a fraction of the face width for ``blur`` and the cells across
    the face for ``pixelate``; it is refused for ``fill``, which has none. Whether it is above the floor
    is decided by ``build_policy``, as for every other entry point.

    Raises:
        InvalidOptionError: a strength for ``fill``, or a fractional pixelation.
    """
    chosen_method = method or base.method
    changes: dict[str, object] = {"method": chosen_method, "score_threshold": threshold, "preset": preset}
    if strength is not None:
        if chosen_method is Method.BLUR:
            changes["blur_kernel_fraction"] = strength
        elif chosen_method is Method.PIXELATE:
            if not float(strength).is_integer():
                raise InvalidOptionError(f"pixelate strength is a whole number of cells, got {strength:g}")
            changes["pixelate_blocks"] = int(strength)
        else:
            raise InvalidOptionError(f"strength does not apply to method {chosen_method.value}")
    return tuple(
        sorted((name, value) for name, value in changes.items() if value is not None and value != getattr(base, name))
    )
