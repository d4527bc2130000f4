"""Runs a planned batch: removes leftovers of interrupted runs, anonymizes every file through
``anonymize_file`` on an executor (this process, a process pool, a Ray cluster), and writes one audit row per
file as it goes. The plan is consumed as it is walked, so a run over millions of files starts at once and
holds only the files in flight.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from efface import __version__
from efface.audit import AuditStore
from efface.pipeline.core import FileJob, Worker
from efface.pipeline.jobs import Leftover, PlanItem
from efface.pipeline.pool import Executor
from efface.records import AnonymizationResult, Outcome, RunInfo, RunStatus, RunSummary, WriteMode

__all__ = ["new_run_info", "remove_leftover", "run_plan"]

logger = logging.getLogger(__name__)

ResultCallback = Callable[[AnonymizationResult], None]


def new_run_info(*, command: str, mode: WriteMode, worker: Worker, settings: dict[str, object]) -> RunInfo:
    """A fresh run record for the audit log."""
    return RunInfo(
        run_id=uuid.uuid4().hex,
        started_at=datetime.now(UTC),
        efface_version=__version__,
        command=command,
        mode=mode,
        model_name=worker.detector.name,
        model_sha256=worker.detector.weights_sha256,
        settings=settings,
        hostname=socket.gethostname(),
    )


def remove_leftover(path: Path, *, mode: WriteMode) -> AnonymizationResult:
    """Deletes a temporary file of an interrupted run and says so, for the audit log."""
    started_at = datetime.now(UTC)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        return AnonymizationResult(
            path=path,
            outcome=Outcome.ERROR,
            mode=mode,
            started_at=started_at,
            duration_s=0.0,
            error_class="OutputError",
            error_message=f"cannot remove leftover temporary file: {exc.strerror or exc}",
        )
    logger.info("removed leftover temporary file %s", path)
    return AnonymizationResult(
        path=path, outcome=Outcome.LEFTOVER_REMOVED, mode=mode, started_at=started_at, duration_s=0.0
    )


def _with_done_outputs(job: FileJob, store: AuditStore) -> FileJob:
    if job.destination is None:
        return job
    return dataclasses.replace(job, done_sha256=store.output_hashes(job.source))


def run_plan(
    items: Iterable[PlanItem],
    *,
    executor: Executor,
    store: AuditStore,
    run: RunInfo,
    on_result: ResultCallback | None = None,
    is_forced: bool = False,
) -> RunSummary:
    """Executes a plan, auditing every file.

    Args:
        items: what to do, as a plan's ``items()`` yields it (walked as the run goes).
        executor: where files are anonymized (this process, a process pool, a Ray cluster).
        store: the audit log; the run is started, every file recorded, and the run finished.
        run: this run's audit record.
        on_result: called after each file (for progress display).
        is_forced: anonymize every file, even one that hashes to an output an earlier run recorded for it
            (by default such a file is done and is skipped: re-running an interrupted command resumes it).

    Returns:
        The run's totals. An interrupted run (Ctrl-C) records the files that were in flight once they
        finish, is finished as ``interrupted`` and re-raised.
    """
    t0 = time.perf_counter()
    files_total = files_failed = faces_detected = faces_anonymized = 0
    store.start_run(run)

    def record(result: AnonymizationResult) -> None:
        nonlocal files_total, files_failed, faces_detected, faces_anonymized
        store.record_file(run.run_id, result)
        if result.outcome is not Outcome.LEFTOVER_REMOVED:
            files_total += 1
        files_failed += result.outcome is Outcome.ERROR
        faces_detected += result.faces_detected
        faces_anonymized += result.faces_anonymized
        if on_result is not None:
            on_result(result)

    def summary(status: RunStatus) -> RunSummary:
        return RunSummary(
            status=status,
            finished_at=datetime.now(UTC),
            files_total=files_total,
            files_failed=files_failed,
            faces_detected=faces_detected,
            faces_anonymized=faces_anonymized,
            duration_s=time.perf_counter() - t0,
        )

    def jobs() -> Iterator[FileJob]:
        # Leftovers and refusals are audited as the walk meets them; files go to the executor, whose results
        # are recorded in plan order whatever order the files finish in.
        for item in items:
            if isinstance(item, Leftover):
                record(remove_leftover(item.path, mode=run.mode))
            elif isinstance(item, AnonymizationResult):
                record(item)
            else:
                yield item if is_forced else _with_done_outputs(item, store)

    try:
        for result in executor.results(jobs()):
            record(result)
    except BaseException:
        # The files in flight finish (each is replaced atomically either way) and are audited, so that a
        # resumed run knows them.
        for result in executor.drain():
            record(result)
        store.finish_run(run.run_id, summary(RunStatus.INTERRUPTED))
        raise
    result = summary(RunStatus.FAILED if files_failed else RunStatus.COMPLETED)
    store.finish_run(run.run_id, result)
    return result
