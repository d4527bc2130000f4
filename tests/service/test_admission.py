"""The gate, the rate limiter, the limits, per-request options and the worker cache, without a server."""

from __future__ import annotations

import threading

import pytest

from efface.config import Settings
from efface.errors import WeakTransformError
from efface.pipeline.core import Worker
from efface.records import Method, Preset
from efface.service.admission import Gate, RateLimiter
from efface.service.errors import InvalidOptionError
from efface.service.limits import ServiceLimits
from efface.service.workers import WorkerCache, resolve_options

from .conftest import static_build


def test_gate_admits_up_to_its_capacity() -> None:
    gate = Gate(2)
    assert gate.try_enter() and gate.try_enter()
    assert not gate.try_enter()
    gate.leave()
    assert gate.in_flight == 1 and gate.try_enter()


def test_gate_refuses_to_leave_more_than_entered() -> None:
    with pytest.raises(RuntimeError):
        Gate(1).leave()


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_rate_limiter_allows_a_burst_then_the_sustained_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    assert all(limiter.acquire("k", limit_per_min=3) is None for _ in range(3))
    wait_s = limiter.acquire("k", limit_per_min=3)
    assert wait_s == pytest.approx(20.0)  # one request per 20 s
    assert RateLimiter.retry_after_header(wait_s) == 20
    assert limiter.acquire("other", limit_per_min=3) is None  # per key
    clock.now_s += 20.0
    assert limiter.acquire("k", limit_per_min=3) is None
    assert limiter.acquire("k", limit_per_min=3) is not None


@pytest.mark.parametrize("wait_s", [0.0, 0.2, 1.0, 1.01])
def test_retry_after_is_at_least_one_whole_second(wait_s: float) -> None:
    assert RateLimiter.retry_after_header(wait_s) >= max(1.0, wait_s)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_upload_bytes", 0),
        ("workers", 0),
        ("queue_size", -1),
        ("rate_limit_per_min", 0),
        ("upload_timeout_s", 0.0),
        ("request_timeout_s", float("inf")),
        ("cached_workers", 0),
    ],
)
def test_limits_refuse_impossible_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ServiceLimits(**{field: value})


BASE = Settings(db_url="sqlite://", method=Method.FILL)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ()),
        ({"method": Method.FILL}, ()),
        ({"method": Method.BLUR}, (("method", Method.BLUR),)),
        ({"method": Method.BLUR, "strength": 0.5}, (("blur_kernel_fraction", 0.5), ("method", Method.BLUR))),
        ({"method": Method.PIXELATE, "strength": 8.0}, (("method", Method.PIXELATE), ("pixelate_blocks", 8))),
        ({"threshold": 0.5, "preset": Preset.FAST}, (("preset", Preset.FAST), ("score_threshold", 0.5))),
        ({"preset": Preset.BALANCED}, ()),
    ],
)
def test_resolve_options_keeps_only_what_changes(options: dict, expected: tuple) -> None:
    assert resolve_options(BASE, **options) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strength": 1.0}, "does not apply to method fill"),
        ({"method": Method.PIXELATE, "strength": 2.5}, "whole number"),
    ],
)
def test_resolve_options_refuses_strengths_that_mean_nothing(options: dict, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        resolve_options(BASE, **options)


def _counting_build() -> tuple[list[Settings], object]:
    built: list[Settings] = []
    inner = static_build()

    def build(settings: Settings) -> Worker:
        built.append(settings)
        return inner(settings)

    return built, build


def test_worker_cache_builds_each_option_set_once_and_drops_the_least_recent() -> None:
    built, build = _counting_build()
    cache = WorkerCache(BASE, size=2, build=build)
    blur, pixelate, fast = (
        resolve_options(BASE, method=Method.BLUR),
        resolve_options(BASE, method=Method.PIXELATE),
        resolve_options(BASE, preset=Preset.FAST),
    )

    assert cache.get(()) is cache.default
    first_blur = cache.get(blur)
    assert cache.get(blur) is first_blur
    cache.get(pixelate)
    cache.get(blur)  # blur is now the most recent
    cache.get(fast)  # drops pixelate
    assert cache.get(blur) is first_blur
    cache.get(pixelate)

    assert [s.method for s in built] == [Method.FILL, Method.BLUR, Method.PIXELATE, Method.FILL, Method.PIXELATE]
    assert built[3].preset is Preset.FAST
    assert len(cache) == 3  # the default and two others


def test_worker_cache_goes_through_the_floor_check_and_caches_no_failure() -> None:
    _, build = _counting_build()
    cache = WorkerCache(BASE, size=2, build=build)
    weak = resolve_options(BASE, method=Method.BLUR, strength=0.05)
    for _ in range(2):
        with pytest.raises(WeakTransformError, match="below the floor"):
            cache.get(weak)
    assert len(cache) == 1


def test_worker_cache_builds_once_under_concurrent_requests() -> None:
    built, build = _counting_build()
    cache = WorkerCache(BASE, size=2, build=build)
    key = resolve_options(BASE, method=Method.BLUR)
    workers: list[Worker] = []
    threads = [threading.Thread(target=lambda: workers.append(cache.get(key))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 2 and len({id(worker) for worker in workers}) == 1
