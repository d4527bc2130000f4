"""``Settings``: where the detector runs, and the defaults it shares with the core's records."""

from __future__ import annotations

import dataclasses
import os

import pytest

from efface.config import Settings, load_settings
from efface.errors import ConfigurationError
from efface.pipeline.build import audited_settings
from efface.records import Device, TransformSpec


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


@pytest.mark.parametrize("field", [field.name for field in dataclasses.fields(TransformSpec)])
def test_the_transform_defaults_are_the_records(field: str) -> None:
    assert Settings.model_fields[field].default == getattr(TransformSpec(), field)


def test_default_settings_give_the_default_transform_and_a_process_per_core() -> None:
    settings = load_settings()
    assert settings.transform_spec() == TransformSpec()
    assert settings.jobs == (os.cpu_count() or 1)
