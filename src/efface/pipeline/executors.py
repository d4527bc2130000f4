"""Where a batch runs and on how many processes: the two decisions ``efface anonymize`` used to make itself.

``fit_workers`` starts no more processes than there are files; ``open_executor`` picks the executor: a Ray
cluster when one is named, this process for a single worker, otherwise a process pool.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator

from efface.config import Settings
from efface.pipeline.build import build_worker
from efface.pipeline.core import Worker
from efface.pipeline.jobs import PlanItem, count_jobs_ahead
from efface.pipeline.pool import Executor, FrameProgress, InProcess, ProcessPool
from efface.pipeline.ray import RayPool

__all__ = ["fit_workers", "open_executor"]


def fit_workers(settings: Settings, items: Iterable[PlanItem]) -> tuple[Settings, Iterator[PlanItem]]:
    """No more processes than files: a single file runs in this process, with every core for its inference.

    The walk goes only as far as it takes to find ``settings.workers`` files.

    Args:
        settings: the settings asked for; ``workers`` is the most processes to start.
        items: the planned items, walked lazily.

    Returns:
        The settings with ``workers`` lowered to the files found ahead (at least 1), and every item, the
        counted ones included.
    """
    files_ahead, every_item = count_jobs_ahead(items, limit=settings.workers)
    return settings.model_copy(update={"workers": max(1, files_ahead)}), every_item


def open_executor(
    settings: Settings, *, worker: Worker, on_frame: FrameProgress | None = None, ray_address: str | None = None
) -> contextlib.closing[Executor]:
    """Starts the executor for a batch, closed when the returned context ends.

    Started here, not on entering the context, so that a cluster that cannot be reached fails the call.

    Args:
        settings: as fitted by ``fit_workers``; ``workers`` is the number of processes of a pool.
        worker: the Worker already built from ``settings``, used when the batch runs in this process.
        on_frame: video frame progress (this process and the pool; Ray reports none).
        ray_address: a Ray cluster to run on (see ``RayPool``); None runs on this machine.

    Raises:
        ConfigurationError: Ray is not installed or the cluster cannot be reached.
    """
    executor: Executor
    if ray_address is not None:
        executor = RayPool(settings, address=ray_address)
    elif settings.workers == 1:
        executor = InProcess(worker, on_frame=on_frame)
    else:
        # Each pool process builds a Worker of its own; the partial pickles, the Worker would not.
        executor = ProcessPool(functools.partial(build_worker, settings), processes=settings.workers, on_frame=on_frame)
    return contextlib.closing(executor)
