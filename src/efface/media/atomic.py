"""Atomic file replacement: the new bytes go to a temporary file beside the target, are fsynced, and
``os.replace`` swaps them in; then the folder is fsynced. A kill at any moment leaves the target either
fully old or fully new.

Temporary files carry a short recognisable name (``.efface-tmp-<random><extension>``, well within NAME_MAX
whatever the target's name) so a later run can find and delete what an interrupted run left behind. The
process writing one holds an exclusive ``flock`` on it until the swap, so a sweep tells the live temporary
file of another run (left alone) from the leftover of a dead one (its lock went with the process).

In place, the replace goes ahead only while the file on disk is still the one that was read (an ``Original``):
device, inode, size and modification time are compared right before the swap. The new file keeps the
original's owner, group and mode, and a file with several names (hard links) has every name replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from efface.errors import OutputError, SourceChangedError

__all__ = [
    "TEMP_MARKER",
    "Original",
    "atomic_write_bytes",
    "atomic_write_with",
    "find_leftovers",
    "is_leftover",
    "leftovers_of",
    "original_of",
    "remove_if_leftover",
    "temp_path_for",
]

TEMP_MARKER = ".efface-tmp-"

# A temporary name keeps the target's extension (a muxer picks the container by it) unless that is absurdly long.
_MAX_SUFFIX_BYTES = 32
_CREATE_ATTEMPTS = 16

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Original:
    """The file an in-place write replaces, as it was when it was read.

    Attributes:
        device: ``st_dev`` when read.
        inode: ``st_ino`` when read.
        size_bytes: ``st_size`` when read.
        mtime_ns: ``st_mtime_ns`` when read.
        uid: its owner, which the new file keeps.
        gid: its group, which the new file keeps.
        mode: its permission bits (``0o7777``), which the new file keeps.
        other_names: its other names (hard links), each replaced too, so that all of them again name one file.
    """

    device: int
    inode: int
    size_bytes: int
    mtime_ns: int
    uid: int
    gid: int
    mode: int
    other_names: tuple[Path, ...] = ()

    def is_unchanged(self, status: os.stat_result) -> bool:
        """Whether ``status`` (of a name of the file, now) is still this file with this content."""
        return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns) == (
            self.device,
            self.inode,
            self.size_bytes,
            self.mtime_ns,
        )


def original_of(status: os.stat_result, *, other_names: tuple[Path, ...] = ()) -> Original:
    """The ``Original`` of a file from its ``os.stat``/``os.fstat`` taken when it was opened for reading."""
    return Original(
        device=status.st_dev,
        inode=status.st_ino,
        size_bytes=status.st_size,
        mtime_ns=status.st_mtime_ns,
        uid=status.st_uid,
        gid=status.st_gid,
        mode=status.st_mode & 0o7777,
        other_names=other_names,
    )


def temp_path_for(target: Path) -> Path:
    """A fresh hidden temporary name beside ``target`` that keeps its real extension.

    The name does not contain ``target``'s own name, so it fits NAME_MAX (255 bytes) however long that is.
    """
    suffix = target.suffix if len(os.fsencode(target.suffix)) <= _MAX_SUFFIX_BYTES else ""
    return target.with_name(f"{TEMP_MARKER}{secrets.token_hex(6)}{suffix}")


def is_leftover(path: Path) -> bool:
    """Whether a file name is one of efface's temporary names (also the longer ``.<name>.efface-tmp-...`` that
    earlier versions wrote)."""
    return path.name.startswith(".") and TEMP_MARKER in path.name


def leftovers_of(target: Path) -> list[Path]:
    """efface temporary files in ``target``'s folder: a temporary name does not say which file it was meant to
    replace, so any of them may be ``target``'s. Whether one is a leftover or is still being written,
    ``remove_if_leftover`` decides."""
    return [p for p in target.parent.glob(f"*{TEMP_MARKER}*") if is_leftover(p)]


def find_leftovers(folder: Path) -> Iterator[Path]:
    """Yields efface temporary files anywhere under ``folder`` (symlinked folders are not followed)."""
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            candidate = Path(dirpath) / name
            if is_leftover(candidate):
                yield candidate


def remove_if_leftover(path: Path) -> bool:
    """Deletes an efface temporary file unless a live process is still writing it (holds its lock).

    Args:
        path: a temporary file (``is_leftover``).

    Returns:
        True when it was deleted; False when it belongs to a live run (left alone) or is already gone.

    Raises:
        OSError: it could not be opened or deleted.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError:
        if not path.is_symlink():
            raise
        path.unlink(missing_ok=True)  # a link under a temporary name is not efface's, nor a live file
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            if not _names_open_file(path, fd):
                return False  # the writer swapped it in (or another sweep took it) meanwhile
        except FileNotFoundError:
            return False
        path.unlink()
        return True
    finally:
        os.close(fd)


def _names_open_file(path: Path, fd: int) -> bool:
    now, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _create_locked(target: Path) -> tuple[Path, int]:
    """Creates an empty temporary file beside ``target`` (mode 0600) and takes its lock; returns it, open."""
    for _attempt in range(_CREATE_ATTEMPTS):
        tmp = temp_path_for(target)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweep may have deleted the name between its creation and the lock: then take another one.
            if _names_open_file(tmp, fd):
                return tmp, fd
        except FileNotFoundError:
            pass
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise OutputError(f"cannot lock the temporary file: {exc.strerror or exc}", path=target) from exc
        os.close(fd)
    raise OutputError("cannot create a temporary file that stays (swept away each time)", path=target)


