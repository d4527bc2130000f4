"""An audited run, from start to finish: the one owner of the run's lifecycle, and the batch runner on top of it.

``AuditedRun`` starts a run in the audit log, records every result as it comes (keeping the totals) and finishes
the run with the status its results and its ending call for: ``completed``, ``failed`` when any file failed,
``interrupted`` when it ended by an exception (Ctrl-C, a fatal error). The CLI's batches, the Ray driver, the HTTP
service (one run per server process) and the library's ``Session`` all use it, so a run is started, totalled
and finished in one way.

``run_plan`` consumes a plan: it removes leftovers of interrupted runs, sends files to an executor (this process,
a process pool, a Ray cluster), and records one audit row per file as it goes, in plan order. The plan is walked
as the run goes, so a run over millions of files starts at once and holds only the files in flight.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from efface import __version__
from efface.audit import AuditStore
from efface.detection.models import DetectionModels
from efface.errors import OutputError
from efface.media.atomic import remove_if_leftover
from efface.pipeline import results
from efface.pipeline.build import settings_sha256
from efface.pipeline.core import FileJob
from efface.pipeline.jobs import Leftover, PlanItem
from efface.pipeline.pool import Executor
from efface.records import AnonymizationResult, Outcome, RunInfo, RunStatus, RunSummary, WriteMode

__all__ = ["AuditedRun", "ResultCallback", "remove_leftover", "run_plan"]

logger = logging.getLogger(__name__)

ResultCallback = Callable[[AnonymizationResult], None]

# Rows of files that are not media written in one transaction.
_NOT_MEDIA_BATCH = 256


class AuditedRun:
    """One run in the audit log: started on entry, every result recorded, finished on exit.

    Safe to record from several threads (the HTTP service records from its database threads).

    Args:
        store: the audit log.
        info: the run's record (see ``AuditedRun.begin`` for one made from the models and settings).
        on_result: called after each recorded result (progress, output).
    """

    def __init__(self, store: AuditStore, info: RunInfo, *, on_result: ResultCallback | None = None) -> None:
        self.store = store
        self.info = info
        self._on_result = on_result
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self.files_total = self.files_failed = self.faces_detected = self.faces_anonymized = 0
        self.summary: RunSummary | None = None
        self._is_started = False

    @classmethod
    def begin(
        cls,
        store: AuditStore,
        *,
        command: str,
        mode: WriteMode,
        models: DetectionModels,
        settings: dict[str, object],
        on_result: ResultCallback | None = None,
    ) -> Self:
        """A run of ``command`` with these models and audited settings, started in the audit log.

        Raises:
            AuditError: the run cannot be recorded.
        """
        info = RunInfo(
            run_id=uuid.uuid4().hex,
            started_at=datetime.now(UTC),
            efface_version=__version__,
            command=command,
            mode=mode,
            model_name=models.name,
            model_sha256=models.weights_sha256,
            settings=settings,
            hostname=socket.gethostname(),
            settings_sha256=settings_sha256(settings, model_sha256=models.weights_sha256),
        )
        return cls(store, info, on_result=on_result).start()

    @property
    def run_id(self) -> str:
        return self.info.run_id

    def start(self) -> Self:
        """Records the run as ``running`` (once; ``begin`` has done it already)."""
        if not self._is_started:
            self.store.start_run(self.info)
            self._t0 = time.perf_counter()
            self._is_started = True
        return self

    def record(self, result: AnonymizationResult) -> None:
        """Writes one result's audit row, committed at once, and counts it.

        Raises:
            AuditError: the row cannot be written (the result is not counted).
        """
        self.store.record_file(self.info.run_id, result)
        self._count([result])

    def record_many(self, results: list[AnonymizationResult]) -> None:
        """Writes several results' audit rows in one transaction (all or none), and counts them.

        Raises:
            AuditError: the rows cannot be written (none is counted).
        """
        self.store.record_files(self.info.run_id, results)
        self._count(results)

    def _count(self, results: list[AnonymizationResult]) -> None:
        with self._lock:
            for result in results:
                if result.outcome.is_counted:
                    self.files_total += 1
                self.files_failed += result.outcome is Outcome.ERROR
                self.faces_detected += result.faces_detected
                self.faces_anonymized += result.faces_anonymized
        if self._on_result is not None:
            for result in results:
                self._on_result(result)

    def finish(self, *, is_interrupted: bool = False, is_clean_stop: bool = False) -> RunSummary:
        """Stores the run's status and totals (once; later calls return the same summary).

        Args:
            is_interrupted: the run ended by an exception: ``interrupted``.
            is_clean_stop: a server stopped as asked (Ctrl-C, SIGTERM) after answering every request it took:
                ``completed`` whatever the requests' outcomes, which their own rows hold (a refused or failed
                request is no failed run).

        Raises:
            AuditError: the run cannot be finished in the audit log.
        """
        if self.summary is not None:
            return self.summary
        with self._lock:
            if is_interrupted:
                status = RunStatus.INTERRUPTED
            elif is_clean_stop:
                status = RunStatus.COMPLETED
            else:
                status = RunStatus.FAILED if self.files_failed else RunStatus.COMPLETED
            summary = RunSummary(
                status=status,
                finished_at=datetime.now(UTC),
                files_total=self.files_total,
                files_failed=self.files_failed,
                faces_detected=self.faces_detected,
                faces_anonymized=self.faces_anonymized,
                duration_s=time.perf_counter() - self._t0,
            )
        self.store.finish_run(self.info.run_id, summary)
        self.summary = summary
        return summary

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            self.finish(is_interrupted=exc is not None)
        except Exception:
            if exc is None:
                raise
            # The run already ends by an exception; that one is the one to report.
            logger.exception("run %s could not be finished in the audit log", self.info.run_id)


def remove_leftover(path: Path, *, mode: WriteMode) -> AnonymizationResult | None:
    """Deletes a temporary file of an interrupted run and says so, for the audit log; None when it is the
    live temporary file of another run (left alone) or is already gone."""
    started_at = datetime.now(UTC)
    try:
        if not remove_if_leftover(path):
            logger.info("left temporary file %s alone: a live run is writing it, or it is gone", path)
            return None
    except OSError as exc:
        error = OutputError(f"cannot remove leftover temporary file: {exc.strerror or exc}", path=path)
        return results.failed(path, error, mode=mode, started_at=started_at)
    logger.info("removed leftover temporary file %s", path)
    return results.leftover_removed(path, mode=mode, started_at=started_at)


def _with_done_outputs(job: FileJob, run: AuditedRun) -> FileJob:
    """The job with the outputs that earlier runs with this run's settings wrote at its target."""
    target, key = job.target, run.info.settings_sha256
    if target is None or key is None:
        return job
    return dataclasses.replace(
        job, done_sha256=run.store.output_hashes(job.source, output_path=target, settings_sha256=key)
    )


