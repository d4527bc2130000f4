"""An audited run, from start to finish: the one owner of the run's lifecycle, and the batch runner on top of it.

``AuditedRun`` starts a run in the audit log, records every result as it comes (keeping the totals) and finishes
the run with the status its results and its ending call for: ``completed``, ``failed`` when any file failed,
``interrupted`` when it ended by an exception (Ctrl-C, a fatal error). The CLI's batches, the Ray driver, the HTTP
service (one run per server process) and the library's ``Session`` all use it, so a run is started, totalled
and finished in one way.

``run_plan`` consumes a plan: it removes leftovers of interrupted runs, sends files to an executor (this process,
a process pool, a Ray cluster), and records one audit row per file as it goes, in plan order. The plan is walked
as the run goes, so a run over millions of files starts at once and holds only the files in flight.

No file is replaced without its record. The executor stages each output beside its destination; the run writes
a ``pending`` row (the result, with the output's sha256 and the source's), swaps the output in, then writes the
file's own row. A pending row that cannot be written leaves the file as it was and stops the run, naming the
file; a file replaced whose own row cannot be written is named (``anonymized but not recorded``) and stops the
run. The next run that meets the file finds the pending row unsettled, looks at the file on disk and records,
in the run that left it, what it finds: the planned output (done) or not (the file is processed again).
"""

from __future__ import annotations

import dataclasses
import functools
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
from efface.audit import AuditStore, StoredFile
from efface.detection.models import DetectionModels
from efface.digests import file_sha256
from efface.errors import AuditError, EffaceError, OutputError, VersionsLeftError
from efface.media.atomic import claim, discard, remove_if_leftover
from efface.pipeline import results
from efface.pipeline.build import settings_sha256
from efface.pipeline.core import FileJob, StagedResult
from efface.pipeline.jobs import Leftover, PlanItem
from efface.pipeline.objects import ObjectJob, delete_earlier_versions, discard_upload, push, settle_object
from efface.pipeline.pool import Executor, Job
from efface.records import AnonymizationResult, Outcome, RunInfo, RunStatus, RunSummary, WriteMode
from efface.text import path_text

__all__ = ["AuditedRun", "ResultCallback", "remove_leftover", "run_plan", "settle_pending"]

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

    def count_recorded(self) -> None:
        """Counts, for ``finish``, the rows that other processes wrote into this run (the actors of a Ray Data
        stage, ``efface.ray_data``), read back from the audit log.

        Raises:
            AuditError: the rows cannot be read.
        """
        self._tally(self.store.list_files(self.info.run_id))

    def _count(self, results: list[AnonymizationResult]) -> None:
        self._tally(results)
        if self._on_result is not None:
            for result in results:
                self._on_result(result)

    def _tally(self, rows: Iterable[AnonymizationResult | StoredFile]) -> None:
        with self._lock:
            for row in rows:
                if row.outcome.is_counted:
                    self.files_total += 1
                self.files_failed += row.outcome is Outcome.ERROR
                self.faces_detected += row.faces_detected
                self.faces_anonymized += row.faces_anonymized

    def commit(self, done: StagedResult) -> None:
        """Records a file's result; a staged output is swapped in only between a ``pending`` row and that record.
        A shard's member rows are written with its own row, in one transaction.

        The staged file's lock is taken again first and held until the swap, so that no sweep of leftovers
        deletes it meanwhile; one that a sweep deleted before (nothing held it) fails the file, left as it was.

        Raises:
            AuditError: the pending row cannot be written (the output is discarded, the file left as it was), or
                the file was replaced and its record cannot be written (the next run records it). The message
                names the file and says which.
        """
        if done.upload is not None:
            self._commit_upload(done)
            return
        staged = done.staged
        if staged is None:
            self._record_done(done)
            return
        try:
            claimed = claim(staged)
        except OutputError as exc:
            self.record(done.failed(exc))
            return
        try:
            try:
                self.store.record_files(self.info.run_id, _pending_rows(done))  # a shard's members' too
            except AuditError as exc:
                message = f"not replaced, cannot record it: {path_text(staged.target)}; {exc.message}"
                raise AuditError(message) from exc
            try:
                claimed.commit()  # the changed-source check, then every name swapped
            except EffaceError as exc:
                self._record_not_replaced(done, exc)
                return
        finally:
            claimed.discard()  # nothing left to delete once swapped in
        try:
            self._record_done(done)
        except AuditError as exc:
            message = f"anonymized but not recorded: {path_text(staged.target)}; the next run records it"
            raise AuditError(message) from exc

    def _record_not_replaced(self, done: StagedResult, exc: EffaceError) -> None:
        """After the pending rows, the rows that settle them: the file failed, a shard's members (a table's cells)
        not replaced, uncounted."""
        if done.members:
            self.store.record_files(self.info.run_id, [_not_replaced(m, exc) for m in done.members])
        self.record(done.failed(exc))

    def _commit_upload(self, done: StagedResult) -> None:
        """``commit`` for an object: the pending rows, the conditional write and the clean-up of the versions that
        hold the original (``objects.push``), then the object's rows; its local files are deleted whatever happens.
        """
        upload = done.upload
        if upload is None:  # pragma: no cover - called for uploads only
            raise ValueError("not an object's result")
        try:
            try:
                self.store.record_files(self.info.run_id, _pending_rows(done))
            except AuditError as exc:
                raise AuditError(f"not written, cannot record it: {upload.target}; {exc.message}") from exc
            try:
                facts = push(upload)
            except VersionsLeftError as exc:
                # Written: the members are anonymized in place, the object fails aloud for its old versions.
                self.record_many([*done.members, done.failed(exc)])
                return
            except EffaceError as exc:
                self._record_not_replaced(done, exc)
                return
        finally:
            discard_upload(done)
        result = dataclasses.replace(done.result, details={**done.result.details, **facts})
        try:
            self._record_done(dataclasses.replace(done, result=result))
        except AuditError as exc:
            raise AuditError(f"anonymized but not recorded: {upload.target}; the next run records it") from exc

    def _record_done(self, done: StagedResult) -> None:
        if done.members:  # a shard: its members' rows and its own, all or none
            self.record_many(done.rows)
        else:
            self.record(done.result)

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
        except Exception as finish_error:
            if exc is None:
                raise
            # The run already ends by an exception; that one is the one to report.
            # One line, no traceback: the cause is the audit log's, already said by the error being reported.
            logger.warning("run %s could not be finished in the audit log: %s", self.info.run_id, finish_error)


