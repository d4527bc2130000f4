"""Where a batch runs: no more processes than files, and the executor each process count picks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from efface.config import Settings
from efface.detection import StaticModels
from efface.errors import ConfigurationError
from efface.media.video import VideoOptions
from efface.pipeline import FileJob, Policy, plan_jobs
from efface.pipeline.build import inference_threads_for
from efface.pipeline.executors import fit_processes, open_executor
from efface.pipeline.pool import InProcess, ProcessPool


@pytest.mark.parametrize(
    ("jobs", "files", "expected"),
    [(4, 0, 1), (4, 1, 1), (4, 3, 3), (4, 4, 4), (4, 9, 4), (1, 9, 1)],
)
def test_fit_processes_starts_no_more_processes_than_files(
    tmp_path: Path, jobs: int, files: int, expected: int
) -> None:
    for index in range(files):
        (tmp_path / f"{index}.jpg").write_bytes(b"")
    processes, items = fit_processes(jobs, plan_jobs([tmp_path]).items())
    assert processes == expected
    planned = [item for item in items if isinstance(item, FileJob)]
    assert sorted(job.source.name for job in planned) == sorted(f"{index}.jpg" for index in range(files))


@pytest.mark.parametrize(("processes", "expected"), [(1, InProcess), (2, ProcessPool)])
def test_open_executor_runs_one_process_here_and_more_in_a_pool(processes: int, expected: type) -> None:
    models = StaticModels()
    with open_executor(Settings(), models=models, policy=Policy(), processes=processes) as executor:
        assert isinstance(executor, expected)
        if isinstance(executor, InProcess):
            assert executor.models is models  # this process's models, not a second copy


@pytest.mark.parametrize(("given", "expected"), [(None, inference_threads_for(1)), (1, 1)])
def test_the_video_encoder_gets_the_inference_share_of_the_cores_unless_the_policy_names_one(
    given: int | None, expected: int
) -> None:
    policy = dataclasses.replace(Policy(), video=VideoOptions(encoder_threads=given))
    with open_executor(Settings(), models=StaticModels(), policy=policy, processes=1) as executor:
        assert isinstance(executor, InProcess)
        assert executor.policy.video.encoder_threads == expected
        assert dataclasses.replace(executor.policy.video, encoder_threads=given) == policy.video


def test_open_executor_fails_on_an_unreachable_ray_cluster_before_the_context() -> None:
    with pytest.raises(ConfigurationError, match="Ray"):
        open_executor(Settings(), models=StaticModels(), policy=Policy(), processes=1, ray_address="127.0.0.1:9")
