"""Per-request options become ``Settings`` and then a ``Worker`` through ``build_worker``, the path every
entry point takes, so the strength floor and every other check apply to a request exactly as to the CLI.
Built workers are kept per distinct option set (a bounded LRU), so a request never reloads the model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from efface.config import Settings
from efface.pipeline.core import Worker
from efface.records import Method, Preset
from efface.service.errors import InvalidOptionError

__all__ = ["OptionKey", "WorkerCache", "resolve_options"]

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
    is decided by ``build_worker``, as for every other entry point.

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


class WorkerCache:
    """Workers by option set: the server's own built at once and kept, others built on first use.

    Safe to use from many threads; a worker is built by one thread at a time.

    Args:
        base: the server's settings.
        size: option sets other than the server's own kept at once (least recently used dropped first).
        build: turns settings into a worker (``build_worker``).

    Raises:
        EffaceError: from ``build`` for the server's own settings.
    """

    def __init__(self, base: Settings, *, size: int, build: Callable[[Settings], Worker]) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._base = base
        self._size = size
        self._build = build
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._workers: OrderedDict[OptionKey, Worker] = OrderedDict()
        self.default = build(base)
        self.builds = 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._workers) + 1

    def get(self, key: OptionKey) -> Worker:
        """The worker for an option set, built when it is not cached.

        Raises:
            WeakTransformError: the options ask for a transform below the floor.
            ConfigurationError, ModelError: from ``build``.
        """
        if not key:
            return self.default
        with self._lock:
            if (worker := self._lookup(key)) is not None:
                return worker
        with self._build_lock:
            with self._lock:
                if (worker := self._lookup(key)) is not None:
                    return worker
            worker = self._build(self._base.model_copy(update=dict(key)))
            with self._lock:
                self.builds += 1
                self._workers[key] = worker
                while len(self._workers) > self._size:
                    self._workers.popitem(last=False)
        return worker

    def _lookup(self, key: OptionKey) -> Worker | None:
        worker = self._workers.get(key)
        if worker is not None:
            self._workers.move_to_end(key)
        return worker
