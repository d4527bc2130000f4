"""The int8 model cache: keyed by what decides the model's bytes, checked on load, built once by processes that
need it at once, and never a reason for a run to fail. The quantization itself is replaced by a fake builder
here (the real one is in test_quantize.py); the cache logic is what is tested."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from efface.detection import quantize, weights
from efface.detection.centerface import centerface_model_path
from efface.detection.weights import cache_dir, cached_int8_path, int8_weights

FAKE_MODEL = b"an int8 model, as far as the cache can tell"


class CountingBuilder:
    """Stands in for ``quantize_centerface``: returns ``FAKE_MODEL`` and counts its calls."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.calls = 0
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def __call__(self, fp32_path: Path) -> bytes:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay_s)
        return FAKE_MODEL


@pytest.fixture
def builder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CountingBuilder:
    fake = CountingBuilder()
    monkeypatch.setattr(weights, "quantize_centerface", fake)
    monkeypatch.setenv("EFFACE_CACHE_DIR", str(tmp_path / "cache"))
    return fake


def test_cache_dir_is_the_env_override_else_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EFFACE_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("EFFACE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "efface" / "models"


def test_the_file_name_changes_with_the_recipe_and_onnxruntime(
    builder: CountingBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32 = centerface_model_path()
    first = cached_int8_path(fp32)
    assert first.name.startswith("centerface-int8-") and first.suffix == ".onnx"
    monkeypatch.setattr(quantize, "RECIPE_VERSION", quantize.RECIPE_VERSION + 1)
    second = cached_int8_path(fp32)
    monkeypatch.setattr(weights, "onnxruntime_version", lambda: "0.0.0")
    assert len({first, second, cached_int8_path(fp32)}) == 3


def test_a_cache_hit_does_not_rebuild(builder: CountingBuilder) -> None:
    fp32 = centerface_model_path()
    built = int8_weights(fp32)
    again = int8_weights(fp32)
    assert builder.calls == 1
    assert built.path == again.path == cached_int8_path(fp32) and again.model_bytes == FAKE_MODEL
    assert again.sha256 == hashlib.sha256(FAKE_MODEL).hexdigest()
    sidecar = json.loads(cached_int8_path(fp32).with_suffix(".json").read_text())
    assert sidecar["sha256"] == again.sha256 and sidecar["recipe"] == quantize.RECIPE_VERSION
    assert sorted(p.name for p in cache_dir().iterdir() if p.name.startswith(".")) == []  # no temporary left


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda model: model.write_bytes(FAKE_MODEL[:10]), id="truncated"),
        pytest.param(lambda model: model.write_bytes(FAKE_MODEL.upper()), id="altered"),
        pytest.param(lambda model: model.with_suffix(".json").unlink(), id="sidecar-missing"),
        pytest.param(lambda model: model.with_suffix(".json").write_text("{"), id="sidecar-unreadable"),
    ],
)
def test_a_damaged_cache_is_detected_and_rebuilt(
    builder: CountingBuilder, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], object]
) -> None:
    fp32 = centerface_model_path()
    int8_weights(fp32)
    model = cached_int8_path(fp32)
    damage(model)
    with caplog.at_level(logging.WARNING, logger="efface.detection.weights"):
        rebuilt = int8_weights(fp32)
    assert builder.calls == 2 and rebuilt.model_bytes == FAKE_MODEL and rebuilt.path == model
    assert model.read_bytes() == FAKE_MODEL
    assert any("rebuilding" in message for message in caplog.messages)
    assert int8_weights(fp32).path == model and builder.calls == 2  # and the rebuilt file is good again


def test_an_unwritable_cache_builds_in_memory_with_a_warning(
    builder: CountingBuilder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EFFACE_CACHE_DIR", str(blocker / "models"))  # no folder can be made inside a file
    with caplog.at_level(logging.WARNING, logger="efface.detection.weights"):
        found = int8_weights(centerface_model_path())
    assert found.path is None and found.model_bytes == FAKE_MODEL and builder.calls == 1
    assert any("in memory" in message for message in caplog.messages)
    assert blocker.read_text() == "not a folder"


def test_processes_that_need_the_model_at_once_build_it_once(
    builder: CountingBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # flock locks belong to an open file, not to a process: threads that each open the lock file contend
    # exactly as processes do.
    slow = CountingBuilder(delay_s=0.3)
    monkeypatch.setattr(weights, "quantize_centerface", slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(int8_weights(centerface_model_path()))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert slow.calls == 1
    assert len(results) == 4 and {result.sha256 for result in results} == {hashlib.sha256(FAKE_MODEL).hexdigest()}
