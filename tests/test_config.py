"""``Settings``: where the detector runs, and the defaults it shares with the core's records."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from efface.config import Settings, load_settings
from efface.detection.centerface import centerface_model_path
from efface.detection.tracking import TrackingSpec
from efface.detection.weights import cached_int8_path
from efface.errors import ConfigurationError
from efface.media.video import VideoOptions
from efface.pipeline.build import audited_settings, build_policy, load_models
from efface.pipeline.core import Policy
from efface.records import Device, Precision, TransformSpec


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


def test_the_detector_runs_in_fp32_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().precision is Precision.FP32
    monkeypatch.setenv("EFFACE_PRECISION", "int8")
    assert audited_settings(load_settings())["precision"] == "int8"
    monkeypatch.setenv("EFFACE_PRECISION", "int4")
    with pytest.raises(ConfigurationError, match="precision"):
        load_settings()


@pytest.mark.slow
def test_the_precision_setting_reaches_the_models_every_entry_point_loads(
    monkeypatch: pytest.MonkeyPatch, int8_cache: Path
) -> None:
    # The CLI, the service, pool processes and Ray actors all load their models through build.load_models.
    monkeypatch.setenv("EFFACE_CACHE_DIR", str(int8_cache))
    monkeypatch.setenv("EFFACE_PRECISION", "int8")
    models = load_models(load_settings(), inference_threads=1)
    assert models.name == "centerface-int8"
    assert models.weights_sha256 == hashlib.sha256(cached_int8_path(centerface_model_path()).read_bytes()).hexdigest()


@pytest.mark.parametrize("field", [field.name for field in dataclasses.fields(TransformSpec)])
def test_the_transform_defaults_are_the_records(field: str) -> None:
    assert Settings.model_fields[field].default == getattr(TransformSpec(), field)


def test_default_settings_give_the_default_transform_and_a_process_per_core() -> None:
    settings = load_settings()
    assert settings.transform_spec() == TransformSpec()
    assert settings.jobs == (os.cpu_count() or 1)


def test_default_settings_give_the_default_video_policy() -> None:
    # Settings and the core's records declare the video defaults each; a default changed in one place only
    # would make the CLI and ``Policy()`` anonymize videos differently.
    policy = build_policy(load_settings(db_url="sqlite://"))
    assert policy.tracking == TrackingSpec() == Policy().tracking
    assert policy.video == VideoOptions(max_pixels=load_settings(db_url="sqlite://").max_image_pixels)
    assert (policy.tracking.detect_every, policy.tracking.light_passes) == (3, True)


def test_a_selection_changes_what_a_resumed_run_shares_and_nothing_else() -> None:
    import numpy as np

    from efface.pipeline.build import settings_sha256
    from efface.recognition.matching import MatchMode
    from efface.recognition.selection import Person, Selection

    settings = load_settings()
    person = Person({"dlib": np.ones((1, 128), np.float32), "facenet": np.ones((1, 512), np.float32)}, ("a" * 64,))
    plain = audited_settings(settings)
    keep = audited_settings(settings, identity=Selection(MatchMode.KEEP, (person,)))
    only = audited_settings(settings, identity=Selection(MatchMode.ONLY, (person,)))
    assert "identity" not in plain and keep["identity"]["mode"] == "keep"
    assert {name: value for name, value in keep.items() if name != "identity"} == plain
    hashes = {settings_sha256(audited, model_sha256="m") for audited in (plain, keep, only)}
    assert len(hashes) == 3  # a run without the selection redoes the files a selective run kept faces in