def _link_beside(tmp: Path, name: Path) -> Path:
    """A second temporary name, beside ``name``, for the file ``tmp`` (same inode, so the same lock)."""
    for _attempt in range(_CREATE_ATTEMPTS):
        link = temp_path_for(name)
        try:
            os.link(tmp, link)
        except FileExistsError:
            continue
        return link
    raise OutputError("cannot create a temporary name", path=name)


def _check_unchanged(name: Path, original: Original) -> None:
    try:
        status = os.stat(name)
    except FileNotFoundError as exc:
        raise SourceChangedError("was removed or moved while it was processed; nothing written", path=name) from exc
    if not original.is_unchanged(status):
        raise SourceChangedError(
            "changed on disk while it was processed; it was left as it now is (run again to anonymize it)",
            path=name,
        )


def _take_owner_and_mode(fd: int, original: Original, *, target: Path) -> None:
    held = os.fstat(fd)
    if (held.st_uid, held.st_gid) != (original.uid, original.gid):
        try:
            os.fchown(fd, original.uid, original.gid)
        except PermissionError as exc:
            # Replacing it anyway would hand the file to this user: refuse instead.
            message = f"cannot keep its owner {original.uid}:{original.gid}: {exc.strerror or exc}"
            raise OutputError(message, path=target) from exc
    os.fchmod(fd, original.mode)  # after fchown, which clears set-user-ID and set-group-ID bits


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    target: Path, data: bytes, *, permissions_from: Path | None = None, replacing: Original | None = None
) -> None:
    """Writes ``data`` to ``target`` atomically and durably.

    Args:
        target: the file to create or replace; its folder must exist.
        data: the complete new content.
        permissions_from: a file whose permission bits the new file takes (the source, into an output folder).
        replacing: in place, ``target`` as it was read: see ``atomic_write_with``.

    Raises:
        SourceChangedError: in place, ``target`` (or another of its names) changed since it was read.
        OutputError: the file could not be written; ``target`` is unchanged and no temporary file remains.
    """

    def write(tmp: Path) -> None:
        try:
            with tmp.open("wb") as stream:
                stream.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from exc

    atomic_write_with(target, write, permissions_from=permissions_from, replacing=replacing)


def atomic_write_with(
    target: Path,
    write: Callable[[Path], _T],
    *,
    permissions_from: Path | None = None,
    replacing: Original | None = None,
) -> _T:
    """Creates or replaces ``target`` atomically and durably with a file that ``write`` fills in.

    For writers that need a path rather than bytes (a video muxer): ``write`` gets an empty temporary
    file beside ``target``, with ``target``'s extension and mode 0600, and writes the complete content
    there (opening it anew is fine; replacing it with another file is not: its lock marks it live). Only once
    it returns is that file fsynced and swapped in.

    Args:
        target: the file to create or replace; its folder must exist.
        write: fills the path it is given; what it returns is returned.
        permissions_from: a file whose permission bits the new file takes (the source, into an output folder).
        replacing: in place, ``target`` as it was read. Right before the swap every name of it (``target`` and
            ``replacing.other_names``) must still be that file, unchanged; the new file takes its owner, group
            and mode, and is swapped in under each name (each swap atomic).

    Returns:
        What ``write`` returned.

    Raises:
        SourceChangedError: in place, a name of the original changed since it was read; nothing was replaced.
        OutputError: the temporary file could not be created, synced or moved into place, or the original's
            owner cannot be kept.
        Exception: whatever ``write`` raises, unchanged. In every failure case (a ``KeyboardInterrupt``
            included) ``target`` is unchanged and no temporary file remains; only a failure to swap in a
            second name of a hard-linked file, after the first was, leaves the names apart (said in the error).
    """
    tmp, fd = _create_locked(target)
    temporaries = [tmp]
    try:
        result = write(tmp)
        try:
            os.fsync(fd)
            if replacing is not None:
                _take_owner_and_mode(fd, replacing, target=target)
            elif permissions_from is not None:
                os.fchmod(fd, os.stat(permissions_from).st_mode & 0o7777)
            names = (target, *(replacing.other_names if replacing is not None else ()))
            swaps = [(tmp, target)]
            for name in names[1:]:
                swaps.append((_link_beside(tmp, name), name))
                temporaries.append(swaps[-1][0])
            if replacing is not None:
                for name in names:
                    _check_unchanged(name, replacing)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
        _swap(swaps)
    except BaseException:
        for temporary in temporaries:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        raise
    finally:
        os.close(fd)  # releases the lock, after the swap
    return result


def _swap(swaps: list[tuple[Path, Path]]) -> None:
    done: list[Path] = []
    for temporary, name in swaps:
        try:
            os.replace(temporary, name)
        except OSError as exc:
            also = f" ({len(done)} other names of it were replaced)" if done else ""
            raise OutputError(f"cannot write: {exc.strerror or exc}{also}", path=name) from exc
        done.append(name)
    try:
        for folder in dict.fromkeys(name.parent for name in done):
            _fsync_folder(folder)
    except OSError as exc:
        raise OutputError(f"cannot sync the folder: {exc.strerror or exc}", path=done[0].parent) from exc
