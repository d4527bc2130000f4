"""Atomic file replacement: the new bytes go to a temporary file beside the target, are fsynced, and
``os.replace`` swaps them in; then the folder is fsynced. A kill at any moment leaves the target either
fully old or fully new. Temporary files carry a recognisable name so a later run can find and delete
what an interrupted run left behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from efface.errors import OutputError

__all__ = [
    "TEMP_MARKER",
    "atomic_write_bytes",
    "atomic_write_with",
    "find_leftovers",
    "is_leftover",
    "leftovers_of",
    "temp_path_for",
]

TEMP_MARKER = ".efface-tmp-"

_T = TypeVar("_T")


def temp_path_for(target: Path) -> Path:
    """A fresh hidden temporary name beside ``target`` that keeps its real extension."""
    return target.with_name(f".{target.name}{TEMP_MARKER}{secrets.token_hex(6)}{target.suffix}")


def is_leftover(path: Path) -> bool:
    """Whether a file name is one of efface's temporary names."""
    return path.name.startswith(".") and TEMP_MARKER in path.name


def leftovers_of(target: Path) -> list[Path]:
    """efface temporary files beside ``target`` that were meant to replace it."""
    return [p for p in target.parent.glob(f".{glob.escape(target.name)}{TEMP_MARKER}*") if is_leftover(p)]


def find_leftovers(folder: Path) -> Iterator[Path]:
    """Yields efface temporary files anywhere under ``folder`` (symlinked folders are not followed)."""
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            candidate = Path(dirpath) / name
            if is_leftover(candidate):
                yield candidate


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(target: Path, data: bytes, *, permissions_from: Path | None = None) -> None:
    """Writes ``data`` to ``target`` atomically and durably.

    Args:
        target: the file to create or replace; its folder must exist.
        data: the complete new content.
        permissions_from: a file whose permission bits the new file takes (the original, in place).

    Raises:
        OutputError: the file could not be written; ``target`` is unchanged and no temporary file remains.
    """

    def write(tmp: Path) -> None:
        try:
            with tmp.open("wb") as stream:
                stream.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from exc

    atomic_write_with(target, write, permissions_from=permissions_from)


def atomic_write_with(target: Path, write: Callable[[Path], _T], *, permissions_from: Path | None = None) -> _T:
    """Creates or replaces ``target`` atomically and durably with a file that ``write`` fills in.

    For writers that need a path rather than bytes (a video muxer): ``write`` gets an empty temporary
    file beside ``target``, with ``target``'s extension and mode 0600, and writes the complete content
    there. Only once it returns is that file fsynced and swapped in.

    Args:
        target: the file to create or replace; its folder must exist.
        write: fills the path it is given; what it returns is returned.
        permissions_from: a file whose permission bits the new file takes (the original, in place).

    Returns:
        What ``write`` returned.

    Raises:
        OutputError: the temporary file could not be created, synced or moved into place.
        Exception: whatever ``write`` raises, unchanged. In every failure case (a ``KeyboardInterrupt``
            included) ``target`` is unchanged and no temporary file remains.
    """
    tmp = temp_path_for(target)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
    try:
        result = write(tmp)
        try:
            fd = os.open(tmp, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if permissions_from is not None:
                os.chmod(tmp, os.stat(permissions_from).st_mode & 0o7777)
            os.replace(tmp, target)
            _fsync_folder(target.parent)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return result
