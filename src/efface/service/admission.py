"""Back-pressure and rate limits: what decides, before an upload is read, whether a request may go on."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Gate", "RateLimiter"]


class Gate:
    """Counts the requests in flight (reading, waiting for a worker, processing) and refuses one too many.

    A request enters before its upload is read and leaves when its processing thread is done, even when
    the request gave up waiting first: so memory is bounded by ``capacity`` uploads and decoded images,
    whatever the clients do. Safe to use from the event loop and from worker threads.

    Args:
        capacity: the most requests in flight.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_enter(self) -> bool:
        """Admits one request, or says False when ``capacity`` are in flight."""
        with self._lock:
            if self._in_flight >= self.capacity:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            if self._in_flight == 0:
                raise RuntimeError("Gate.leave() without a matching try_enter()")
            self._in_flight -= 1


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    """A token bucket per API key: ``limit`` requests per minute sustained, bursts of up to ``limit``.

    Args:
        clock: monotonic seconds (a fake in tests).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: str, *, limit_per_min: int) -> float | None:
        """Takes one request from the key's budget.

        Returns:
            None when the request may go on; otherwise the seconds until it may.
        """
        if limit_per_min < 1:
            raise ValueError(f"limit_per_min must be >= 1, got {limit_per_min}")
        rate_per_s = limit_per_min / 60.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(tokens=float(limit_per_min), updated_s=now)
            bucket.tokens = min(float(limit_per_min), bucket.tokens + (now - bucket.updated_s) * rate_per_s)
            bucket.updated_s = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / rate_per_s

    @staticmethod
    def retry_after_header(wait_s: float) -> int:
        """Whole seconds for ``Retry-After`` (at least 1)."""
        return max(1, math.ceil(wait_s))
