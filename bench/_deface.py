"""deface in its own virtual environment, for side-by-side benchmarks (never imported by efface).

deface runs its network on onnxruntime when ``onnx`` and ``onnxruntime`` import, and falls back to OpenCV's
DNN module otherwise. Its fallback's speed swings with the OpenCV release (seen here on 8 WIDER photos:
opencv-python 4.14 about 25x slower than 5.1), so the venv gets onnxruntime, deface's own fast CPU path: the
benchmarks compare efface with deface at its best, and with the same inference runtime as efface.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFACE_VENV = ROOT / ".bench-venvs" / "deface"
DEFACE_VERSION = "1.5.0"


def deface_python() -> Path:
    """The interpreter of a venv holding deface at its pinned version, created on first use."""
    python = DEFACE_VENV / "bin" / "python"
    if not (DEFACE_VENV / "bin" / "deface").exists():
        subprocess.run([sys.executable, "-m", "venv", str(DEFACE_VENV)], check=True)
    has_runtime = subprocess.run([str(python), "-c", "import deface, onnx, onnxruntime"], capture_output=True)
    if has_runtime.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"deface=={DEFACE_VERSION}", "onnx", "onnxruntime"],
            check=True,
        )
    return python


def deface_executable() -> Path:
    deface_python()
    return DEFACE_VENV / "bin" / "deface"
