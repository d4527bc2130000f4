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


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """Power loss, as near as a test gets: SIGKILL to the command and its pool processes at once."""
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the pool processes are gone too before anything is checked
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("processes of the killed group are still alive")


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
        child = subprocess.Popen(
            _command(folder, db), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(rng.uniform(0.0, full_run_s))
        _kill_group(child)
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


@pytest.mark.slow
def test_a_killed_run_resumes_without_anonymizing_a_file_twice(tmp_path: Path, astronaut: np.ndarray) -> None:
    folder = tmp_path / "photos"
    originals = _make_photos(folder, astronaut)
    db = tmp_path / "audit.sqlite3"
    command = [*_command(folder, db), "--jobs", "2"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    assert child.stdout is not None
    for _ in range(4):  # four files audited (one JSON line each), then the power goes
        assert child.stdout.readline(), "the run ended before it could be killed"
    _kill_group(child)
    child.stdout.close()
    for name, content in originals.items():
        now = (folder / name).read_bytes()
        assert now == content or _is_complete_image(folder / name), name
    with AuditStore(f"sqlite:///{db}") as store:
        (first,) = store.list_runs()
        done_first = {
            Path(row.path).name for row in store.list_files(first.run_id) if row.outcome is Outcome.ANONYMIZED
        }
    assert len(done_first) >= 4 and first.status != "completed"

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)

    assert resumed.returncode == 0, resumed.stderr
    with AuditStore(f"sqlite:///{db}") as store:
        second = store.list_runs(limit=1)[0]
        rows = {Path(row.path).name: row for row in store.list_files(second.run_id)}
    skipped = {name for name, row in rows.items() if row.outcome is Outcome.SKIPPED}
    assert skipped >= done_first  # every file the audit knows as done is left alone
    # A temporary output the kill left behind is removed, each with its own row, and none is left.
    leftovers = {name for name, row in rows.items() if row.outcome is Outcome.LEFTOVER_REMOVED}
    assert all(TEMP_MARKER in name for name in leftovers), leftovers
    assert not [p for p in folder.iterdir() if TEMP_MARKER in p.name]
    # The rest are anonymized now; one replaced in the instant before the kill could audit it is done again,
    # and its filled face may no longer be found (no_faces). Every file differs from its original below.
    rest = {row.outcome for name, row in rows.items() if name not in skipped | leftovers}
    assert rest <= {Outcome.ANONYMIZED, Outcome.NO_FACES}
    for name, content in originals.items():
        assert (folder / name).read_bytes() != content and _is_complete_image(folder / name), name

    forced = subprocess.run([*command, "--force"], capture_output=True, text=True, timeout=300, check=False)
    assert forced.returncode == 0, forced.stderr
    with AuditStore(f"sqlite:///{db}") as store:
        third = store.list_runs(limit=1)[0]
        forced_rows = store.list_files(third.run_id)
    # --force processes every file again (none skipped); an already filled face may no longer be detected.
    assert len(forced_rows) == len(originals)
    assert {row.outcome for row in forced_rows} <= {Outcome.ANONYMIZED, Outcome.NO_FACES}


@pytest.mark.slow
def test_ctrl_c_finishes_the_files_in_flight_and_says_how_to_resume(tmp_path: Path, astronaut: np.ndarray) -> None:
    folder = tmp_path / "photos"
    originals = _make_photos(folder, astronaut)
    db = tmp_path / "audit.sqlite3"
    child = subprocess.Popen(
        [*_command(folder, db), "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline(), "the run ended before it could be interrupted"
    os.killpg(child.pid, signal.SIGINT)  # what a terminal sends the whole foreground group on Ctrl-C
    _out, err = child.communicate(timeout=120)

    assert child.returncode == 130, err
    assert "Run the same command again to resume" in err
    assert not [p for p in folder.iterdir() if TEMP_MARKER in p.name], err
    with AuditStore(f"sqlite:///{db}") as store:
        (run,) = store.list_runs()
        rows = store.list_files(run.run_id)
        pending = {Path(str(row.path)).name for row in store.list_files(run.run_id, with_pending=True)}
    assert run.status == "interrupted"
    audited = {Path(row.path).name for row in rows if row.outcome is not Outcome.ERROR}
    # A pool process still starting when the signal landed (before it ignores SIGINT) dies of it: its files
    # get a WorkerCrashedError row and are left as they were.
    failed = {Path(row.path).name for row in rows if row.outcome is Outcome.ERROR}
    assert {row.error_class for row in rows if row.outcome is Outcome.ERROR} <= {"WorkerCrashedError"}
    assert 1 <= len(audited) < len(originals)
    for name, content in originals.items():
        # Audited files are done; a file replaced in the instant the signal landed, between its replace and its
        # row, has its pending row (the next run records it); the others (failed ones too) were never touched.
        is_changed = (folder / name).read_bytes() != content
        assert not (is_changed and name in failed - audited), name
        assert is_changed == (name in audited) or (is_changed and name in pending), name
