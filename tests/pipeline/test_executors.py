"""Where a batch runs: no more processes than files, and the executor each setting picks."""

from __future__ import annotations

from pathlib import Path

import pytest

from efface.config import Settings
from efface.detection import StaticDetector
from efface.errors import ConfigurationError
from efface.media.images import CodecOptions
from efface.pipeline import FileJob, Worker, plan_jobs
from efface.pipeline.executors import fit_workers, open_executor
from efface.pipeline.pool import InProcess, ProcessPool
from efface.records import TransformSpec
from efface.transforms import Anonymizer


def _worker() -> Worker:
    return Worker(detector=StaticDetector(), anonymizer=Anonymizer(TransformSpec()), codec=CodecOptions())


@pytest.mark.parametrize(
    ("workers", "files", "expected"),
    [(4, 0, 1), (4, 1, 1), (4, 3, 3), (4, 4, 4), (4, 9, 4), (1, 9, 1)],
)
def test_fit_workers_starts_no_more_processes_than_files(
    tmp_path: Path, workers: int, files: int, expected: int
) -> None:
    for index in range(files):
        (tmp_path / f"{index}.jpg").write_bytes(b"")
    settings, items = fit_workers(Settings(workers=workers), plan_jobs([tmp_path]).items())
    assert settings.workers == expected
    jobs = [item for item in items if isinstance(item, FileJob)]
    assert sorted(job.source.name for job in jobs) == sorted(f"{index}.jpg" for index in range(files))


@pytest.mark.parametrize(("workers", "expected"), [(1, InProcess), (2, ProcessPool)])
def test_open_executor_runs_one_worker_here_and_more_in_a_pool(workers: int, expected: type) -> None:
    with open_executor(Settings(workers=workers), worker=_worker()) as executor:
        assert isinstance(executor, expected)


def test_open_executor_fails_on_an_unreachable_ray_cluster_before_the_context() -> None:
    with pytest.raises(ConfigurationError, match="Ray"):
        open_executor(Settings(workers=1), worker=_worker(), ray_address="127.0.0.1:9")
