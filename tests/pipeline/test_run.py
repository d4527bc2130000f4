"""AuditedRun and run_plan: leftovers, failures and files audited in plan order, sequentially or with files in
flight, and a run finished with the status its results and its ending call for."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.detection import StaticModels
from efface.errors import CorruptImageError
from efface.media.atomic import claim, release, remove_if_leftover, temp_path_for
from efface.pipeline import FileJob, Policy, plan_jobs, results
from efface.pipeline.pool import InProcess, ProcessPool
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import AnonymizationResult, BBox, Face, Outcome, RunStatus, WriteMode

FACE = Face(BBox(10, 10, 40, 40), 0.9)


def _static_models() -> StaticModels:
    """Models that 'find' one face everywhere; module level, so pool processes can build them."""
    return StaticModels(faces=(FACE,))


def _begin(store: AuditStore, **kwargs: object) -> AuditedRun:
    return AuditedRun.begin(
        store, command="anonymize", mode=WriteMode.IN_PLACE, models=_static_models(), settings={}, **kwargs
    )


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_every_file_is_audited_in_plan_order(tmp_path: Path, sqlite_url: str, processes: int) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(9):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    temp_path_for(folder / "0.png").write_bytes(b"left by a killed run")
    policy = Policy()
    plan = plan_jobs([folder])
    seen: list[AnonymizationResult] = []
    with AuditStore(sqlite_url) as store:
        if processes == 1:
            executor: InProcess | ProcessPool = InProcess(_static_models(), policy)
        else:
            executor = ProcessPool(_static_models, policy, processes=processes)
        with contextlib.closing(executor), _begin(store, on_result=seen.append) as run:
            run_plan(plan.items(), executor=executor, run=run)
        summary = run.summary
        every_row = store.list_files(run.run_id, with_pending=True)
        stored = store.get_run(run.run_id)
        store_rows = store.list_files(run.run_id)
    # Each replaced file: its pending row (written before the replace), then its own row.
    pending = [(row.path, row.output_sha256) for row in every_row if row.outcome is Outcome.PENDING]
    rows = [row for row in every_row if row.outcome is not Outcome.PENDING]
    replaced = [(row.path, row.output_sha256) for row in rows if row.outcome is Outcome.ANONYMIZED]
    assert pending == replaced and len(replaced) == 9
    assert rows == store_rows
    for before, after in itertools.pairwise(every_row):
        if after.outcome is Outcome.ANONYMIZED:
            assert (before.outcome, before.path) == (Outcome.PENDING, after.path)
    assert [row.outcome for row in rows[:1]] == [Outcome.LEFTOVER_REMOVED]
    assert [Path(row.path) for row in rows[1:]] == [job.source for job in plan.jobs()]
    assert [r.path for r in seen] == [Path(row.path) for row in rows]
    assert summary is not None
    assert (summary.files_total, summary.files_failed, summary.status) == (10, 1, RunStatus.FAILED)
    assert summary.faces_anonymized == 9
    assert (stored.status, stored.files_total, stored.files_failed) == (RunStatus.FAILED, 10, 1)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def _ok(path: str) -> AnonymizationResult:
    return results.skipped(
        Path(path), mode=WriteMode.IN_PLACE, output_path=Path(path), started_at=datetime.now(UTC), duration_s=0.0
    )


def test_a_run_without_failures_completes_and_counts_no_leftover(sqlite_url: str) -> None:
    with AuditStore(sqlite_url) as store:
        with _begin(store) as run:
            run.record(_ok("/a.jpg"))
            run.record(results.leftover_removed(Path("/.a.tmp"), mode=WriteMode.IN_PLACE, started_at=datetime.now(UTC)))
        stored = store.get_run(run.run_id)
    assert (stored.status, stored.files_total, stored.files_failed) == (RunStatus.COMPLETED, 1, 0)


def test_a_run_ended_by_an_exception_is_interrupted_and_keeps_what_it_recorded(sqlite_url: str) -> None:
    with AuditStore(sqlite_url) as store:
        run = _begin(store)

        def interrupted_after_one_file() -> None:
            with run:
                run.record(_ok("/a.jpg"))
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            interrupted_after_one_file()
        stored = store.get_run(run.run_id)
        assert len(store.list_files(run.run_id)) == 1
    assert (stored.status, stored.files_total) == (RunStatus.INTERRUPTED, 1)
    assert stored.finished_at is not None


def test_a_failure_fails_the_run_and_a_run_is_finished_once(sqlite_url: str) -> None:
    error = CorruptImageError("truncated", path=Path("/b.jpg"))
    with AuditStore(sqlite_url) as store:
        run = _begin(store)
        run.record(results.failed(Path("/b.jpg"), error, mode=WriteMode.IN_PLACE))
        first = run.finish()
        assert run.finish() is first
        rows = store.list_files(run.run_id)
        assert store.verify().is_intact
    assert first.status is RunStatus.FAILED
    assert (rows[0].error_class, rows[0].error_message) == ("CorruptImageError", "truncated")


def test_results_recorded_from_many_threads_are_all_counted(sqlite_url: str) -> None:
    with AuditStore(sqlite_url) as store:
        with _begin(store) as run:
            threads = [
                threading.Thread(target=lambda i=i: [run.record(_ok(f"/{i}-{n}.jpg")) for n in range(10)])
                for i in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        stored = store.get_run(run.run_id)
        assert len(store.list_files(run.run_id)) == 40
    assert stored.files_total == 40


def _pending_row(path: Path, *, output_sha256: str, source_sha256: str) -> AnonymizationResult:
    return AnonymizationResult(
        path,
        Outcome.PENDING,
        WriteMode.IN_PLACE,
        datetime.now(UTC),
        0.1,
        output_path=path,
        faces=(FACE,),
        faces_anonymized=1,
        output_sha256=output_sha256,
        image_format="PNG",
        resolution_wh=(80, 60),
        details={"rewritten": True, "intended_outcome": "anonymized", "source_sha256": source_sha256},
    )


@pytest.mark.parametrize(
    ("on_disk", "settled", "then"),
    [
        ("output", Outcome.ANONYMIZED, Outcome.SKIPPED),
        ("source", Outcome.ERROR, Outcome.ANONYMIZED),
        ("other", Outcome.ERROR, Outcome.ANONYMIZED),
    ],
)
def test_the_next_run_settles_an_unconfirmed_replace_from_the_file_on_disk(
    tmp_path: Path, sqlite_url: str, on_disk: str, settled: Outcome, then: Outcome
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / "a.png"
    rng = np.random.default_rng(1)
    contents = {}
    for name in ("source", "output", "other"):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photo)
        contents[name] = photo.read_bytes()
    photo.write_bytes(contents[on_disk])
    sha = {name: hashlib.sha256(content).hexdigest() for name, content in contents.items()}
    with AuditStore(sqlite_url) as store:
        with _begin(store) as lost:  # a run that wrote its intent and was lost before the confirmation
            store.record_file(
                lost.run_id, _pending_row(photo, output_sha256=sha["output"], source_sha256=sha["source"])
            )
        with _begin(store) as run:
            run_plan(plan_jobs([folder]).items(), executor=InProcess(_static_models(), Policy()), run=run)
        lost_rows = store.list_files(lost.run_id, with_pending=True)
        next_rows = store.list_files(run.run_id)
        assert store.unsettled_pending(photo) == []
        assert store.verify().is_intact
    assert [row.outcome for row in lost_rows] == [Outcome.PENDING, settled]
    assert lost_rows[1].details["settled_by_run"] == run.run_id
    assert (lost_rows[1].faces_detected, lost_rows[1].output_sha256) == (1, sha["output"])
    if settled is Outcome.ERROR:
        expected = "left as it was" if on_disk == "source" else "changed since"
        assert lost_rows[1].error_class == "OutputError" and expected in str(lost_rows[1].error_message)
    assert [row.outcome for row in next_rows] == [then]


def _photo(folder: Path, name: str, seed: int) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("processes", [1, 2])
def test_a_staged_output_stays_locked_from_its_worker_to_the_swap(tmp_path: Path, processes: int) -> None:
    # A sweep of leftovers (another run's, or this run's own, of a folder given twice) never takes a staged file:
    # the worker's lock travels with it to the process that swaps it in.
    photos = [_photo(tmp_path / "photos", f"{index}.png", index) for index in range(3)]
    jobs = [FileJob(source=photo, destination=photo) for photo in photos]
    executor = (
        InProcess(_static_models(), Policy())
        if processes == 1
        else ProcessPool(_static_models, Policy(), processes=processes)
    )
    with contextlib.closing(executor):
        for photo, done in zip(photos, executor.results(jobs), strict=True):
            assert done.staged is not None
            assert not remove_if_leftover(done.staged.temp_path)
            assert done.staged.temp_path.exists()
            before = photo.read_bytes()
            claim(done.staged).commit()
            assert photo.read_bytes() != before
            assert hashlib.sha256(photo.read_bytes()).hexdigest() == done.result.output_sha256
    assert not [p for p in (tmp_path / "photos").iterdir() if p.name.startswith(".")]


def test_a_staged_output_swept_before_the_swap_fails_its_file_left_as_it_was(tmp_path: Path, sqlite_url: str) -> None:
    # What a Ray driver meets when a sweep took the staged file while no process held its lock.
    photo, other = _photo(tmp_path / "photos", "a.png", 1), _photo(tmp_path / "photos", "b.png", 2)
    original = photo.read_bytes()
    executor = InProcess(_static_models(), Policy())
    with AuditStore(sqlite_url) as store, _begin(store) as run:
        staged = executor.results([FileJob(source=photo, destination=photo), FileJob(source=other, destination=other)])
        done = next(staged)
        assert done.staged is not None
        release(done.staged)
        assert remove_if_leftover(done.staged.temp_path)
        run.commit(done)
        run.commit(next(staged))
        rows = store.list_files(run.run_id, with_pending=True)
    assert photo.read_bytes() == original
    assert [(Path(str(row.path)).name, row.outcome) for row in rows] == [
        ("a.png", Outcome.ERROR),
        ("b.png", Outcome.PENDING),
        ("b.png", Outcome.ANONYMIZED),
    ]
    assert rows[0].error_class == "OutputError" and "staged output was deleted" in str(rows[0].error_message)
    assert run.summary is not None and run.summary.status is RunStatus.FAILED


def test_a_source_changed_before_the_drivers_swap_is_refused_and_settles_its_pending_row(
    tmp_path: Path, sqlite_url: str
) -> None:
    photo = _photo(tmp_path / "photos", "a.png", 1)
    with AuditStore(sqlite_url) as store, _begin(store) as run:
        done = next(InProcess(_static_models(), Policy()).results([FileJob(source=photo, destination=photo)]))
        photo.write_bytes(photo.read_bytes() + b"appended meanwhile")
        changed = photo.read_bytes()
        run.commit(done)
        rows = store.list_files(run.run_id, with_pending=True)
        assert store.unsettled_pending(photo) == []
    assert photo.read_bytes() == changed
    assert [row.outcome for row in rows] == [Outcome.PENDING, Outcome.ERROR]
    assert rows[1].error_class == "SourceChangedError"
    assert not [p for p in photo.parent.iterdir() if p.name.startswith(".")]


def test_every_hard_linked_name_is_swapped_by_the_driver_after_the_pending_row(tmp_path: Path, sqlite_url: str) -> None:
    photo = _photo(tmp_path / "photos", "a.png", 1)
    link = photo.with_name("b.png")
    os.link(photo, link)
    original = photo.read_bytes()
    with AuditStore(sqlite_url) as store, _begin(store) as run:
        run_plan(plan_jobs([photo.parent]).items(), executor=InProcess(_static_models(), Policy()), run=run)
        rows = store.list_files(run.run_id, with_pending=True)
    assert [row.outcome for row in rows] == [Outcome.PENDING, Outcome.ANONYMIZED]
    assert rows[1].details["hard_links"] == [str(photo), str(link)]
    assert photo.read_bytes() != original
    assert os.path.samefile(photo, link)
    assert hashlib.sha256(link.read_bytes()).hexdigest() == rows[0].output_sha256 == rows[1].output_sha256