# What a pending row adds to the result's details: the outcome it will have once replaced, and the source's hash.
_INTENDED_OUTCOME = "intended_outcome"
_SOURCE_SHA256 = "source_sha256"


_MEMBERS = "pending_members"


def _pending(done: StagedResult) -> AnonymizationResult:
    """The row written before a replace: the result as it will be, outcome ``pending`` (a shard's lists the paths
    of its members' pending rows, which its settlement settles too)."""
    result = done.result
    details = {**result.details, _INTENDED_OUTCOME: result.outcome.value, _SOURCE_SHA256: done.source_sha256}
    if done.members:
        details[_MEMBERS] = [path_text(member.path) for member in done.members if member.path is not None]
    return dataclasses.replace(result, outcome=Outcome.PENDING, details=details)


def _pending_rows(done: StagedResult) -> list[AnonymizationResult]:
    """The file's pending row, and a shard's members' as they will be: a run lost after the swap leaves
    every member's row for the next run to settle, not only the shard's."""
    members = [
        dataclasses.replace(
            member, outcome=Outcome.PENDING, details={**member.details, _INTENDED_OUTCOME: member.outcome.value}
        )
        for member in done.members
    ]
    return [*members, _pending(done)]


def _not_replaced(member: AnonymizationResult, error: EffaceError) -> AnonymizationResult:
    """A shard member's row when the shard could not be swapped in: the member was left as it was."""
    return results.failed(member.path, error, mode=member.mode, started_at=member.started_at)