def run_plan(items: Iterable[PlanItem], *, executor: Executor, run: AuditedRun, is_forced: bool = False) -> AuditedRun:
    """Executes a plan, auditing every file in ``run`` (which the caller finishes).

    Args:
        items: what to do, as a plan's ``items()`` yields it (walked as the run goes).
        executor: where files are anonymized (this process, a process pool, a Ray cluster).
        run: the started run every result is recorded in.
        is_forced: anonymize every file, even one that hashes to an output an earlier run with the same settings
            recorded for it (by default such a file is done and is skipped: re-running an interrupted command
            resumes it; a dry run skips the same files).

    Returns:
        ``run``. On an interruption (Ctrl-C) the files that were in flight are recorded once they finish, and
        the exception is re-raised (``AuditedRun`` then finishes the run as ``interrupted``).
    """

    # Files that are not media are audited in batches: a folder of sidecar files would otherwise cost one
    # commit each (14 ms on SQLite, against 0.9 ms a row in batches of 256).
    not_media: list[AnonymizationResult] = []

    def flush() -> None:
        if not_media:
            run.record_many(list(not_media))
            not_media.clear()

    def jobs() -> Iterator[FileJob]:
        # Leftovers and refusals are audited as the walk meets them; files go to the executor, whose results
        # are recorded in plan order whatever order the files finish in.
        for item in items:
            if isinstance(item, AnonymizationResult) and item.outcome is Outcome.NOT_MEDIA:
                not_media.append(item)
                if len(not_media) >= _NOT_MEDIA_BATCH:
                    flush()
                continue
            flush()
            if isinstance(item, Leftover):
                if (removed := remove_leftover(item.path, mode=run.info.mode)) is not None:
                    run.record(removed)
            elif isinstance(item, AnonymizationResult):
                run.record(item)
            else:
                yield item if is_forced else _with_done_outputs(item, run)
        flush()

    try:
        for result in executor.results(jobs()):
            run.record(result)
    except BaseException:
        # The files in flight finish (each is replaced atomically either way) and are audited, so that a
        # resumed run knows them.
        for result in executor.drain():
            run.record(result)
        flush()
        raise
    return run
