"""``efface audit prune`` from another process while a real ``efface anonymize`` runs: the running run, and every
file it records after the prune, stays in the audit log, and the chain verifies. Real SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.records import RunStatus

FILES = 60


def efface_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "efface", *args]


@pytest.mark.slow
def test_a_prune_during_a_run_keeps_the_run_and_every_file(tmp_path: Path, astronaut: np.ndarray, db_url: str) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(FILES):
        canvas = np.full((360, 480, 3), 90 + index, np.uint8)
        canvas[40:296, 100:356] = astronaut[::2, ::2]
        Image.fromarray(canvas).save(folder / f"photo_{index:03d}.png")
    command = efface_command("anonymize", str(folder), "--db", db_url, "--jobs", "1", "--json")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        for _ in range(2):  # two files audited: the run is going
            assert child.stdout.readline(), "the run ended before the prune"
        prune = subprocess.run(
            efface_command("audit", "prune", "--db", db_url, "--older-than", "0d", "--yes"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        is_running = child.poll() is None
        _rest, errors = child.communicate(timeout=300)
    assert is_running, "the run finished before the prune did: it proves nothing"
    assert prune.returncode == 0, prune.stderr
    assert "removed 0 runs, 0 files" in prune.stdout
    assert child.returncode == 0, errors

    with AuditStore(db_url) as store:
        (run,) = store.list_runs()
        recorded = sorted(Path(str(row.path)).name for row in store.list_files(run.run_id))
        assert run.status is RunStatus.COMPLETED and run.files_total == FILES
        assert recorded == sorted(path.name for path in folder.iterdir())
        report = store.verify()
        assert report.is_intact, report.breaks
        # Every file row goes, a replaced file's pending row (written before its replace) with it.
        rows = len(store.list_files(run.run_id, with_pending=True))

    # Finished, the run is old enough for the same prune.
    after = subprocess.run(
        efface_command("audit", "prune", "--db", db_url, "--older-than", "0d", "--yes"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert after.returncode == 0, after.stderr
    assert f"removed 1 runs, {rows} files" in after.stdout
    with AuditStore(db_url) as store:
        assert store.list_runs() == []
        assert store.verify().is_intact
