from __future__ import annotations

import gc
import os
from collections.abc import Iterable
from pathlib import Path, PurePath

import pytest

from efface.errors import ConfigurationError
from efface.media.atomic import temp_path_for
from efface.media.sniff import MediaKind
from efface.pipeline import FileJob, Leftover, plan_jobs
from efface.pipeline.jobs import Plan, count_jobs_ahead
from efface.records import AnonymizationResult, Outcome, WriteMode


def _jobs(plan: Plan) -> list[FileJob]:
    return list(plan.jobs())


def _failures(plan: Plan) -> list[AnonymizationResult]:
    return [item for item in plan.items() if isinstance(item, AnonymizationResult) and item.outcome is Outcome.ERROR]


def _not_media(plan: Plan) -> list[Path | None]:
    return [
        item.path
        for item in plan.items()
        if isinstance(item, AnonymizationResult) and item.outcome is Outcome.NOT_MEDIA
    ]


def _described(items: Iterable[object]) -> list[object]:
    """Plan items comparable across two walks (a result made during the walk holds the time it was made)."""
    return [(item.path, item.outcome) if isinstance(item, AnonymizationResult) else item for item in items]


def _leftovers(plan: Plan) -> list[Path]:
    return [item.path for item in plan.items() if isinstance(item, Leftover)]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("1.jpg", "a/2.PNG", "a/b/3.webp", "a/b/4.gif", "notes.txt", "a/.hidden.jpeg"):
        (root / rel).write_bytes(b"x")
    return root


def test_folder_is_walked_recursively_in_place(tree: Path) -> None:
    plan = plan_jobs([tree])
    names = [job.source.relative_to(tree).as_posix() for job in _jobs(plan)]
    # .txt is not a picture; a GIF is, and is planned so that it is reported, not silently skipped.
    assert names == ["1.jpg", "a/.hidden.jpeg", "a/2.PNG", "a/b/3.webp", "a/b/4.gif"]
    assert all(job.destination == job.source for job in _jobs(plan))
    assert plan.mode is WriteMode.IN_PLACE and not _failures(plan)
    assert _not_media(plan) == [tree / "notes.txt"]  # looked at, audited, left as it is


