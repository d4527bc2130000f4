"""Names a package exports without importing the module behind them until one is used.

Why: ``import efface.cli`` must not pay for onnxruntime, PyAV or the verify metrics when a command never uses
them, yet ``from efface.media import open_video`` should keep working. A package lists which of its names come
from which module and sets ``__getattr__ = lazy_exports(__name__, {...})``; its ``TYPE_CHECKING`` imports keep
the names visible to type checkers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``modules[name]`` on first access to ``name``.

    Args:
        package: the package's ``__name__`` (for the error message).
        modules: exported name -> the module that defines it.
    """

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    return __getattr__
