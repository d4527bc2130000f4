"""Tests for efface.media.atomic on the real file system (no mocks)."""

from __future__ import annotations

import os
import re
import socket
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from efface.errors import OutputError
from efface.media.atomic import (
    TEMP_MARKER,
    atomic_write_bytes,
    find_leftovers,
    is_leftover,
    leftovers_of,
    release,
    remove_if_leftover,
    stage_bytes,
    temp_path_for,
)


def _tree(folder: Path) -> set[Path]:
    return {Path(dirpath) / name for dirpath, _dirs, names in os.walk(folder) for name in names}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\xff\xd8\xff\xe0 a jpeg-ish start", os.urandom(3 * 1024 * 1024 + 7)],
    ids=["empty", "one-byte", "short", "three-mib"],
)
def test_atomic_write_creates_a_new_file_with_exact_content(tmp_path: Path, data: bytes) -> None:
    target = tmp_path / "out.jpg"

    atomic_write_bytes(target, data)

    assert target.read_bytes() == data
    assert _tree(tmp_path) == {target}


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"original photo bytes", b"anonymized"), (b"short", b"much longer anonymized content" * 100), (b"x", b"")],
    ids=["shrinks", "grows", "to-empty"],
)
def test_atomic_write_replaces_an_existing_file(tmp_path: Path, old: bytes, new: bytes) -> None:
    target = tmp_path / "photo.png"
    target.write_bytes(old)
    old_inode = target.stat().st_ino

    atomic_write_bytes(target, new)

    assert target.read_bytes() == new
    assert target.stat().st_ino != old_inode  # swapped in by rename, never rewritten in place
    assert _tree(tmp_path) == {target}


def test_atomic_write_replaces_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "a.jpg"
    neighbour = tmp_path / "b.jpg"
    target.write_bytes(b"old")
    neighbour.write_bytes(b"neighbour")

    atomic_write_bytes(target, b"new")

    assert neighbour.read_bytes() == b"neighbour"
    assert _tree(tmp_path) == {target, neighbour}


@pytest.mark.parametrize("mode", [0o640, 0o600, 0o644, 0o755, 0o444], ids=oct)
def test_atomic_write_copies_permissions(tmp_path: Path, mode: int) -> None:
    original = tmp_path / "photo.jpg"
    original.write_bytes(b"original")
    original.chmod(mode)

    atomic_write_bytes(original, b"anonymized", permissions_from=original)

    assert original.read_bytes() == b"anonymized"
    assert _mode(original) == mode
    assert _tree(tmp_path) == {original}


def test_atomic_write_copies_permissions_from_another_file(tmp_path: Path) -> None:
    source = tmp_path / "in" / "photo.jpg"
    source.parent.mkdir()
    source.write_bytes(b"original")
    source.chmod(0o640)
    target = tmp_path / "photo.jpg"

    atomic_write_bytes(target, b"anonymized", permissions_from=source)

    assert _mode(target) == 0o640
    assert _mode(source) == 0o640
    assert source.read_bytes() == b"original"


def _missing_folder(tmp_path: Path) -> tuple[Path, Path | None]:
    return tmp_path / "no-such-folder" / "out.jpg", None


def _target_is_folder(tmp_path: Path) -> tuple[Path, Path | None]:
    target = tmp_path / "out.jpg"
    target.mkdir()
    (target / "inside.txt").write_bytes(b"keep me")
    return target, None


def _permissions_source_missing(tmp_path: Path) -> tuple[Path, Path | None]:
    target = tmp_path / "out.jpg"
    target.write_bytes(b"original content")
    return target, tmp_path / "vanished.jpg"


FAILURES = [
    ("target-folder-missing", _missing_folder),
    ("target-is-a-folder", _target_is_folder),
    ("permissions-source-missing", _permissions_source_missing),
]


@pytest.mark.parametrize("arrange", [case[1] for case in FAILURES], ids=[case[0] for case in FAILURES])
def test_atomic_write_failure_raises_output_error_and_changes_nothing(
    tmp_path: Path, arrange: Callable[[Path], tuple[Path, Path | None]]
) -> None:
    target, permissions_from = arrange(tmp_path)
    before = _tree(tmp_path)
    content_before = {path: path.read_bytes() for path in before}

    with pytest.raises(OutputError) as excinfo:
        atomic_write_bytes(target, b"new content", permissions_from=permissions_from)

    assert type(excinfo.value) is OutputError
    assert excinfo.value.path == target
    assert "\n" not in str(excinfo.value)
    assert str(target) in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, OSError)
    assert _tree(tmp_path) == before
    assert {path: path.read_bytes() for path in before} == content_before
    assert list(find_leftovers(tmp_path)) == []


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("photo.jpg", ".jpg"),
        ("Photo.JPEG", ".JPEG"),
        ("archive.tar.png", ".png"),
        ("README", ""),
        (".hidden.webp", ".webp"),
        ("x" * 251 + ".jpg", ".jpg"),  # 255 bytes, NAME_MAX: the temporary name must still fit
        ("é" * 120 + ".mp4", ".mp4"),  # 124 characters, 244 bytes
        ("photo." + "y" * 40, ""),  # an absurd extension is not kept
    ],
)
def test_temp_path_is_hidden_beside_the_target_short_and_keeps_the_extension(
    tmp_path: Path, name: str, suffix: str
) -> None:
    target = tmp_path / "sub" / name

    temp = temp_path_for(target)

    assert temp.parent == target.parent
    assert re.fullmatch(rf"{re.escape(TEMP_MARKER)}[0-9a-f]{{12}}{re.escape(suffix)}", temp.name)
    assert len(temp.name.encode()) <= 255
    if suffix:
        assert temp.suffix == suffix
    assert is_leftover(temp)
    assert not is_leftover(target)


