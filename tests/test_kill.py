"""A real ``efface anonymize`` child process is SIGKILLed at random moments: no file is ever lost or
half-written, and the next run cleans up and finishes the job."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.media.atomic import TEMP_MARKER
from efface.records import Outcome

KILL_ITERATIONS = int(os.environ.get("EFFACE_KILL_ITERATIONS", "30"))
FORMATS = ("jpg", "png", "webp", "tiff", "bmp")


def _make_photos(folder: Path, astronaut: np.ndarray) -> dict[str, bytes]:
    folder.mkdir()
    rng = np.random.default_rng(7)
    for index in range(10):
        canvas = np.full((768, 1024, 3), 180, np.uint8)
        canvas[:] = rng.integers(100, 220, 3, dtype=np.uint8)
        y, x = (index * 37) % 250, (index * 91) % 500
        canvas[y : y + 512, x : x + 512] = astronaut
        name = f"photo_{index:02d}.{FORMATS[index % len(FORMATS)]}"
        Image.fromarray(canvas).save(folder / name)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _command(folder: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "efface", "anonymize", str(folder), "--db", f"sqlite:///{db}", "--json"]


def _is_complete_image(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
            return image.size == (1024, 768)
    except (OSError, SyntaxError, ValueError):
        return False


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts_a_file(tmp_path: Path, astronaut: np.ndarray) -> None:
    folder = tmp_path / "photos"
    originals = _make_photos(folder, astronaut)
    db = tmp_path / "audit.sqlite3"
    # One uninterrupted run (on a copy) tells how long a whole run takes, so kills land all over it.
    probe = tmp_path / "probe"
    probe.mkdir()
    for name, content in originals.items():
        (probe / name).write_bytes(content)
    t0 = time.monotonic()
    subprocess.run(_command(probe, tmp_path / "probe.sqlite3"), check=True, capture_output=True, timeout=300)
    full_run_s = time.monotonic() - t0

    rng = random.Random(1234)
    states: list[int] = []
    for _iteration in range(KILL_ITERATIONS):
        for name, content in originals.items():  # start every iteration from the originals again
            (folder / name).write_bytes(content)
        child = subprocess.Popen(_command(folder, db), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, full_run_s))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        anonymized = 0
        for name, content in originals.items():
            now = (folder / name).read_bytes()
            if now != content:
                assert _is_complete_image(folder / name), f"{name} is neither the original nor a valid image"
                anonymized += 1
        states.append(anonymized)

    # The kills must have landed both before and in the middle of the work, or the test proved little.
    assert min(states) < len(originals) and max(states) > 0, states
    assert len(set(states)) >= 3, states
    print(f"{KILL_ITERATIONS} kills survived; files anonymized at each kill: {states}")  # noqa: T201

    leftovers_before = [p for p in folder.iterdir() if TEMP_MARKER in p.name]
    final = subprocess.run(_command(folder, db), capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr
    assert not [p for p in folder.iterdir() if TEMP_MARKER in p.name]
    for name, content in originals.items():
        path = folder / name
        assert path.read_bytes() != content, f"{name} was never anonymized"
        assert _is_complete_image(path)
        with Image.open(path) as image, Image.open(probe / name) as reference:
            assert image.format == reference.format

    with AuditStore(f"sqlite:///{db}") as store:
        (last,) = store.list_runs(limit=1)
        files = store.list_files(last.run_id)
    removed = [row for row in files if row.outcome is Outcome.LEFTOVER_REMOVED]
    assert len(removed) == len(leftovers_before)
    assert last.status == "completed"
