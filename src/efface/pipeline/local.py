"""Runs a planned batch on this machine: removes leftovers of interrupted runs, anonymizes every file
through ``anonymize_file``, and writes one audit row per file as it goes.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from efface import __version__
from efface.audit import AuditStore
from efface.pipeline.core import FileJob, Worker, anonymize_file
from efface.pipeline.jobs import Plan
from efface.records import AnonymizationResult, Outcome, RunInfo, RunStatus, RunSummary, WriteMode

__all__ = ["new_run_info", "remove_leftover", "run_plan"]

logger = logging.getLogger(__name__)

ResultCallback = Callable[[AnonymizationResult], None]
# A video's progress: its path, frames done, frames expected (None where unknown).
FrameProgress = Callable[[Path, int, int | None], None]


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


def _run_one(job: FileJob, *, worker: Worker, on_frame: FrameProgress | None) -> AnonymizationResult:
    if on_frame is None:
        return anonymize_file(job, worker=worker)
    return anonymize_file(job, worker=worker, on_frame=lambda done, total: on_frame(job.source, done, total))


def _in_order(
    jobs: Sequence[FileJob], *, worker: Worker, workers: int, on_frame: FrameProgress | None = None
) -> Iterator[AnonymizationResult]:
    """Results of ``anonymize_file`` in job order, with at most ``2 * workers`` jobs submitted at a time, so
    an interruption (Ctrl-C, a failing audit write) stops after the files already in flight."""
    if workers <= 1:
        for job in jobs:
            yield _run_one(job, worker=worker, on_frame=on_frame)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="efface")
    pending: deque[Future[AnonymizationResult]] = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(_run_one, job, worker=worker, on_frame=on_frame))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_plan(
    plan: Plan,
    *,
    worker: Worker,
    store: AuditStore,
    run: RunInfo,
    on_result: ResultCallback | None = None,
    workers: int = 1,
    on_frame: FrameProgress | None = None,
) -> RunSummary:
    """Executes a plan, auditing every file.

    Args:
        plan: what to do.
        worker: detector, anonymizer and codec options.
        store: the audit log; the run is started, every file recorded, and the run finished.
        run: this run's audit record.
        on_result: called after each file (for progress display).
        workers: files in flight at once (threads; the model releases the GIL while it runs).
        on_frame: called after each frame of a video (for progress display), from the worker threads.

    Returns:
        The run's totals. An interrupted run (Ctrl-C) is finished as ``interrupted`` and re-raised.
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

    try:
        for leftover in plan.leftovers:
            record(remove_leftover(leftover, mode=plan.mode))
        for failure in plan.failures:
            record(failure)
        # Several files in flight: while one waits on the model (which releases the GIL), another is decoded,
        # fused or encoded. Each file is still replaced atomically, and rows are recorded in plan order.
        for result in _in_order(plan.jobs, worker=worker, workers=workers, on_frame=on_frame):
            record(result)
    except BaseException:
        store.finish_run(run.run_id, summary(RunStatus.INTERRUPTED))
        raise
    result = summary(RunStatus.FAILED if files_failed else RunStatus.COMPLETED)
    store.finish_run(run.run_id, result)
    return result