def test_temp_paths_are_unique(tmp_path: Path) -> None:
    target = tmp_path / "photo.jpg"

    assert len({temp_path_for(target) for _ in range(200)}) == 200


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".photo.jpg.efface-tmp-0123456789ab.jpg", True),  # as earlier versions named them
        (".efface-tmp-0123456789ab.jpg", True),
        (".efface-tmp-0123456789ab", True),
        (".README.efface-tmp-0123456789ab", True),
        (".DS_Store", False),
        (".gitignore", False),
        (".hidden.jpg", False),
        ("photo.jpg", False),
        ("photo.jpg.efface-tmp-0123456789ab.jpg", False),
        ("efface-tmp-notes.txt", False),
        ("", False),
    ],
)
def test_is_leftover(name: str, expected: bool) -> None:
    assert is_leftover(Path("/data/photos") / name if name else Path(name)) is expected


def test_find_leftovers_finds_nested_ones_and_ignores_normal_dotfiles(tmp_path: Path) -> None:
    deep = tmp_path / "2024" / "05" / ".trip"
    deep.mkdir(parents=True)
    leftovers = {
        temp_path_for(tmp_path / "a.jpg"),
        temp_path_for(tmp_path / "2024" / "b.png"),
        temp_path_for(deep / "c.webp"),
    }
    normal = {
        tmp_path / ".DS_Store",
        tmp_path / "a.jpg",
        tmp_path / "2024" / ".gitkeep",
        deep / "c.webp",
        deep / ".hidden.jpg",
    }
    for path in leftovers | normal:
        path.write_bytes(b"x")

    assert set(find_leftovers(tmp_path)) == leftovers


def test_find_leftovers_in_a_clean_or_empty_folder_finds_nothing(tmp_path: Path) -> None:
    assert list(find_leftovers(tmp_path)) == []
    (tmp_path / "a.jpg").write_bytes(b"x")
    atomic_write_bytes(tmp_path / "b.jpg", b"y")

    assert list(find_leftovers(tmp_path)) == []


def test_find_leftovers_does_not_follow_symlinked_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    temp_path_for(outside / "a.jpg").write_bytes(b"x")
    scanned = tmp_path / "scanned"
    scanned.mkdir()
    (scanned / "link").symlink_to(outside, target_is_directory=True)

    assert list(find_leftovers(scanned)) == []


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_bytes(b"kept")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _unix_socket(path: Path) -> None:
    # Bound by its name from inside its folder: a socket's path is limited to 107 bytes, a temporary folder's is not.
    here = Path.cwd()
    os.chdir(path.parent)
    try:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path.name)
        listener.close()  # the socket file stays
    finally:
        os.chdir(here)


@pytest.mark.parametrize("make", [_folder, _fifo, _unix_socket], ids=["folder", "fifo", "socket"])
def test_what_is_not_a_regular_file_under_a_temporary_name_is_left_alone(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    # efface only ever makes regular files: anything else named like its temporary files (beside a given file,
    # say) is someone's, and deleting it, or failing on it, is not the sweep's business.
    target = tmp_path / "photo.jpg"
    target.write_bytes(b"photo")
    other = tmp_path / f"{TEMP_MARKER}abc.jpg"
    make(other)

    assert leftovers_of(target) == [other]
    assert remove_if_leftover(other) is False
    assert other.exists()


def test_a_forked_child_does_not_keep_a_staged_file_locked(tmp_path: Path) -> None:
    """A fork shares the open file that holds a staged file's lock: without dropping its copies, a child would
    keep the lock after the parent let go of it, and a sweep would leave the leftover alone."""
    staged = stage_bytes(tmp_path / "out.jpg", b"new")
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork in a process with threads (pytest's)
        child = os.fork()
    if child == 0:  # the child: lives on, holding whatever it inherited, until the parent is done
        try:
            os.close(write_end)
            os.write(ready_write, b"!")  # its fork hooks have run
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"!"
        release(staged)  # as a parent killed before the swap: its lock is gone

        assert remove_if_leftover(staged.temp_path) is True
        assert not staged.temp_path.exists()
    finally:
        os.close(write_end)
        os.close(ready_read)
        os.waitpid(child, 0)
