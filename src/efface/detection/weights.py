"""Where the int8 CenterFace model lives: built once per machine from the fp32 weights, kept in a user cache.

The cache folder is ``$EFFACE_CACHE_DIR``, else the user cache folder (``$XDG_CACHE_HOME/efface/models`` or
``~/.cache/efface/models`` on Linux). A model's file name is keyed by what decides its bytes: the fp32
weights' sha256, the onnxruntime version and ``quantize.RECIPE_VERSION``; a JSON sidecar beside it records the
sha256 the file must have, checked on every load, so a truncated or altered file is rebuilt (with a warning),
never run. Files are written under a temporary name and renamed into place, and an ``flock`` on a lock file
makes processes that need the same model at once (a pool, Ray actors on one node) build it once. A cache that
cannot be written costs time, never the run: the model is then built in memory, with a warning.

Only int8 uses the cache: an fp32 run reads the published weights and writes nothing here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import platformdirs

from efface.detection._onnx import file_sha256, onnxruntime_version
from efface.detection.quantize import RECIPE_VERSION, quantize_centerface

__all__ = ["Int8Weights", "cache_dir", "cached_int8_path", "int8_weights"]

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "EFFACE_CACHE_DIR"


@dataclass(frozen=True, slots=True)
class Int8Weights:
    """An int8 CenterFace model, ready to load.

    Attributes:
        model_bytes: the serialized ONNX model.
        sha256: sha256 of ``model_bytes`` (what the audit log records as the detector's weights).
        path: the cached file it was read from or written to; None when it lives in memory only.
    """

    model_bytes: bytes
    sha256: str
    path: Path | None


def cache_dir() -> Path:
    """The folder of built models: ``$EFFACE_CACHE_DIR``, else ``<user cache folder>/efface/models``."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_cache_dir("efface")) / "models"


def cached_int8_path(fp32_path: Path) -> Path:
    """Where the int8 model of ``fp32_path`` is cached (whether or not it is there yet)."""
    key = f"{file_sha256(fp32_path)}:onnxruntime-{onnxruntime_version()}:recipe-{RECIPE_VERSION}"
    return cache_dir() / f"centerface-int8-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def int8_weights(fp32_path: Path) -> Int8Weights:
    """The int8 model of the fp32 weights at ``fp32_path``: from the cache, else built (and cached).

    Raises:
        ModelError: the fp32 weights cannot be read or quantized.
    """
    path = cached_int8_path(fp32_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_suffix(".lock")):
            return _read_checked(path) or _build_into(path, fp32_path)
    except OSError as exc:
        logger.warning(
            "cannot use the model cache %s (%s): building the int8 model in memory for this run; set %s to a "
            "writable folder to build it once",
            path.parent,
            exc,
            CACHE_DIR_ENV,
        )
    return _build(fp32_path)


def _build(fp32_path: Path) -> Int8Weights:
    model_bytes = quantize_centerface(fp32_path)
    return Int8Weights(model_bytes, hashlib.sha256(model_bytes).hexdigest(), None)


def _build_into(path: Path, fp32_path: Path) -> Int8Weights:
    """Builds the model and caches it at ``path`` (the model first, then the sidecar that vouches for it)."""
    built = _build(fp32_path)
    try:
        _write_atomic(path, built.model_bytes)
        _write_atomic(_sidecar(path), json.dumps(_sidecar_fields(fp32_path, built.sha256), indent=2).encode())
    except OSError as exc:
        logger.warning("cannot write the int8 model to %s (%s): it is kept in memory for this run", path, exc)
        return built
    logger.info("built the int8 CenterFace model into %s", path)
    return replace(built, path=path)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _sidecar_fields(fp32_path: Path, sha256: str) -> dict[str, object]:
    return {
        "sha256": sha256,
        "fp32_sha256": file_sha256(fp32_path),
        "onnxruntime": onnxruntime_version(),
        "recipe": RECIPE_VERSION,
    }


def _read_checked(path: Path) -> Int8Weights | None:
    """The cached model if it is there and has the sha256 its sidecar records; None when it is absent or
    does not match (a warning: it is then rebuilt)."""
    if not path.exists():
        return None
    try:
        expected = json.loads(_sidecar(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("the cached int8 model %s has no readable record of its sha256 (%s): rebuilding it", path, exc)
        return None
    model_bytes = path.read_bytes()
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != expected:
        logger.warning(
            "the cached int8 model %s is damaged (sha256 %s, expected %s): rebuilding it", path, actual, expected
        )
        return None
    return Int8Weights(model_bytes, actual, path)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``lock_path`` (waiting for a process that holds it)."""
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, content: bytes) -> None:
    """Writes ``content`` to a temporary file beside ``path``, flushed to disk, then renames it into place."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as file:
        temporary = Path(file.name)
        try:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