def _sha256_of(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        return None


def settle_pending(
    store: AuditStore, pending: StoredFile, *, run_id: str, read_target: Callable[[], str | None] | None = None
) -> Outcome | None:
    """Records, in the run that left it, what became of a replace that was never confirmed: the file on disk holds
    the planned output (done, with the outcome it was to have), or not (an error: the file was left as it was, or
    changed since). Called by ``run_id``'s run, which then treats the file as usual (skips it when done).

    Args:
        store: the audit log.
        pending: the unsettled row.
        run_id: the run that settles it.
        read_target: the sha256 of what is at the target now (None: nothing), for a target that is not a local
            file (an object); by default the local file is read.

    Returns:
        The outcome recorded; None when the file cannot be read (the pending row stays for a later run, and the
        file fails as unreadable when it is processed).

    Raises:
        AuditError: the settlement cannot be written.
    """
    target = pending.output_path or pending.path
    if target is None:  # pragma: no cover - a pending row is always a file's
        raise ValueError(f"pending row {pending.id} has no path")
    try:
        found = read_target() if read_target is not None else _sha256_of(Path(target))
    except (OSError, EffaceError) as exc:
        logger.warning("%s: cannot read it to settle run %s's unconfirmed replace: %s", target, pending.run_id, exc)
        return None
    note: dict[str, object] = {"settled_by_run": run_id, "settled_at": datetime.now(UTC).isoformat()}
    intended = Outcome(str(pending.details.get(_INTENDED_OUTCOME, Outcome.ANONYMIZED.value)))
    if found is not None and found == pending.output_sha256:
        note["settled"] = "the planned output was found in place: the replace happened, its record was lost"
        _settle_members(store, pending, note=note, error_message=None)
        store.record_settlement(pending, outcome=intended, details=note)
        logger.warning("%s: recorded as %s in run %s, whose record of it was lost", target, intended, pending.run_id)
        return intended
    if found is None:
        message = "the run ended before this file was written: there is no output"
    elif found == pending.details.get(_SOURCE_SHA256):
        message = "the run ended before this file was replaced: it was left as it was"
    else:
        message = "the file changed since: it holds neither its source as read nor the planned output"
    _settle_members(store, pending, note=note, error_message=f"the shard was not replaced: {message}")
    store.record_settlement(
        pending, outcome=Outcome.ERROR, details=note, error_class=OutputError.__name__, error_message=message
    )
    logger.info("%s: run %s did not replace it (%s)", target, pending.run_id, message)
    return Outcome.ERROR


def _settle_members(
    store: AuditStore, pending: StoredFile, *, note: dict[str, object], error_message: str | None
) -> None:
    """Settles the pending rows of a shard's members with the shard's verdict: each the outcome it was to have
    when the new shard is in place (``error_message`` None), else an error."""
    member_paths = pending.details.get(_MEMBERS) or []
    for member_path in member_paths if isinstance(member_paths, list) else []:
        for member in store.unsettled_pending(Path(str(member_path))):
            if member.run_id != pending.run_id:
                continue
            if error_message is None:
                intended = Outcome(str(member.details.get(_INTENDED_OUTCOME, Outcome.ANONYMIZED.value)))
                store.record_settlement(member, outcome=intended, details=note)
            else:
                store.record_settlement(
                    member,
                    outcome=Outcome.ERROR,
                    details=note,
                    error_class=OutputError.__name__,
                    error_message=error_message,
                )


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


def _settled(job: Job, run: AuditedRun) -> Job:
    """The job, once every replace that an earlier run left unconfirmed for its file is settled."""
    if job.destination is None:
        return job
    for pending in run.store.unsettled_pending(job.source):
        if pending.run_id == run.run_id:
            continue
        if isinstance(job, FileJob):
            settle_pending(run.store, pending, run_id=run.run_id)
            continue
        outcome = settle_pending(
            run.store,
            pending,
            run_id=run.run_id,
            read_target=functools.partial(settle_object, job, since=pending.started_at),
        )
        if outcome is not None and outcome is not Outcome.ERROR and job.destination == job.source:
            _clean_versions_of(job, run)
    return job


def _clean_versions_of(job: ObjectJob, run: AuditedRun) -> None:
    """After a settled write of an object in place: the versions older than it, which a run killed between its
    write and its clean-up left, are deleted too (or the object fails aloud, naming them)."""
    try:
        deleted = delete_earlier_versions(job.store, job.source, written=None)
    except VersionsLeftError as exc:
        run.record(results.failed(job.source, exc, mode=run.info.mode))
        return
    if deleted:
        logger.warning("%s: deleted %d earlier version(s) an interrupted run left", job.source, len(deleted))


def _with_done_outputs(job: Job, run: AuditedRun) -> Job:
    """The job with the outputs that earlier runs with this run's settings wrote at its target."""
    target, key = job.target, run.info.settings_sha256
    if target is None or key is None:
        return job
    return dataclasses.replace(
        job, done_sha256=run.store.output_hashes(job.source, output_path=target, settings_sha256=key)
    )


def _commit(run: AuditedRun, done: StagedResult) -> None:
    try:
        run.commit(done)
    except BaseException:
        # Interrupted (Ctrl-C) or failed anywhere in it: no temporary file stays (once swapped in there is none
        # to delete). A pending row already written is settled by the next run from what it finds.
        _discard(done)
        raise


def _discard(done: StagedResult) -> None:
    """Deletes a result's staged output (and an object's local files): it will not be swapped in."""
    if done.upload is not None:
        discard_upload(done)
    elif done.staged is not None:
        discard(done.staged)


def run_plan(
    items: Iterable[PlanItem | ObjectJob], *, executor: Executor, run: AuditedRun, is_forced: bool = False
) -> AuditedRun:
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

    Raises:
        AuditError: the audit log failed: no file is replaced after that; the message names the file concerned.
    """

    # Files that are not media are audited in batches: a folder of sidecar files would otherwise cost one
    # commit each (14 ms on SQLite, against 0.9 ms a row in batches of 256).
    not_media: list[AnonymizationResult] = []

    def flush() -> None:
        if not_media:
            run.record_many(list(not_media))
            not_media.clear()

    def jobs() -> Iterator[Job]:
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
                job = _settled(item, run)
                yield job if is_forced else _with_done_outputs(job, run)
        flush()

    try:
        for done in executor.results(jobs()):
            _commit(run, done)
    except AuditError:
        # The audit log is gone: nothing more is replaced; the files in flight stay as they are.
        for done in executor.drain():
            _discard(done)
        raise
    except BaseException:
        # The files in flight finish (each replaced only once its intent is recorded) and are audited, so that a
        # resumed run knows them.
        drained = iter(executor.drain())
        try:
            for done in drained:
                _commit(run, done)
        finally:
            for done in drained:  # left by an audit error: not replaced
                _discard(done)
        flush()
        raise
    return run
