"""``Settings``: where the detector runs."""

from __future__ import annotations

import pytest

from efface.config import load_settings
from efface.errors import ConfigurationError
from efface.pipeline.build import audited_settings
from efface.records import Device


def test_the_detector_runs_on_the_cpu_unless_told_otherwise() -> None:
    settings = load_settings()
    assert settings.device is Device.CPU and settings.providers is None
    assert audited_settings(settings)["providers"] == ["CPUExecutionProvider"]


def test_the_device_chooses_the_providers_the_audit_log_records() -> None:
    audited = audited_settings(load_settings(device="cuda"))
    assert audited["device"] == "cuda"
    assert audited["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_providers_of_ones_own_override_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFACE_PROVIDERS", '["OpenVINOExecutionProvider", "CPUExecutionProvider"]')
    assert audited_settings(load_settings())["providers"] == ["OpenVINOExecutionProvider", "CPUExecutionProvider"]


def test_a_device_and_providers_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFACE_PROVIDERS", '["CPUExecutionProvider"]')
    with pytest.raises(ConfigurationError, match="device or providers, not both") as caught:
        load_settings(device="cuda")
    assert "db_url" not in str(caught.value)  # the message names the conflict, not every setting
