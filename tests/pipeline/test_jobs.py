from __future__ import annotations

import os
from pathlib import Path

import pytest

from efface.errors import ConfigurationError
from efface.media.atomic import temp_path_for
from efface.pipeline import plan_jobs
from efface.records import WriteMode


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("1.jpg", "a/2.PNG", "a/b/3.webp", "a/b/4.gif", "notes.txt", "a/.hidden.jpeg"):
        (root / rel).write_bytes(b"x")
    return root


def test_folder_is_walked_recursively_in_place(tree: Path) -> None:
    plan = plan_jobs([tree])
    names = [job.source.relative_to(tree).as_posix() for job in plan.jobs]
    # .txt is not a picture; a GIF is, and is planned so that it is reported, not silently skipped.
    assert names == ["1.jpg", "a/.hidden.jpeg", "a/2.PNG", "a/b/3.webp", "a/b/4.gif"]
    assert all(job.destination == job.source for job in plan.jobs)
    assert plan.mode is WriteMode.IN_PLACE and not plan.failures


def test_output_dir_mirrors_the_tree(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    single = tmp_path / "single.jpg"
    single.write_bytes(b"x")
    plan = plan_jobs([tree, single], output_dir=out)
    destinations = {job.destination.relative_to(out).as_posix() for job in plan.jobs}
    assert "photos/a/b/3.webp" in destinations and "single.jpg" in destinations
    assert plan.mode is WriteMode.OUTPUT_DIR


def test_output_dir_inside_the_input_is_not_walked(tree: Path) -> None:
    out = tree / "anonymized"
    (out / "photos").mkdir(parents=True)
    (out / "photos" / "1.jpg").write_bytes(b"x")
    plan = plan_jobs([tree], output_dir=out)
    assert all(out not in job.source.parents for job in plan.jobs)


def test_output_dir_equal_to_input_is_refused(tree: Path) -> None:
    with pytest.raises(ConfigurationError, match="also an input folder"):
        plan_jobs([tree], output_dir=tree)


def test_dry_run_has_no_destinations(tree: Path) -> None:
    plan = plan_jobs([tree], dry_run=True)
    assert plan.mode is WriteMode.DRY_RUN and all(job.destination is None for job in plan.jobs)


def test_missing_path_and_empty_folder_are_failures(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    plan = plan_jobs([tmp_path / "nope.jpg", empty])
    assert [(f.path.name, f.error_class) for f in plan.failures] == [
        ("nope.jpg", "InputNotFoundError"),
        ("empty", "InputNotFoundError"),
    ]
    assert "no image or video files" in plan.failures[1].error_message


def test_duplicates_and_symlinks_resolve_to_the_real_file(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.jpg"
    link.symlink_to(tree / "1.jpg")
    plan = plan_jobs([tree / "1.jpg", link, tree / "1.jpg"])
    assert [job.source for job in plan.jobs] == [(tree / "1.jpg").resolve()]


def test_dangling_link_and_fifo_are_failures(tmp_path: Path) -> None:
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "missing.jpg")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    plan = plan_jobs([dangling, fifo])
    assert not plan.jobs
    assert sorted(f.error_class for f in plan.failures) == ["InputNotFoundError", "UnreadableFileError"]


def test_leftovers_are_found_for_folders_and_files(tree: Path) -> None:
    nested = temp_path_for(tree / "a" / "2.PNG")
    nested.write_bytes(b"partial")
    plan = plan_jobs([tree])
    assert plan.leftovers == (nested,)
    assert nested not in [job.source for job in plan.jobs]
    single = plan_jobs([tree / "a" / "2.PNG"])
    assert single.leftovers == (nested,)
