"""Where a batch runs and on how many processes: the two decisions ``efface anonymize`` used to make itself.

``fit_processes`` starts no more processes than there are files; ``open_executor`` picks the executor: a Ray
cluster when one is named, this process for a single process, otherwise a process pool. Each process of a pool
and each Ray actor loads its own models once (a partial of ``load_models`` pickles; loaded sessions would not),
with inference threads that fit the machine; the policy is the run's one, its video encoder given the same
share of the cores as each inference (a video's encoder runs beside its detection, in every process at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterable, Iterator

from efface.config import Settings
from efface.detection.models import DetectionModels
from efface.pipeline.build import inference_threads_for, load_models
from efface.pipeline.core import Policy
from efface.pipeline.jobs import PlanItem, count_jobs_ahead
from efface.pipeline.pool import Executor, FrameProgress, InProcess, ProcessPool
from efface.pipeline.ray import RayPool

__all__ = ["fit_processes", "open_executor"]


def fit_processes(jobs: int, items: Iterable[PlanItem]) -> tuple[int, Iterator[PlanItem]]:
    """No more processes than files: a single file runs in this process, with every core for its inference.

    The walk goes only as far as it takes to find ``jobs`` files.

    Args:
        jobs: the most processes to start (``Settings.jobs``).
        items: the planned items, walked lazily.

    Returns:
        The processes to start (the files found ahead, at least 1, at most ``jobs``), and every item, the
        counted ones included.
    """
    files_ahead, every_item = count_jobs_ahead(items, limit=jobs)
    return max(1, files_ahead), every_item


def open_executor(
    settings: Settings,
    *,
    models: DetectionModels,
    policy: Policy,
    processes: int,
    on_frame: FrameProgress | None = None,
    ray_address: str | None = None,
) -> contextlib.closing[Executor]:
    """Starts the executor for a batch, closed when the returned context ends.

    Started here, not on entering the context, so that a cluster that cannot be reached fails the call.

    Args:
        settings: the run's settings (each pool process and Ray actor loads its models from them).
        models: this process's models, used when the batch runs here (``processes == 1``).
        policy: how every file is anonymized.
        processes: as ``fit_processes`` gave: this process for 1, else a pool of that many.
        on_frame: video frame progress (this process and the pool; Ray reports none).
        ray_address: a Ray cluster to run on (see ``RayPool``); None runs on this machine.

    Raises:
        ConfigurationError: Ray is not installed or the cluster cannot be reached.
    """
    executor: Executor
    if ray_address is not None:
        # One inference thread per actor: Ray gives each actor one CPU and runs one actor per CPU.
        policy = _encoding_with(policy, threads=1)
        executor = RayPool(functools.partial(load_models, settings, inference_threads=1), policy, address=ray_address)
    elif processes == 1:
        executor = InProcess(models, _encoding_with(policy, threads=inference_threads_for(1)), on_frame=on_frame)
    else:
        threads = inference_threads_for(processes)
        make_models = functools.partial(load_models, settings, inference_threads=threads)
        policy = _encoding_with(policy, threads=threads)
        executor = ProcessPool(make_models, policy, processes=processes, on_frame=on_frame)
    return contextlib.closing(executor)


def _encoding_with(policy: Policy, *, threads: int) -> Policy:
    """``policy`` with its video encoder on ``threads`` threads, unless it names a count of its own."""
    if policy.video.encoder_threads is not None:
        return policy
    return dataclasses.replace(policy, video=dataclasses.replace(policy.video, encoder_threads=threads))
