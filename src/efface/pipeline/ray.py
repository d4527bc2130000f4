"""The same ``stage_file`` on a Ray cluster: one actor per CPU, each holding its own models (one detector
session, loaded once and reused for every file it gets) and the run's policy.

The driver plans the batch, hands files to the actors through a bounded window and records every result
itself, in plan order, through the same ``run_plan`` and ``AuditedRun`` as a local run: the audit rows (and the
hash chain) are the same whether the database is SQLite beside the driver or a team's PostgreSQL. Paths are
passed, not pixels: every node must see the files at the same paths (a shared file system). An object in a store
needs no shared file system: the actor that gets it reads it into a work folder of its own, on its machine, and
writes it back from there once the driver has recorded its intent (``PendingUpload.host``); the work folders that
dead actors left are swept, and audited, by the actors of the same machine.

A worker that dies mid-file loses nothing: the actor is restarted and Ray runs the file again; the atomic
replace means the file was either still the original or already complete.

Ray is an optional dependency (``pip install 'efface[ray]'``); only this module imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from efface.detection.models import DetectionModels
from efface.errors import ConfigurationError, EffaceError, OutputError
from efface.media.atomic import hold, release
from efface.pipeline.core import FileJob, Policy, StagedResult, stage_file
from efface.pipeline.objects import ObjectJob, PendingUpload, WorkFolder, discard_upload, push, sweep_work_folders
from efface.pipeline.pool import Job, ModelsFactory, crashed_result, remove_leftovers
from efface.pipeline.tables import SliceResult, TableSlice, assemble_table, slice_table, stage_table_slice
from efface.records import AnonymizationResult, WriteMode

__all__ = ["RayPool"]

logger = logging.getLogger(__name__)

# How long a head node may take to accept a connection.
_CONNECT_TIMEOUT_S = 5.0
# Times Ray restarts a dead actor, and runs a file again on it, before the file fails.
_MAX_RESTARTS = 3
# Calls an actor is given before its earlier ones finish (the next file waits there, not in the driver).
_DEPTH = 2
# Jobs handed out or waiting, per actor, before the driver takes the next result.
_WINDOW_PER_ACTOR = 3
# The actors' concurrency group for writing objects back while they anonymize the next.
_IO = "io"
# Slices of a table per actor (at least; a slice holds 8 row groups at most).
_SLICES_PER_ACTOR = 2
# How long the actors get to delete their work folders at the end.
_CLOSE_TIMEOUT_S = 30.0


def _import_ray() -> Any:
    try:
        import ray  # optional: imported only when a Ray run is asked for
    except ImportError as exc:
        raise ConfigurationError("--ray needs Ray: pip install 'efface[ray]'") from exc
    return ray


def _check_reachable(address: str) -> None:
    """Fails fast on a head node that does not answer (Ray itself keeps retrying for minutes)."""
    host, sep, port = address.rpartition(":")
    if address in ("local", "auto") or address.startswith("ray://") or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigurationError(f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}") from exc


@dataclass(frozen=True, slots=True)
class _Call:
    """A job handed to an actor (``actor`` its index) or to a task that spreads a table over the actors (None):
    ``ref`` is the ``StagedResult`` it returns."""

    job: Job
    actor: int | None
    ref: Any


class _FileWorker:
    """A Ray actor: loads the models once, then anonymizes the files it is given; an object in its own work folder,
    which it writes back (``push``) or deletes (``discard``) when the driver says, on a thread of its own."""

    def __init__(self, make_models: ModelsFactory, policy: Policy) -> None:
        self._models: DetectionModels = make_models()
        self._policy = policy
        self._work: WorkFolder | None = None

    def anonymize(self, job: Job) -> StagedResult:
        if isinstance(job, ObjectJob):
            if self._work is None:
                self._work = WorkFolder()
            job = dataclasses.replace(job, work_folder=self._work.path)
        done = stage_file(job, models=self._models, policy=self._policy)
        if done.staged is not None and done.upload is None:
            # The driver may be on another machine: it takes the lock again by the file's name (``_next``).
            release(done.staged)
        return done

    def anonymize_slice(self, job: FileJob, piece: TableSlice) -> tuple[list[Any], SliceResult]:
        """A slice of a table (``tables.stage_table_slice``): its row groups, then what it found (two objects in
        Ray's store, so that the row groups go to the table's assembler, never to the driver)."""
        return stage_table_slice(job, piece, models=self._models, policy=self._policy)

    def sweep(self, mode: WriteMode) -> list[AnonymizationResult]:
        """Deletes the work folders of dead runs and actors on this machine (a live one's stays locked)."""
        return sweep_work_folders(mode=mode)

    def push(self, upload: PendingUpload) -> dict[str, object] | EffaceError:
        try:
            return push(upload)
        except EffaceError as exc:  # returned, not raised: the driver raises it as it is
            return exc
        except OSError as exc:  # the work folder of an actor that died and restarted is gone with it
            return OutputError(
                f"its output is gone from the work folder ({exc.strerror or exc}): not written", path=upload.target
            )

    def discard(self, done: StagedResult) -> None:
        discard_upload(done)

    def close(self) -> None:
        if self._work is not None:
            self._work.close()
            self._work = None

    def pid(self) -> int:
        return os.getpid()


def _stage_sliced_table(job: FileJob, actors: list[Any]) -> StagedResult:
    """A Ray task (no CPU of its own: it waits, the actors work) that stages a Parquet table spread over the actors
    a slice of row groups each, and writes the new table beside it from their row groups, one slice in memory at
    a time. A table not worth slicing goes to one actor whole."""
    import ray  # in a Ray worker

    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    sliced = slice_table(job, parts=_SLICES_PER_ACTOR * len(actors))
    if isinstance(sliced, StagedResult):
        return sliced
    if not sliced:
        done: StagedResult = ray.get(actors[hash(job.source) % len(actors)].anonymize.remote(job))
        return done
    calls = [
        actors[index % len(actors)].anonymize_slice.options(num_returns=2).remote(job, piece)
        for index, piece in enumerate(sliced)
    ]
    found: list[SliceResult] = ray.get([call[1] for call in calls])
    done = assemble_table(job, found, lambda index: ray.get(calls[index][0]), started_at=started_at, t0=t0)
    if done.staged is not None:
        release(done.staged)  # the driver takes the lock again by the file's name (``_next``)
    return done


class _ActorHost:
    """The actor that staged an object, as the ``UploadHost`` that writes it back or deletes its files."""

    def __init__(self, ray: Any, actor: Any) -> None:
        self._ray = ray
        self._actor = actor

    def push(self, upload: PendingUpload) -> dict[str, object]:
        try:
            pushed = self._ray.get(self._actor.push.options(concurrency_group=_IO).remote(upload))
        except self._ray.exceptions.RayError as exc:
            raise OutputError(
                f"the Ray worker that holds its output failed ({type(exc).__name__}): not written", path=upload.target
            ) from exc
        if isinstance(pushed, EffaceError):
            raise pushed
        return cast(dict[str, object], pushed)

    def discard(self, done: StagedResult) -> None:
        try:
            self._ray.get(self._actor.discard.options(concurrency_group=_IO).remote(done))
        except self._ray.exceptions.RayError as exc:  # its folder is swept with the dead actor's (``_sweep``)
            logger.warning("the Ray worker holding %s's local files failed: %s", done.result.path, exc)


class RayPool:
    """Files on the actors of a Ray cluster, results in job order (the ``Executor`` protocol).

    Args:
        make_models: loads the models in each actor (must pickle; one inference thread suits an actor, since Ray
            gives each actor one CPU and runs one actor per CPU).
        policy: how every file is anonymized.
        address: ``"auto"`` (the cluster this machine belongs to), ``"ray://HOST:PORT"`` or ``"HOST:PORT"`` of
            a head node, or ``"local"`` for a cluster of this machine alone, started and stopped here.
        actors: actors to start; None: one per CPU of the cluster.

    Raises:
        ConfigurationError: Ray is not installed, or the cluster cannot be reached.
    """

    def __init__(self, make_models: ModelsFactory, policy: Policy, *, address: str, actors: int | None = None) -> None:
        ray = _import_ray()
        self._ray = ray
        self._owns_cluster = address == "local"
        _check_reachable(address)
        if self._owns_cluster:
            # A cluster of this machine, started and stopped here: Ray's notice that it turned token
            # authentication on asks nothing of the user.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        try:
            ray.init(
                address=None if self._owns_cluster else address,
                num_cpus=actors if self._owns_cluster else None,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigurationError(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc
        count = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(
            num_cpus=1,
            max_restarts=_MAX_RESTARTS,
            max_task_retries=_MAX_RESTARTS,
            concurrency_groups={_IO: 1},
        )(_FileWorker)
        self.actors = [remote.remote(make_models, policy) for _ in range(count)]
        self._stage_sliced = ray.remote(num_cpus=0)(_stage_sliced_table)
        self._waiting: deque[Job] = deque()
        self._in_flight: deque[_Call] = deque()
        self._running: dict[Any, int | None] = {}  # the refs of calls not finished yet, and their actors
        self._sweep_mode: WriteMode | None = None
        logger.info("Ray: %d actors on %s", count, address)

    def results(self, jobs: Iterable[Job]) -> Iterator[StagedResult]:
        window = _WINDOW_PER_ACTOR * len(self.actors)
        folders: dict[Path, Job] = {}
        for job in jobs:
            if isinstance(job, ObjectJob) and self._sweep_mode is None:
                self._sweep_mode = job.mode
                yield from self._sweep()  # before any actor has a work folder of this run
            self._waiting.append(job)
            if isinstance(job.destination, Path):
                folders.setdefault(job.destination.parent, job)
            self._dispatch()
            if len(self._in_flight) + len(self._waiting) >= window:
                yield self._next()
        while self._in_flight or self._waiting:
            yield self._next()
        if self._sweep_mode is not None:
            yield from self._sweep()  # what actors that died in this run left
        # Ray runs a task whose actor died again on a restarted actor, out of sight: the temporary file the dead
        # attempt wrote stays. Swept once every result has been taken (and swapped) and nothing is in flight: a
        # temporary name does not say whose it is, and an actor releases its lock before this driver holds it.
        for job in folders.values():
            remove_leftovers(job)

    def _dispatch(self) -> None:
        """Hands waiting jobs, in order, to the least busy actors, up to ``_DEPTH`` unfinished calls each."""
        busy = [0] * len(self.actors)
        for actor in self._running.values():
            if actor is not None:
                busy[actor] += 1
        while self._waiting:
            job = self._waiting[0]
            if isinstance(job, FileJob) and job.is_table and len(self.actors) > 1:
                # Its slices queue on every actor: it waits for a turn as a job does, then spreads at once.
                if sum(busy) >= _DEPTH * len(self.actors):
                    return
                self._waiting.popleft()
                ref = self._stage_sliced.remote(job, self.actors)
                self._in_flight.append(_Call(job, None, ref))
                self._running[ref] = None
                continue
            actor = min(range(len(self.actors)), key=busy.__getitem__)
            if busy[actor] >= _DEPTH:
                return
            self._waiting.popleft()
            ref = self.actors[actor].anonymize.remote(job)
            self._in_flight.append(_Call(job, actor, ref))
            self._running[ref] = actor
            busy[actor] += 1

    def _next(self) -> StagedResult:
        """The next result in plan order; actors that finish meanwhile get the jobs that wait."""
        if not self._in_flight:
            self._dispatch()
        call = self._in_flight[0]
        while call.ref in self._running:
            ready, _ = self._ray.wait(list(self._running), num_returns=1)
            for ref in ready:
                del self._running[ref]
            self._dispatch()
        self._in_flight.popleft()
        try:
            result: StagedResult = self._ray.get(call.ref)  # what the actor's ``anonymize`` returned
        except self._ray.exceptions.RayError as exc:
            # Out of retries (the file keeps killing its actor): the file fails alone, as it was.
            logger.error("Ray could not anonymize %s: %s", call.job.source, exc)
            return StagedResult(crashed_result(call.job, reason=f"the Ray worker failed: {type(exc).__name__}"))
        if result.upload is not None and call.actor is not None:
            # An object: its files are in that actor's work folder, which writes it back or deletes them.
            upload = dataclasses.replace(result.upload, host=_ActorHost(self._ray, self.actors[call.actor]))
            return dataclasses.replace(result, upload=upload)
        if result.staged is not None:
            with contextlib.suppress(OutputError):  # swept meanwhile: the run records it was not replaced
                hold(result.staged)
        return result

    def _sweep(self) -> Iterator[StagedResult]:
        """The leftover work folders on every actor's machine, deleted, one row each."""
        mode = self._sweep_mode
        if mode is None:  # pragma: no cover - set before
            return
        try:
            swept = self._ray.get([actor.sweep.options(concurrency_group=_IO).remote(mode) for actor in self.actors])
        except self._ray.exceptions.RayError as exc:
            logger.warning("Ray: could not sweep the work folders left on its machines: %s", exc)
            return
        for rows in swept:
            for row in rows:
                yield StagedResult(row)

    def drain(self) -> list[StagedResult]:
        self._waiting.clear()
        finished = []
        while self._in_flight:
            finished.append(self._next())
        return finished

    def close(self) -> None:
        # Each actor deletes its work folder (a killed one's is swept by the next run on its machine).
        with contextlib.suppress(Exception):
            self._ray.get([actor.close.remote() for actor in self.actors], timeout=_CLOSE_TIMEOUT_S)
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._owns_cluster:
            self._ray.shutdown()
