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

The write and the swap can also be two steps (``stage_with``, then ``claim`` and ``commit`` or ``discard``): a
worker stages the complete output beside its target, and the process that audits the run takes its lock again
and swaps it in only once it has recorded that it is about to (``pipeline/run.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.reduction import DupFd
from pathlib import Path
from typing import Protocol, TypeVar

from efface.errors import OutputError, SourceChangedError

__all__ = [
    "TEMP_MARKER",
    "ClaimedFile",
    "Original",
    "StagedFile",
    "Stager",
    "atomic_write_bytes",
    "atomic_write_with",
    "claim",
    "discard",
    "find_leftovers",
    "hand_over",
    "hold",
    "is_leftover",
    "leftovers_of",
    "original_of",
    "release",
    "remove_if_leftover",
    "stage_bytes",
    "stage_with",
    "temp_path_for",
]

TEMP_MARKER = ".efface-tmp-"

# A temporary name keeps the target's extension (a muxer picks the container by it) unless that is absurdly long.
_MAX_SUFFIX_BYTES = 32
_CREATE_ATTEMPTS = 16

_T = TypeVar("_T")

logger = logging.getLogger(__name__)


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
        True when it was deleted; False when it belongs to a live run (left alone), is already gone, or is not a
        regular file (a folder, a socket, a FIFO: efface never makes one, so someone's stays).

    Raises:
        OSError: it could not be opened or deleted.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError:
        if path.is_symlink():
            path.unlink(missing_ok=True)  # a link under a temporary name is not efface's, nor a live file
            return True
        if not path.is_file():  # a socket (which cannot be opened), a device
            return False
        raise
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
        if not stat.S_ISREG(os.fstat(fd).st_mode):
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
    atomic_write_with(target, _bytes_writer(target, data), permissions_from=permissions_from, replacing=replacing)


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
    staged, fd, result = _stage(target, write, permissions_from=permissions_from, replacing=replacing)
    _swap_in(staged, fd)
    return result


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A complete new content for ``target``, fsynced in a temporary file beside it (owner, group and mode
    already those it is to have), not swapped in yet: ``claim`` it, then ``commit`` or ``discard``.

    Attributes:
        temp_path: the temporary file (an efface temporary name: a later run deletes it if it is left).
        target: the file it replaces, or creates.
        device: the temporary file's ``st_dev`` (to tell it is still the file staged).
        inode: the temporary file's ``st_ino``.
        replacing: in place, ``target`` as it was read: checked unchanged, under each of its names, right
            before the swap, and every name swapped (see ``atomic_write_with``).
        lock_handle: set by ``hand_over`` in the process that staged it: the locked descriptor on its way to
            the process that swaps it in (a ``multiprocessing.reduction.DupFd``, detached by ``hold``).
    """

    temp_path: Path
    target: Path
    device: int
    inode: int
    replacing: Original | None = None
    lock_handle: _FdHandle | None = field(default=None, compare=False)


class _FdHandle(Protocol):
    def detach(self) -> int: ...


# The locks of the staged files this process holds, by temporary path (each name is fresh): ``stage_with`` and
# ``hold`` put one here, ``claim`` takes it out (to swap or discard the file), ``hand_over`` passes it on to the
# process that will, ``release`` lets it go.
_held: dict[Path, int] = {}


def _forget_held_in_child() -> None:
    """In a child made by ``fork``: closes its copies of the held descriptors. A lock belongs to the open file,
    which a fork shares, so a child that kept them (a pool process forked by a library's user) would keep each
    staged file locked after the parent swapped, discarded or died with it, and a sweep would leave the
    leftover of a dead parent alone for as long as the child lives. The parent's own locks are unchanged."""
    for fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_held_in_child)


def stage_with(
    target: Path,
    write: Callable[[Path], _T],
    *,
    permissions_from: Path | None = None,
    replacing: Original | None = None,
) -> tuple[StagedFile, _T]:
    """Like ``atomic_write_with`` up to the swap: the filled temporary file is fsynced, given its owner and mode,
    and left beside ``target``, its lock still held by this process (``claim`` it here, or ``hand_over`` it to
    the process that will, or ``release`` it), so that no sweep of leftovers deletes it meanwhile.

    Returns:
        The staged file and what ``write`` returned.

    Raises:
        OutputError: the temporary file could not be created or synced, or the original's owner cannot be kept.
        Exception: whatever ``write`` raises, unchanged. In every failure case ``target`` is unchanged and no
            temporary file remains.
    """
    staged, fd, result = _stage(target, write, permissions_from=permissions_from, replacing=replacing)
    _held[staged.temp_path] = fd
    return staged, result


def stage_bytes(
    target: Path, data: bytes, *, permissions_from: Path | None = None, replacing: Original | None = None
) -> StagedFile:
    """Writes ``data`` into a staged file for ``target`` (``stage_with``).

    Raises:
        OutputError: the file could not be written; ``target`` is unchanged and no temporary file remains.
    """
    staged, _ = stage_with(target, _bytes_writer(target, data), permissions_from=permissions_from, replacing=replacing)
    return staged


class Stager:
    """For a writer that calls ``atomic_write_with`` deep down (a video transcode): ``stage_with`` in its stead,
    keeping the staged file here."""

    def __init__(self) -> None:
        self.staged: StagedFile | None = None

    def write_with(
        self,
        target: Path,
        write: Callable[[Path], _T],
        *,
        permissions_from: Path | None = None,
        replacing: Original | None = None,
    ) -> _T:
        """``stage_with``, the staged file kept in ``staged``."""
        self.staged, result = stage_with(target, write, permissions_from=permissions_from, replacing=replacing)
        return result


class ClaimedFile:
    """A staged file whose lock this process holds again, until it is swapped in (``commit``) or deleted
    (``discard``); either one closes it, and a second call does nothing."""

    def __init__(self, staged: StagedFile, fd: int) -> None:
        self.staged = staged
        self._fd: int | None = fd

    def commit(self) -> None:
        """Swaps the staged file in under every name of its target (``atomic_write_with``'s checks and swap).

        Raises:
            SourceChangedError: in place, a name of the original changed since it was read; nothing replaced.
            OutputError: the swap failed; the target is unchanged and no temporary file remains.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            _swap_in(self.staged, fd)

    def discard(self) -> None:
        """Deletes the staged file; its target stays as it is."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                discard(self.staged)
            finally:
                os.close(fd)


def hand_over(staged: StagedFile) -> StagedFile:
    """The staged file with its lock made ready to pass to another process (pickled with it, as a worker's
    result is): this process lets go of its descriptor, and the lock stays held until the receiver ``hold``s it
    (or, if it never does, until this process ends)."""
    fd = _held.pop(staged.temp_path, None)
    if fd is None:
        return staged
    try:
        handle = DupFd(fd)
    except OSError as exc:  # no descriptor passing here: the receiver takes the lock again by the name
        logger.warning("%s: the staged file's lock cannot be handed over: %s", staged.target, exc)
        return staged
    finally:
        os.close(fd)
    return dataclasses.replace(staged, lock_handle=handle)


def release(staged: StagedFile) -> None:
    """Lets go of the lock of a staged file this process holds (for a receiver that ``hold``s it by its name,
    taking the risk that a sweep of leftovers deletes it in between)."""
    fd = _held.pop(staged.temp_path, None)
    if fd is not None:
        os.close(fd)


def hold(staged: StagedFile) -> None:
    """Makes this process hold the lock of a staged file, from the handle it came with or, failing that, by
    taking the lock again by its name (nothing to do when it already holds it).

    Raises:
        OutputError: the staged file is gone or is another file (a sweep of leftovers by another run deleted it
            while no one held its lock); nothing was replaced.
    """
    if staged.temp_path in _held:
        return
    gone = OutputError(
        "the staged output was deleted (a sweep of leftovers) before it was swapped in; nothing replaced",
        path=staged.target,
    )
    fd = _detached(staged)
    if fd is None:
        try:
            fd = os.open(staged.temp_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise gone from exc
        except OSError as exc:
            raise OutputError(f"cannot open the staged output: {exc.strerror or exc}", path=staged.target) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held already when it came with its handle; a sweep holds it a moment
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != (staged.device, staged.inode) or not _names_open_file(staged.temp_path, fd):
            raise gone
    except FileNotFoundError as exc:
        os.close(fd)
        raise gone from exc
    except BaseException:
        os.close(fd)
        raise
    _held[staged.temp_path] = fd


def _detached(staged: StagedFile) -> int | None:
    """The locked descriptor handed over with a staged file; None when there is none or it cannot be fetched
    (the process that staged it has died, and its lock with it)."""
    if staged.lock_handle is None:
        return None
    try:
        return staged.lock_handle.detach()
    except (OSError, EOFError) as exc:
        logger.info("%s: the staged file's lock could not be handed over: %s", staged.target, exc)
        return None


def claim(staged: StagedFile) -> ClaimedFile:
    """The staged file, its lock held by this process (``hold``) until it is swapped in or discarded.

    Raises:
        OutputError: the staged file is gone or is another file (see ``hold``); nothing was replaced.
    """
    hold(staged)
    return ClaimedFile(staged, _held.pop(staged.temp_path))


def discard(staged: StagedFile) -> None:
    """Deletes a staged file that will not be swapped in (and lets go of its lock); its target stays as it is."""
    with contextlib.suppress(FileNotFoundError):
        staged.temp_path.unlink()
    release(staged)


def _bytes_writer(target: Path, data: bytes) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        try:
            with tmp.open("wb") as stream:
                stream.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from exc

    return write


def _stage(
    target: Path, write: Callable[[Path], _T], *, permissions_from: Path | None, replacing: Original | None
) -> tuple[StagedFile, int, _T]:
    """Creates, fills and fsyncs a locked temporary file for ``target``; returns it with its still open, locked
    descriptor. On any failure nothing remains."""
    tmp, fd = _create_locked(target)
    try:
        result = write(tmp)
        try:
            os.fsync(fd)
            if replacing is not None:
                _take_owner_and_mode(fd, replacing, target=target)
            elif permissions_from is not None:
                os.fchmod(fd, os.stat(permissions_from).st_mode & 0o7777)
            held = os.fstat(fd)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.close(fd)
        raise
    staged = StagedFile(temp_path=tmp, target=target, device=held.st_dev, inode=held.st_ino, replacing=replacing)
    return staged, fd, result


def _swap_in(staged: StagedFile, fd: int) -> None:
    """Checks and swaps in a staged file whose lock ``fd`` holds; closes ``fd`` (after the swap) in every case,
    and on a failure deletes every temporary name."""
    tmp, target, replacing = staged.temp_path, staged.target, staged.replacing
    temporaries = [tmp]
    try:
        try:
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
