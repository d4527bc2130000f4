"""deface in its own virtual environment, for side-by-side benchmarks (never imported by efface)."""

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
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"deface=={DEFACE_VERSION}"], check=True)
    return python


def deface_executable() -> Path:
    deface_python()
    return DEFACE_VENV / "bin" / "deface"
