"""The same ``stage_file`` on a Ray cluster: one actor per CPU, each holding its own models (one detector
session, loaded once and reused for every file it gets) and the run's policy.

The driver plans the batch, hands files to the actors through a bounded window and records every result
itself, in plan order, through the same ``run_plan`` and ``AuditedRun`` as a local run: the audit rows (and the
hash chain) are the same whether the database is SQLite beside the driver or a team's PostgreSQL. Paths are
passed, not pixels: every node must see the files at the same paths (a shared file system). Objects in a store
are read into the driver's local work folder and written back from it, so they run on a cluster of one machine
only (on a larger one, each object fails aloud with its own row and is left as it was).

A worker that dies mid-file loses nothing: the actor is restarted and Ray runs the file again; the atomic
replace means the file was either still the original or already complete.

Ray is an optional dependency (``pip install 'efface[ray]'``); only this module imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from efface.detection.models import DetectionModels
from efface.errors import ConfigurationError, OutputError
from efface.media.atomic import hold, release
from efface.pipeline import results
from efface.pipeline.core import Policy, StagedResult, stage_file
from efface.pipeline.objects import ObjectJob
from efface.pipeline.pool import Job, ModelsFactory, crashed_result, remove_leftovers
from efface.records import AnonymizationResult

__all__ = ["RayPool"]

logger = logging.getLogger(__name__)

# How long a head node may take to accept a connection.
_CONNECT_TIMEOUT_S = 5.0
# Times Ray restarts a dead actor, and runs a file again on it, before the file fails.
_MAX_RESTARTS = 3


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


def _refused_object(job: ObjectJob, *, nodes: int) -> AnonymizationResult:
    """Objects are read into, and written back from, the driver's local work folder: every actor must see it,
    which only a cluster of one machine guarantees."""
    error = ConfigurationError(
        f"objects on a Ray cluster of {nodes} machines are not supported yet: run them in process, or on a cluster "
        "of one machine (--ray local); the object was left as it was",
        path=job.source,
    )
    return results.failed(job.source, error, mode=job.mode)


class _FileWorker:
    """A Ray actor: loads the models once, then anonymizes the files it is given."""

    def __init__(self, make_models: ModelsFactory, policy: Policy) -> None:
        self._models: DetectionModels = make_models()
        self._policy = policy

    def anonymize(self, job: Job) -> StagedResult:
        done = stage_file(job, models=self._models, policy=self._policy)
        if done.staged is not None:
            # The driver may be on another machine: it takes the lock again by the file's name (``_next``).
            release(done.staged)
        return done

    def pid(self) -> int:
        return os.getpid()


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
        remote = ray.remote(num_cpus=1, max_restarts=_MAX_RESTARTS, max_task_retries=_MAX_RESTARTS)(_FileWorker)
        self.actors = [remote.remote(make_models, policy) for _ in range(count)]
        self._pool = ray.util.ActorPool(self.actors)
        self._in_flight: deque[Job] = deque()
        logger.info("Ray: %d actors on %s", count, address)

    def results(self, jobs: Iterable[Job]) -> Iterator[StagedResult]:
        window = 2 * len(self.actors)
        folders: dict[Path, Job] = {}
        nodes: int | None = None
        for job in jobs:
            if isinstance(job, ObjectJob):
                if nodes is None:
                    nodes = sum(1 for node in self._ray.nodes() if node.get("Alive"))
                if nodes > 1:
                    # Refused one by one, in plan order, each with its row: the files of the run go on.
                    while self._in_flight:
                        yield self._next()
                    yield StagedResult(_refused_object(job, nodes=nodes))
                    continue
            self._pool.submit(lambda actor, job: actor.anonymize.remote(job), job)
            self._in_flight.append(job)
            if isinstance(job.destination, Path):
                folders.setdefault(job.destination.parent, job)
            if len(self._in_flight) >= window:
                yield self._next()
        while self._in_flight:
            yield self._next()
        # Ray runs a task whose actor died again on a restarted actor, out of sight: the temporary file the dead
        # attempt wrote stays. Swept once every result has been taken (and swapped) and nothing is in flight: a
        # temporary name does not say whose it is, and an actor releases its lock before this driver holds it.
        for job in folders.values():
            remove_leftovers(job)

    def _next(self) -> StagedResult:
        job = self._in_flight.popleft()
        try:
            result: StagedResult = self._pool.get_next()  # what the actor's ``anonymize`` returned
        except self._ray.exceptions.RayError as exc:
            # Out of retries (the file keeps killing its actor): the file fails alone, as it was.
            logger.error("Ray could not anonymize %s: %s", job.source, exc)
            return StagedResult(crashed_result(job, reason=f"the Ray worker failed: {type(exc).__name__}"))
        if result.staged is not None:
            with contextlib.suppress(OutputError):  # swept meanwhile: the run records it was not replaced
                hold(result.staged)
        return result

    def drain(self) -> list[StagedResult]:
        finished = []
        while self._in_flight:
            finished.append(self._next())
        return finished

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._owns_cluster:
            self._ray.shutdown()
