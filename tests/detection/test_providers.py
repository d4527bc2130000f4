"""The execution providers each device stands for."""

from __future__ import annotations

import pytest

from efface.detection.providers import providers_for
from efface.records import Device


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (Device.CPU, ("CPUExecutionProvider",)),
        (Device.CUDA, ("CUDAExecutionProvider", "CPUExecutionProvider")),
        ("cuda", ("CUDAExecutionProvider", "CPUExecutionProvider")),
    ],
)
def test_providers_for_each_device(device: Device, expected: tuple[str, ...]) -> None:
    assert providers_for(device) == expected


def test_every_device_has_providers_ending_on_the_cpu() -> None:
    for device in Device:
        assert providers_for(device)[-1] == "CPUExecutionProvider"


def test_an_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="tpu"):
        providers_for("tpu")  # type: ignore[arg-type]