def test_output_dir_mirrors_the_tree(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    single = tmp_path / "single.jpg"
    single.write_bytes(b"x")
    plan = plan_jobs([tree, single], output_dir=out)
    destinations = {job.destination.relative_to(out).as_posix() for job in _jobs(plan)}
    assert "photos/a/b/3.webp" in destinations and "single.jpg" in destinations
    assert plan.mode is WriteMode.OUTPUT_DIR


def test_output_dir_inside_the_input_is_not_walked(tree: Path) -> None:
    out = tree / "anonymized"
    (out / "photos").mkdir(parents=True)
    (out / "photos" / "1.jpg").write_bytes(b"x")
    plan = plan_jobs([tree], output_dir=out)
    assert _jobs(plan) and all(out not in job.source.parents for job in _jobs(plan))


def test_output_dir_equal_to_input_is_refused(tree: Path) -> None:
    with pytest.raises(ConfigurationError, match="also an input folder"):
        plan_jobs([tree], output_dir=tree)


def test_dry_run_has_no_destinations(tree: Path) -> None:
    plan = plan_jobs([tree], dry_run=True)
    assert plan.mode is WriteMode.DRY_RUN and all(job.destination is None for job in _jobs(plan))


def test_missing_path_and_empty_folder_are_failures(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    plan = plan_jobs([empty, tmp_path / "nope.jpg"])
    failures = _failures(plan)
    assert [(f.path.name, f.error_class) for f in failures] == [
        ("nope.jpg", "InputNotFoundError"),  # known before the walk, reported first
        ("empty", "InputNotFoundError"),
    ]
    assert "no image or video files" in failures[1].error_message


def test_duplicates_and_symlinks_resolve_to_the_real_file(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.jpg"
    link.symlink_to(tree / "1.jpg")
    plan = plan_jobs([tree / "1.jpg", link, tree / "1.jpg"])
    assert [job.source for job in _jobs(plan)] == [(tree / "1.jpg").resolve()]


def test_dangling_link_and_fifo_are_failures(tmp_path: Path) -> None:
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "missing.jpg")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    plan = plan_jobs([dangling, fifo])
    assert not _jobs(plan)
    assert sorted(f.error_class for f in _failures(plan)) == ["InputNotFoundError", "UnreadableFileError"]


def test_leftovers_are_found_for_folders_and_files(tree: Path) -> None:
    nested = temp_path_for(tree / "a" / "2.PNG")
    nested.write_bytes(b"partial")
    plan = plan_jobs([tree])
    assert _leftovers(plan) == [nested]
    assert nested not in [job.source for job in _jobs(plan)]
    single = plan_jobs([tree / "a" / "2.PNG"])
    assert _leftovers(single) == [nested]
    # A folder's leftovers come before any of its files, so none can be the temporary file of a file in flight.
    items = list(plan.items())
    (position,) = [i for i, item in enumerate(items) if isinstance(item, Leftover)]
    assert all(item.source.parent != nested.parent for item in items[:position] if isinstance(item, FileJob))


def test_the_walk_is_lazy_one_folder_at_a_time(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
        (root / folder / "1.jpg").write_bytes(b"x")
    items = plan_jobs([root]).items()
    first = next(items)
    assert isinstance(first, FileJob) and first.source == root / "a" / "1.jpg"
    # Folder b is listed only when the run gets there: a file added now is still planned.
    (root / "b" / "2.jpg").write_bytes(b"x")
    assert [item.source.relative_to(root).as_posix() for item in items] == ["b/1.jpg", "b/2.jpg"]


def test_memory_does_not_grow_with_the_number_of_files(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    for folder in range(40):
        (root / f"{folder:02d}").mkdir(parents=True)
        for index in range(500):
            (root / f"{folder:02d}" / f"{index:04d}.jpg").touch()
    gc.collect()
    # What earlier tests in the same process left alive (a review session's jobs, say) is not this walk's.
    jobs_before = sum(isinstance(obj, FileJob) for obj in gc.get_objects())
    paths_before = sum(isinstance(obj, PurePath) for obj in gc.get_objects())
    jobs = plan_jobs([root]).jobs()
    for _ in range(10_000):  # half way through
        next(jobs)
    gc.collect()
    live_jobs = sum(isinstance(obj, FileJob) for obj in gc.get_objects()) - jobs_before
    live_paths = sum(isinstance(obj, PurePath) for obj in gc.get_objects()) - paths_before
    # Holding the plan would keep 20,000 jobs and paths alive; the walk holds one folder's listing (500).
    assert live_jobs <= 1, live_jobs
    assert live_paths < 1_500, live_paths
    assert sum(1 for _ in jobs) == 10_000


def test_a_folder_that_cannot_be_listed_is_a_failure_not_a_silent_skip(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scandir = os.scandir

    def scandir(path: os.PathLike[str]) -> object:
        if Path(path).name == "b":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr("efface.pipeline.jobs.os.scandir", scandir)
    plan = plan_jobs([tree])
    ((failure),) = _failures(plan)
    assert failure.path == tree / "a" / "b" and failure.error_class == "UnreadableFileError"
    assert failure.error_message == "cannot list folder: Permission denied"
    assert [job.source.name for job in _jobs(plan)] == ["1.jpg", ".hidden.jpeg", "2.PNG"]


def test_paths_inside_given_folders_are_planned_once(tree: Path) -> None:
    plan = plan_jobs([tree / "a" / "2.PNG", tree / "a", tree])
    sources = [job.source.relative_to(tree).as_posix() for job in _jobs(plan)]
    assert sources == ["1.jpg", "a/.hidden.jpeg", "a/2.PNG", "a/b/3.webp", "a/b/4.gif"]


def test_links_in_a_folder_are_followed_once_to_the_file_itself(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"x")
    (tree / "z_link_inside.jpg").symlink_to(tree / "1.jpg")
    (tree / "z_link_outside.jpg").symlink_to(outside)
    (tree / "a" / "z_link_outside_again.jpg").symlink_to(outside)
    jobs = _jobs(plan_jobs([tree]))
    assert sorted(str(job.source.relative_to(tmp_path)) for job in jobs) == [
        "elsewhere.jpg",
        "photos/1.jpg",
        "photos/a/.hidden.jpeg",
        "photos/a/2.PNG",
        "photos/a/b/3.webp",
        "photos/a/b/4.gif",
    ]
    assert all(job.destination == job.source for job in jobs)  # the file is replaced, not the link


def test_two_inputs_with_one_name_collide_only_where_their_files_do(tmp_path: Path) -> None:
    first, second = tmp_path / "x" / "photos", tmp_path / "y" / "photos"
    for folder, names in ((first, ("1.jpg", "2.jpg")), (second, ("2.jpg", "3.jpg"))):
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(b"x")
    out = tmp_path / "out"
    plan = plan_jobs([first, second], output_dir=out)
    assert [job.destination.relative_to(out).as_posix() for job in _jobs(plan)] == [
        "photos/1.jpg",
        "photos/2.jpg",
        "photos/3.jpg",
    ]
    ((failure),) = _failures(plan)
    assert failure.path == second / "2.jpg" and "another input also maps to" in failure.error_message


def test_output_folder_leftovers_come_before_any_file(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "photos").mkdir(parents=True)
    stale = temp_path_for(out / "photos" / "1.jpg")
    stale.write_bytes(b"partial")
    items = list(plan_jobs([tree], output_dir=out).items())
    assert items[0] == Leftover(stale)
    assert not [item for item in items[1:] if isinstance(item, Leftover)]


@pytest.mark.parametrize(("limit", "expected"), [(1, 1), (2, 2), (5, 5), (9, 5)])
def test_count_jobs_ahead_keeps_every_item(tree: Path, limit: int, expected: int) -> None:
    plan = plan_jobs([tree, tree.parent / "missing.jpg"])
    found, items = count_jobs_ahead(plan.items(), limit=limit)
    assert found == expected
    assert _described(items) == _described(plan.items())


def test_a_link_to_a_folder_is_reported_not_followed(tree: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "9.jpg").write_bytes(b"x")
    (tree / "linked").symlink_to(elsewhere, target_is_directory=True)
    plan = plan_jobs([tree])
    ((failure),) = _failures(plan)
    assert failure.path == tree / "linked" and "symbolic link to a folder" in failure.error_message
    assert "9.jpg" not in [job.source.name for job in _jobs(plan)]


def test_files_are_taken_by_content_not_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "card"
    folder.mkdir()
    (folder / "DSC0001").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # a JPEG head, no extension
    (folder / "b.jfif").write_bytes(b"\xff\xd8\xff\xe1" + b"\x00" * 64)
    (folder / "c.mts").write_bytes((b"\x00" * 4 + b"G" + b"\x00" * 187) * 5)  # an M2TS head
    (folder / "d.mts").write_text("export const x: number = 1;\n")  # TypeScript
    (folder / "e.jpg").write_text("a text file named like a picture\n")
    (folder / "f.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 20)
    plan = plan_jobs([folder])
    assert [(job.source.name, job.kind) for job in _jobs(plan)] == [
        ("DSC0001", MediaKind.IMAGE),
        ("b.jfif", MediaKind.IMAGE),
        ("c.mts", MediaKind.VIDEO),
        ("e.jpg", MediaKind.IMAGE),  # its name claims a picture: the decoder refuses it aloud
    ]
    assert _not_media(plan) == [folder / "d.mts", folder / "f.wav"]
    reasons = {item.path.name: item.details["reason"] for item in plan.items() if isinstance(item, AnonymizationResult)}
    assert reasons == {"d.mts": "content not recognised as a picture or video", "f.wav": "WAV audio"}


def test_symbolic_link_loops_are_failures_not_exceptions(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "ring_a").symlink_to("ring_b")
    (folder / "ring_b").symlink_to("ring_a")
    given = tmp_path / "self"
    given.symlink_to("self")
    plan = plan_jobs([given, folder])
    assert [job.source.name for job in _jobs(plan)] == ["1.jpg"]
    failures = _failures(plan)
    assert [(f.path.name, f.error_class) for f in failures if f.path is not None] == [
        ("self", "UnreadableFileError"),
        ("loop.jpg", "UnreadableFileError"),
        ("ring_a", "UnreadableFileError"),
        ("ring_b", "UnreadableFileError"),
    ]
    assert all("symbolic link loop" in str(f.error_message) for f in failures)
