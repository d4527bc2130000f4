"""Where the built CenterFace models live: made once per machine from the published fp32 weights, kept in a
user cache. Two are built: the int8 model (``quantize``), and the fp32 graph with its input dims made symbolic
(``centerface.dynamic_model_bytes``: the published file declares a fixed 10x3x32x32 input). Rewriting that
graph takes the ``onnx`` package, whose import costs about 0.6 s in every process that detects; read from the
cache, a run never imports it.

The cache folder is ``$EFFACE_CACHE_DIR``, else the user cache folder (``$XDG_CACHE_HOME/efface/models`` or
``~/.cache/efface/models`` on Linux). A model's file name is keyed by what decides its bytes: the fp32
weights' sha256, the onnxruntime version and ``quantize.RECIPE_VERSION``; a JSON sidecar beside it records the
sha256 the file must have, checked on every load, so a truncated or altered file is rebuilt (with a warning),
never run. Files are written under a temporary name and renamed into place, and an ``flock`` on a lock file
makes processes that need the same model at once (a pool, Ray actors on one node) build it once. A cache that
cannot be written costs time, never the run: the model is then built in memory, with a warning.

An fp32 run writes here only its rewritten graph (model weights, never anything of the files it processes),
and where the cache cannot be written it rewrites the graph in memory, quietly: it costs time, not the run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import platformdirs

from efface.detection._onnx import file_sha256, onnxruntime_version

__all__ = ["BuiltModel", "cache_dir", "cached_fp32_path", "cached_int8_path", "fp32_graph", "int8_weights"]

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "EFFACE_CACHE_DIR"
# Part of the fp32 graph's cache key: raise it whenever ``centerface.dynamic_model_bytes`` changes what it makes.
FP32_GRAPH_VERSION = 1


@dataclass(frozen=True, slots=True)
class BuiltModel:
    """A built CenterFace model (int8, or the fp32 graph with symbolic dims), ready to load.

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
    from efface.detection.quantize import RECIPE_VERSION

    key = f"{file_sha256(fp32_path)}:onnxruntime-{onnxruntime_version()}:recipe-{RECIPE_VERSION}"
    return cache_dir() / f"centerface-int8-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def cached_fp32_path(fp32_path: Path) -> Path:
    """Where the fp32 graph of ``fp32_path`` with symbolic input dims is cached (whether or not it is there)."""
    key = f"{file_sha256(fp32_path)}:graph-{FP32_GRAPH_VERSION}"
    return cache_dir() / f"centerface-fp32-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def quantize_centerface(fp32_path: Path) -> bytes:
    """The int8 model of ``fp32_path``, built now (the quantization tooling is imported only here)."""
    from efface.detection.quantize import quantize_centerface as quantize

    return quantize(fp32_path)


def int8_weights(fp32_path: Path) -> BuiltModel:
    """The int8 model of the fp32 weights at ``fp32_path``: from the cache, else built (and cached).

    Raises:
        ModelError: the fp32 weights cannot be read or quantized.
    """
    from efface.detection.quantize import RECIPE_VERSION

    path = cached_int8_path(fp32_path)
    fields = {"fp32_sha256": file_sha256(fp32_path), "onnxruntime": onnxruntime_version(), "recipe": RECIPE_VERSION}
    try:
        return _cached(path, fields, lambda: quantize_centerface(fp32_path), what="int8 model")
    except OSError as exc:
        logger.warning(
            "cannot use the model cache %s (%s): building the int8 model in memory for this run; set %s to a "
            "writable folder to build it once",
            path.parent,
            exc,
            CACHE_DIR_ENV,
        )
    return _in_memory(quantize_centerface(fp32_path))


def fp32_graph(fp32_path: Path) -> BuiltModel:
    """The published fp32 weights as a graph with symbolic input dims: from the cache, else rewritten (and
    cached). Its ``sha256`` is the rewritten graph's; the audit log records the published file's.

    Raises:
        ModelError: the fp32 weights cannot be read.
    """
    from efface.detection.centerface import dynamic_model_bytes

    path = cached_fp32_path(fp32_path)
    fields = {"fp32_sha256": file_sha256(fp32_path), "graph": FP32_GRAPH_VERSION}
    try:
        return _cached(path, fields, lambda: dynamic_model_bytes(fp32_path), what="fp32 graph")
    except OSError as exc:
        logger.info("cannot use the model cache %s (%s): rewriting the fp32 graph in memory", path.parent, exc)
    return _in_memory(dynamic_model_bytes(fp32_path))


def _cached(path: Path, fields: dict[str, object], build: Callable[[], bytes], *, what: str) -> BuiltModel:
    """The model cached at ``path`` if it is intact, else ``build``'s, cached there (under the lock, so that
    processes that need it at once build it once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_suffix(".lock")):
        return _read_checked(path, what=what) or _build_into(path, fields, build, what=what)


def _in_memory(model_bytes: bytes) -> BuiltModel:
    return BuiltModel(model_bytes, hashlib.sha256(model_bytes).hexdigest(), None)


def _build_into(path: Path, fields: dict[str, object], build: Callable[[], bytes], *, what: str) -> BuiltModel:
    """Builds the model and caches it at ``path`` (the model first, then the sidecar that vouches for it)."""
    built = _in_memory(build())
    try:
        _write_atomic(path, built.model_bytes)
        _write_atomic(_sidecar(path), json.dumps({"sha256": built.sha256, **fields}, indent=2).encode())
    except OSError as exc:
        logger.warning("cannot write the %s to %s (%s): it is kept in memory for this run", what, path, exc)
        return built
    logger.info("built the CenterFace %s into %s", what, path)
    return replace(built, path=path)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_checked(path: Path, *, what: str) -> BuiltModel | None:
    """The cached model if it is there and has the sha256 its sidecar records; None when it is absent or
    does not match (a warning: it is then rebuilt)."""
    if not path.exists():
        return None
    try:
        expected = json.loads(_sidecar(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("the cached %s %s has no readable record of its sha256 (%s): rebuilding it", what, path, exc)
        return None
    model_bytes = path.read_bytes()
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != expected:
        logger.warning(
            "the cached %s %s is damaged (sha256 %s, expected %s): rebuilding it", what, path, actual, expected
        )
        return None
    return BuiltModel(model_bytes, actual, path)


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
