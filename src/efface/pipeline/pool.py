"""Where the files of a batch are anonymized: in this process, or on every core through a process pool with
its own ``Models`` (one detector session, loaded once) in each process and one ``Policy`` for all. Both hand back
``stage_file`` results in job order (each output staged beside its destination, for the audited run to swap in),
with a bounded number of files in flight, so memory and staged files do not grow with the size of the batch.

Why processes and not threads: decoding, fusing, masking and encoding are Python and numpy work that holds
the GIL; only the model releases it. Each process gets ``cores // processes`` inference threads
(``inference_threads_for``), so processes x threads fits the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.queues
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Protocol, TypeAlias

from efface.detection.models import DetectionModels
from efface.errors import OutputError, WorkerCrashedError
from efface.media.atomic import hand_over, hold, leftovers_of, remove_if_leftover
from efface.pipeline import results
from efface.pipeline.core import FileJob, Policy, StagedResult, stage_file
from efface.pipeline.objects import ObjectJob
from efface.records import AnonymizationResult, Location

# A file, or an object in a store: what an executor stages.
Job = FileJob | ObjectJob

__all__ = [
    "Executor",
    "FrameProgress",
    "InProcess",
    "ModelsFactory",
    "ProcessPool",
    "crashed_result",
    "remove_leftovers",
]

logger = logging.getLogger(__name__)

# A video's progress: its path, frames done, frames expected (None where unknown).
FrameProgress = Callable[[Location, int, int | None], None]
# Loads the models inside a pool process or Ray actor; must pickle (e.g. ``functools.partial(load_models, ...)``).
ModelsFactory = Callable[[], DetectionModels]

# Frame progress from pool processes: (path, frames done, frames expected).
FrameQueue: TypeAlias = "multiprocessing.queues.Queue[tuple[str, int, int | None]]"
# Files submitted per process beyond the one it works on: keeps every core busy without reading ahead.
_AHEAD_PER_PROCESS = 1
# A file is tried this often when a pool process dies under it, then failed.
_MAX_ATTEMPTS = 2
# Frame progress from pool processes is sent at most this often per video.
_FRAME_REPORT_S = 0.2


class Executor(Protocol):
    """Runs ``stage_file`` over jobs; the local pool and the Ray pool implement it."""

    def results(self, jobs: Iterable[Job]) -> Iterator[StagedResult]:
        """One result per job, in job order."""
        ...

    def drain(self) -> list[StagedResult]:
        """After an interruption: lets the files in flight finish, cancels the rest, returns what finished."""
        ...

    def close(self) -> None: ...


class InProcess:
    """One file at a time in this process (``--jobs 1``, tests, the library)."""

    def __init__(self, models: DetectionModels, policy: Policy, *, on_frame: FrameProgress | None = None) -> None:
        self.models = models
        self.policy = policy
        self._on_frame = on_frame

    def results(self, jobs: Iterable[Job]) -> Iterator[StagedResult]:
        for job in jobs:
            on_frame = _progress_for(job, self._on_frame)
            yield stage_file(job, models=self.models, policy=self.policy, on_frame=on_frame)

    def drain(self) -> list[StagedResult]:
        return []  # nothing runs beside the file that was interrupted

    def close(self) -> None:
        pass


def _progress_for(job: Job, on_frame: FrameProgress | None) -> Callable[[int, int | None], None] | None:
    if on_frame is None:
        return None
    return lambda done, total: on_frame(job.source, done, total)


# --- inside each pool process ------------------------------------------------------------------------

_process_models: DetectionModels | None = None
_process_policy: Policy | None = None
_process_frames: FrameQueue | None = None


def _start_process(make_models: ModelsFactory, policy: Policy, frames: FrameQueue | None) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what an interruption does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _process_models, _process_policy, _process_frames
    _process_models = make_models()
    _process_policy = policy
    _process_frames = frames


def _anonymize_in_process(job: Job) -> StagedResult:
    if _process_models is None or _process_policy is None:  # pragma: no cover - the initializer runs first
        raise RuntimeError("pool process started without its models")
    on_frame = None
    if _process_frames is not None:
        frames = _process_frames
        last = [0.0]

        def on_frame(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= _FRAME_REPORT_S or done == total:
                last[0] = now
                frames.put((str(job.source), done, total))

    done = stage_file(job, models=_process_models, policy=_process_policy, on_frame=on_frame)
    if done.staged is None:
        return done
    # The staged file's lock goes to the parent with the result, so no sweep can take the file in between.
    return dataclasses.replace(done, staged=hand_over(done.staged))


# --- in the parent -----------------------------------------------------------------------------------


class ProcessPool:
    """Files on ``processes`` cores at once, each process with its own models and the one policy.

    A process that dies mid-file (killed, out of memory) takes the pool down; a fresh pool retries the files
    that were in flight, and a file under which a process dies twice gets an error result. The atomic
    replace keeps every file either as it was or anonymized meanwhile.

    Args:
        make_models: loads the models in each process (must pickle).
        policy: how every file is anonymized (pickled to each process).
        processes: processes (files anonymized at once).
        on_frame: video progress, called in this process.
    """

    def __init__(
        self,
        make_models: ModelsFactory,
        policy: Policy,
        *,
        processes: int,
        on_frame: FrameProgress | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self._make_models = make_models
        self._policy = policy
        self.processes = processes
        self._context = multiprocessing.get_context("spawn")  # no fork of a process holding model threads
        self._frames: FrameQueue | None = self._context.Queue() if on_frame is not None else None
        self._on_frame = on_frame
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[Job, Future[StagedResult], int]] = deque()
        self._relay: threading.Thread | None = None
        self._closing = threading.Event()
        self._submitting: Job | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=self._context,
                initializer=_start_process,
                initargs=(self._make_models, self._policy, self._frames),
            )
            if self._frames is not None and self._relay is None:
                self._relay = threading.Thread(target=self._relay_frames, name="efface-frames", daemon=True)
                self._relay.start()
        return self._pool

    def _relay_frames(self) -> None:
        assert self._frames is not None and self._on_frame is not None
        while not self._closing.is_set():
            try:
                path, done, total = self._frames.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):  # the queue was closed
                return
            self._on_frame(Path(path), done, total)

    def _submit(self, job: Job, *, attempt: int = 1) -> None:
        # Known until it is in ``_pending``: a Ctrl-C in between leaves a task running that no one waits for.
        self._submitting = job
        try:
            future = self._executor().submit(_anonymize_in_process, job)
        except BrokenProcessPool:
            self._restart()
            future = self._executor().submit(_anonymize_in_process, job)
        self._pending.append((job, future, attempt))
        self._submitting = None

    def _restart(self, *, wait: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
        self._pool = None

    def _recover(self) -> None:
        """After a process died: a fresh pool gets every file in flight that had not finished (one of them
        probably killed it; the others went down with the pool)."""
        held, self._pending = list(self._pending), deque()
        # Waits for the broken pool's processes to be gone: a staged file's lock lives as long as they do, and
        # the sweep below must see the leftovers of the files they did not finish unlocked.
        self._restart(wait=True)
        finished = [future.done() and not future.cancelled() and future.exception() is None for _, future, _ in held]
        for (_job, future, _attempt), is_finished in zip(held, finished, strict=True):
            if is_finished:  # before any sweep below: its process is gone, and the staged file's lock with it
                _hold_staged(future.result())
        for (job, future, attempt), is_finished in zip(held, finished, strict=True):
            if is_finished:
                self._pending.append((job, future, attempt))
            else:
                remove_leftovers(job)
                self._submit(job, attempt=attempt + 1)

    def _next_result(self) -> StagedResult:
        while True:
            job, future, attempt = self._pending[0]
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                logger.error("a worker process died while anonymizing %s (attempt %d): %s", job.source, attempt, exc)
                if attempt >= _MAX_ATTEMPTS:
                    self._pending.popleft()
                    self._recover()
                    remove_leftovers(job)
                    return StagedResult(crashed_result(job, reason="the worker process died"))
                self._recover()
                continue
            self._pending.popleft()
            return result

    def results(self, jobs: Iterable[Job]) -> Iterator[StagedResult]:
        limit = self.processes * (1 + _AHEAD_PER_PROCESS)
        for job in jobs:
            self._submit(job)
            if len(self._pending) >= limit:
                yield self._next_result()
        while self._pending:
            yield self._next_result()

    def drain(self) -> list[StagedResult]:
        finished = []
        crashed = []
        for job, future, _attempt in self._pending:
            if future.cancel():
                continue
            try:
                done = future.result()
            except BrokenProcessPool:
                crashed.append(job)
                finished.append(StagedResult(crashed_result(job, reason="the worker process died")))
            else:
                _hold_staged(done)  # before the sweep below
                finished.append(done)
        self._pending.clear()
        # What a dead process (one still starting when a Ctrl-C reached it) or a task that no one waits for (a
        # Ctrl-C inside ``_submit``) staged goes, once the processes are gone (the finished files' are held here).
        if self._submitting is not None:
            crashed.append(self._submitting)
            self._submitting = None
        if crashed:
            self._restart(wait=True)
            for job in crashed:
                remove_leftovers(job)
        return finished

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._closing.set()
        if self._relay is not None:
            self._relay.join(timeout=2)
        if self._frames is not None:
            self._frames.close()
            self._frames.join_thread()

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _hold_staged(done: StagedResult) -> None:
    """Takes the lock of a finished file's staged output into this process (the run claims it from here)."""
    if done.staged is not None:
        with contextlib.suppress(OutputError):  # already swept: the run records that the file was not replaced
            hold(done.staged)


def remove_leftovers(job: Job) -> None:
    """Deletes the temporary files that a killed process left beside the file it was writing (those of live
    processes, this pool's included, hold their lock and stay)."""
    if not isinstance(job.destination, Path):  # an object's leftovers are in its run's work folder
        return
    for leftover in leftovers_of(job.destination):
        try:
            remove_if_leftover(leftover)
        except OSError as exc:  # one that cannot be deleted must not end the run: the next run's walk retries it
            logger.warning("cannot remove leftover temporary file %s: %s", leftover, exc)


def crashed_result(job: Job, *, reason: str) -> AnonymizationResult:
    """The result of a file whose worker died under it (the file itself was left as it was or complete)."""
    error = WorkerCrashedError(f"{reason} while anonymizing this file; it was left as it was", path=job.source)
    return results.failed(job.source, error, mode=job.mode)
