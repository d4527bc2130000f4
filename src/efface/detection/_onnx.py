"""onnxruntime plumbing shared by the ONNX detectors: explicit provider selection and weight hashing."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

# onnxruntime otherwise writes a telemetry store for every process into ~/.cache/Microsoft/DeveloperTools/,
# queued for upload: efface promises to write nothing but the anonymized files and its audit log. The switch is
# read when onnxruntime is imported and only "1" turns it off (an inherited "0" or "false" would let it write);
# ``disable_telemetry_events()`` after the import stops the events but not the store. So it is set, not
# defaulted, before the import.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import onnxruntime as ort  # after the telemetry switch above

from efface import digests
from efface.errors import ConfigurationError, ModelError

__all__ = [
    "OnnxSession",
    "OnnxValueInfo",
    "check_detector_settings",
    "create_session",
    "file_sha256",
    "onnxruntime_version",
    "run_options_for",
]

# A run on an input of more pixels than this hands its arena memory back when it ends: one large image must
# not leave the process holding gigabytes (small runs keep theirs; reusing it is what the arena is for).
_RELEASE_ABOVE_PIXELS = 2_000_000


# onnxruntime ships no type information: these protocols state the part of its API the detectors use.
class OnnxValueInfo(Protocol):
    """A graph input or output (``onnxruntime.NodeArg``)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[int | str | None]:
        """Per dimension: its fixed size, or its symbolic name (or None) where the size is dynamic."""
        ...


class OnnxSession(Protocol):
    """A loaded model (``onnxruntime.InferenceSession``). The detectors' models take and give float32."""

    def get_inputs(self) -> Sequence[OnnxValueInfo]: ...

    def get_outputs(self) -> Sequence[OnnxValueInfo]: ...

    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: Mapping[str, npt.NDArray[np.float32]],
        run_options: object = None,
    ) -> list[npt.NDArray[np.float32]]:
        """The outputs named (all, for None), in that order (``run_options``: an ``onnxruntime.RunOptions``)."""
        ...


@cache
def _release_arena() -> object:
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def run_options_for(*, input_pixels: int) -> object:
    """The ``RunOptions`` for a run on ``input_pixels`` (batch x height x width): None for a small one; for a
    large one, give the CPU arena's memory back when the run ends."""
    return _release_arena() if input_pixels > _RELEASE_ABOVE_PIXELS else None


@cache
def _register_cpu_arena() -> None:
    """One CPU arena for every session of the process, grown by what is asked, not to the next power of two.

    onnxruntime's default arena doubles each extension: a 2.3 GB pass could reserve 4 GB, kept for good.
    """
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # max_mem 0: no cap; extend strategy 1: kSameAsRequested; -1: onnxruntime's defaults for the rest.
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 1, -1, -1))


def onnxruntime_version() -> str:
    """The installed onnxruntime's version (what decides, with the recipe, the bytes of a quantized model)."""
    return str(ort.__version__)


@cache
def file_sha256(path: Path) -> str:
    """sha256 of a weights file (cached per path: hashed once per process)."""
    return digests.file_sha256(path)


def create_session(
    model: bytes | Path, providers: Sequence[str], *, intra_op_threads: int | None = None
) -> OnnxSession:
    """Builds an onnxruntime session on explicitly chosen execution providers.

    Args:
        model: the ONNX model, serialized or as a file.
        providers: execution providers, in order of preference.
        intra_op_threads: threads one inference may use; None lets onnxruntime use every core.

    Raises:
        ConfigurationError: a requested provider is not available; the message lists those that are.
        ModelError: onnxruntime cannot load the model.
    """
    available = ort.get_available_providers()
    missing = [name for name in providers if name not in available]
    if not providers or missing:
        hint = ""
        if "CUDAExecutionProvider" in missing:
            hint = " (CUDA needs an NVIDIA GPU, its driver and onnxruntime-gpu in place of onnxruntime)"
        raise ConfigurationError(
            f"execution provider(s) {missing or list(providers)} not available{hint}; available: {', '.join(available)}"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's warnings are about the published graph, not the user
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory pattern plans one block per input shape and keeps it: every new photo size would add one.
    options.enable_mem_pattern = False
    _register_cpu_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    try:
        source = model if isinstance(model, bytes) else str(model)
        session: OnnxSession = ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own untyped exception classes
        raise ModelError(f"onnxruntime cannot load the model: {exc}") from exc
    return session


def check_detector_settings(*, score_threshold: float, nms_iou: float, input_scale: float) -> None:
    """Refuses thresholds and scales no detector can work with.

    Raises:
        ConfigurationError: naming the setting, the allowed range and the value given.
    """
    if not 0.0 < score_threshold < 1.0:
        raise ConfigurationError(f"score_threshold must be in (0, 1), got {score_threshold}")
    if not 0.0 < nms_iou <= 1.0:
        raise ConfigurationError(f"nms_iou must be in (0, 1], got {nms_iou}")
    if not input_scale > 0:
        raise ConfigurationError(f"input_scale must be positive, got {input_scale}")
