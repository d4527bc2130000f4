"""The process pool: results in job order, a process killed mid-file, and an interruption that drains."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efface.detection import StaticDetector, StaticModels
from efface.media.atomic import claim
from efface.pipeline import FileJob, Policy
from efface.pipeline.core import StagedResult
from efface.pipeline.pool import InProcess, ProcessPool
from efface.records import AnonymizationResult, BBox, Face, Outcome

POISON_WIDTH = 77  # an image this wide kills the process that detects on it


class _KillingDetector(StaticDetector):
    """Finds one face, except on a poisoned image, where it kills its own process (as an OOM kill would)."""

    def detect(self, image: np.ndarray) -> tuple[Face, ...]:
        if image.shape[1] == POISON_WIDTH:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().detect(image)


def _killing_models() -> StaticModels:
    return StaticModels(_KillingDetector((Face(BBox(5, 5, 30, 30), 0.9),)))


def _images(folder: Path, widths: list[int]) -> list[FileJob]:
    folder.mkdir()
    jobs = []
    for index, width in enumerate(widths):
        path = folder / f"{index:02d}.png"
        Image.fromarray(np.full((60, width, 3), 100 + index, np.uint8)).save(path)
        jobs.append(FileJob(source=path, destination=path))
    return jobs


def _committed(done: StagedResult) -> AnonymizationResult:
    """The result, its staged output swapped in (what an audited run does once it recorded the intent)."""
    if done.staged is not None:
        claim(done.staged).commit()
    return done.result


def test_pool_returns_results_in_job_order(tmp_path: Path) -> None:
    jobs = _images(tmp_path / "photos", [60 + i for i in range(7)])
    with ProcessPool(_killing_models, Policy(), processes=2) as pool:
        results = [_committed(done) for done in pool.results(jobs)]
    assert [r.path for r in results] == [job.source for job in jobs]
    assert all(r.outcome is Outcome.ANONYMIZED for r in results)


def test_a_process_killed_mid_file_fails_that_file_only(tmp_path: Path) -> None:
    widths = [60, 61, POISON_WIDTH, 62, 63, 64]
    jobs = _images(tmp_path / "photos", widths)
    poisoned = jobs[2].source.read_bytes()
    with ProcessPool(_killing_models, Policy(), processes=2) as pool:
        results = [_committed(done) for done in pool.results(jobs)]
    assert [r.path for r in results] == [job.source for job in jobs]
    outcomes = [r.outcome for r in results]
    assert outcomes == [Outcome.ANONYMIZED] * 2 + [Outcome.ERROR] + [Outcome.ANONYMIZED] * 3
    assert results[2].error_class == "WorkerCrashedError"
    assert jobs[2].source.read_bytes() == poisoned
    assert not [p for p in (tmp_path / "photos").iterdir() if p.name.startswith(".")]


def test_drain_after_an_interruption_returns_the_files_in_flight(tmp_path: Path) -> None:
    jobs = _images(tmp_path / "photos", [60 + i for i in range(8)])
    with ProcessPool(_killing_models, Policy(), processes=2) as pool:
        stream = pool.results(jobs)
        first = _committed(next(stream))
        stream.close()  # what a Ctrl-C in the consumer does to the generator
        drained = [_committed(staged) for staged in pool.drain()]
    done = [first, *drained]
    assert [r.path for r in done] == [job.source for job in jobs[: len(done)]]
    assert 1 < len(done) < len(jobs)
    assert all(r.outcome is Outcome.ANONYMIZED for r in done)


def test_in_process_has_nothing_to_drain(tmp_path: Path) -> None:
    jobs = _images(tmp_path / "photos", [60, 61])
    executor = InProcess(_killing_models(), Policy())
    assert [_committed(done).outcome for done in executor.results(jobs)] == [Outcome.ANONYMIZED] * 2
    assert executor.drain() == []


def test_pool_size_is_checked() -> None:
    with pytest.raises(ValueError, match="processes must be >= 1"):
        ProcessPool(_killing_models, Policy(), processes=0)
