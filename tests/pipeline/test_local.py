"""run_plan: leftovers, failures and files audited in plan order, sequentially or with files in flight."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.detection import StaticDetector
from efface.media.atomic import temp_path_for
from efface.media.images import CodecOptions
from efface.pipeline import Worker, plan_jobs
from efface.pipeline.local import new_run_info, run_plan
from efface.pipeline.pool import InProcess, ProcessPool
from efface.records import BBox, Face, Outcome, RunStatus, TransformSpec
from efface.transforms import Anonymizer


def _static_worker() -> Worker:
    """A worker that 'finds' one face everywhere; module level, so pool processes can build it."""
    return Worker(
        detector=StaticDetector((Face(BBox(10, 10, 40, 40), 0.9),)),
        anonymizer=Anonymizer(TransformSpec()),
        codec=CodecOptions(),
    )


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_file_is_audited_in_plan_order(tmp_path: Path, sqlite_url: str, workers: int) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(9):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    temp_path_for(folder / "0.png").write_bytes(b"left by a killed run")
    worker = _static_worker()
    plan = plan_jobs([folder])
    seen = []
    with AuditStore(sqlite_url) as store:
        run = new_run_info(command="anonymize", mode=plan.mode, worker=worker, settings={})
        executor = InProcess(worker) if workers == 1 else ProcessPool(_static_worker, processes=workers)
        with contextlib.closing(executor):
            summary = run_plan(plan.items(), executor=executor, store=store, run=run, on_result=seen.append)
        rows = store.list_files(run.run_id)
    assert [row.outcome for row in rows[:1]] == [Outcome.LEFTOVER_REMOVED]
    assert [Path(row.path) for row in rows[1:]] == [job.source for job in plan.jobs()]
    assert [r.path for r in seen] == [Path(row.path) for row in rows]
    assert (summary.files_total, summary.files_failed, summary.status) == (10, 1, RunStatus.FAILED)
    assert summary.faces_anonymized == 9
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
