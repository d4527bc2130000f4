"""The gate, the rate limiter, the limits and per-request options, without a server."""

from __future__ import annotations

import pytest

from efface.config import Settings
from efface.detection.presets import preset_spec
from efface.errors import WeakTransformError
from efface.pipeline.build import build_policy
from efface.records import Method, Preset
from efface.service.admission import Gate, RateLimiter
from efface.service.errors import InvalidOptionError
from efface.service.limits import ServiceLimits
from efface.service.options import resolve_options


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


def test_an_option_set_becomes_a_policy_through_the_floor_check() -> None:
    blur = resolve_options(BASE, method=Method.BLUR, strength=2.0, preset=Preset.FAST)
    policy = build_policy(BASE.model_copy(update=dict(blur)))
    assert policy.anonymizer.spec.method is Method.BLUR and policy.anonymizer.spec.blur_kernel_fraction == 2.0
    assert policy.detection == preset_spec(Preset.FAST)
    weak = resolve_options(BASE, method=Method.BLUR, strength=0.05)
    with pytest.raises(WeakTransformError, match="below the floor"):
        build_policy(BASE.model_copy(update=dict(weak)))
