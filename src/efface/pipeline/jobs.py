"""Turns the paths a user gives into a lazy stream of work: folders are walked as the run goes, destinations
mirrored, leftovers of interrupted runs found, and inputs that cannot even be planned reported as failed
results.

Why lazy: a dataset is millions of files. The run starts on the first file while the walk goes on, and
memory does not grow with the number of files: one folder's listing is held at a time (sorted, for a stable
order), never the whole tree. Only the given paths are checked up front, so that a bad command fails
before any file is touched.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from efface.errors import (
    ConfigurationError,
    EffaceError,
    HardLinkError,
    InputNotFoundError,
    OutputError,
    UnreadableFileError,
)
from efface.media.atomic import find_leftovers, is_leftover, leftovers_of
from efface.media.images import IMAGE_SUFFIXES, UNSUPPORTED_IMAGE_SUFFIXES
from efface.media.video import VIDEO_SUFFIXES
from efface.pipeline import results
from efface.pipeline.core import FileJob
from efface.records import AnonymizationResult, WriteMode

__all__ = ["Leftover", "Plan", "PlanItem", "count_jobs_ahead", "plan_jobs"]

_CANDIDATE_SUFFIXES = IMAGE_SUFFIXES | UNSUPPORTED_IMAGE_SUFFIXES | VIDEO_SUFFIXES


@dataclass(frozen=True, slots=True)
class Leftover:
    """A temporary file that an interrupted run left behind, to delete (and audit) before going on.

    It is reported before any file of its folder is handed out, so it can never be the temporary file
    of a file in flight in this run; one that another live run is writing holds its lock and is left alone
    when it comes to deleting it (``remove_if_leftover``).
    """

    path: Path


# What a plan yields: a file to anonymize, an input refused before processing, or a leftover to delete.
PlanItem = FileJob | AnonymizationResult | Leftover


@dataclass(frozen=True, slots=True)
class _Root:
    """One path the user gave, checked.

    Attributes:
        given: the path as given, made absolute (for messages).
        real: the resolved path (a folder root is walked from here; a file root is replaced here).
        is_folder: a folder to walk, or a single file.
        prefix: its place in a mirrored output tree (the folder's or the file's name).
    """

    given: Path
    real: Path
    is_folder: bool
    prefix: Path


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _failure(path: Path, exc: EffaceError, mode: WriteMode) -> AnonymizationResult:
    return results.failed(path, exc, mode=mode)


def _is_candidate(path: Path) -> bool:
    return path.suffix.lower() in _CANDIDATE_SUFFIXES and not is_leftover(path)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run will do, walked lazily by ``items``.

    Attributes:
        mode: in place, output folder or dry run.
        roots: the given files and folders that exist, without those another folder root already holds.
        missing: given paths that do not exist, as failures.
        output_dir: the resolved output folder of an ``OUTPUT_DIR`` run.
    """

    mode: WriteMode
    roots: tuple[_Root, ...]
    missing: tuple[AnonymizationResult, ...]
    output_dir: Path | None

    def items(self) -> Iterator[PlanItem]:
        """The run's work in a stable order: leftovers in the output folder, the given paths that do not
        exist, then for each root in the order given its leftovers, refusals and files, folder by folder
        (names sorted, a folder's files before its subfolders).

        Each call walks the file system again.
        """
        if self.output_dir is not None and self.output_dir.is_dir():
            # Before any file is handed out: later, a temporary file there may belong to a file in flight.
            yield from (Leftover(path) for path in sorted(find_leftovers(self.output_dir)))
        yield from self.missing
        walk = _Walk(self)
        for root in self.roots:
            yield from walk.root(root)
        yield from walk.partly_walked_files()

    def jobs(self) -> Iterator[FileJob]:
        """Only the files to anonymize (walks the file system)."""
        return (item for item in self.items() if isinstance(item, FileJob))


class _Walk:
    """One pass over a plan's roots. Holds only what de-duplication needs: the targets of symbolic links
    (few), where two roots share a name in the output tree, the destinations under that name, and in place
    the names met so far of files with several names (hard links), until all of a file's names are met."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._mode = plan.mode
        self._folders = tuple(root.real for root in plan.roots if root.is_folder)
        self._linked: set[Path] = {root.real for root in plan.roots if not root.is_folder}
        prefixes = [root.prefix for root in plan.roots]
        self._shared_prefixes = {p for p in prefixes if prefixes.count(p) > 1}
        self._destinations: set[Path] = set()
        self._candidates = 0
        # In place, (st_dev, st_ino) -> (st_nlink, the names met): one job once every name is met.
        self._linked_names: dict[tuple[int, int], tuple[int, list[Path]]] = {}

    def root(self, root: _Root) -> Iterator[PlanItem]:
        if not root.is_folder:
            yield from (Leftover(path) for path in sorted(leftovers_of(root.real)))
            yield from self._job(root.given, root.real, root, root.prefix)
            return
        self._candidates = 0
        yield from self._folder(root, root.real)
        if not self._candidates:
            message = "no image or video files in this folder"
            yield _failure(root.given, InputNotFoundError(message, path=root.given), self._mode)

    def _folder(self, root: _Root, folder: Path) -> Iterator[PlanItem]:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            # An unreadable folder is not skipped silently: its pictures would stay identifiable.
            error = UnreadableFileError(f"cannot list folder: {exc.strerror or exc}", path=folder)
            yield _failure(folder, error, self._mode)
            return
        out = self._plan.output_dir
        # One pass sorts the listing into subfolders, leftovers and files; every leftover of this folder is
        # reported before any of its files is handed out.
        folders: list[Path] = []
        leftovers: list[PlanItem] = []
        files: list[os.DirEntry[str]] = []  # paths made one at a time below: a huge folder holds entries only
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if out is None or not _is_inside(Path(entry.path), out):
                    folders.append(Path(entry.path))
            elif is_leftover(Path(entry.name)):
                leftovers.append(Leftover(Path(entry.path)))
            else:
                files.append(entry)
        yield from leftovers
        for entry in files:
            path = Path(entry.path)
            if entry.is_symlink() and entry.is_dir():
                # Not followed (a link can loop, or lead outside what the user meant), and not skipped silently.
                message = "a symbolic link to a folder is not followed; give the folder it points to"
                yield _failure(path, UnreadableFileError(message, path=path), self._mode)
                continue
            if not _is_candidate(path):
                continue
            self._candidates += 1
            relative = root.prefix / path.relative_to(root.real)
            if entry.is_symlink():
                real = path.resolve()
                if (_is_candidate(real) and _is_walked(real, self._folders, out)) or real in self._linked:
                    continue  # the file itself is (or was) planned under its own name
                self._linked.add(real)
                yield from self._job(path, real, root, relative)
            elif entry.is_file(follow_symlinks=False):
                yield from self._job(path, path, root, relative, is_regular=True)
            else:
                yield _failure(path, UnreadableFileError("not a regular file", path=path), self._mode)
        for sub in folders:
            yield from self._folder(root, sub)

    def _job(
        self, source: Path, real: Path, root: _Root, relative: Path, *, is_regular: bool = False
    ) -> Iterator[PlanItem]:
        is_in_place = self._mode is WriteMode.IN_PLACE
        if not is_regular or is_in_place:  # in place, the link count matters
            try:
                status = os.stat(real)
            except FileNotFoundError:
                yield _failure(source, InputNotFoundError("no such file (dangling link?)", path=source), self._mode)
                return
            except OSError as exc:
                yield _failure(source, UnreadableFileError(f"cannot stat: {exc.strerror}", path=source), self._mode)
                return
            if not stat.S_ISREG(status.st_mode):
                yield _failure(source, UnreadableFileError("not a regular file", path=source), self._mode)
                return
            if is_in_place and status.st_nlink > 1:
                yield from self._hard_linked(real, status)
                return
        if self._plan.output_dir is None:
            target = real  # in place replaces the file itself, not a symbolic link to it
        else:
            target = self._plan.output_dir / relative
            if root.prefix in self._shared_prefixes:
                if target in self._destinations:
                    error = OutputError(f"another input also maps to {target}", path=source)
                    yield _failure(source, error, self._mode)
                    return
                self._destinations.add(target)
        if self._mode is WriteMode.DRY_RUN:
            # Nothing is written; the target says what the same command without --dry-run would skip.
            yield FileJob(source=real, destination=None, dry_run_target=target)
        else:
            yield FileJob(source=real, destination=target)

    def _hard_linked(self, real: Path, status: os.stat_result) -> Iterator[PlanItem]:
        """In place, a file with several names is handed out once all of them are met, to be replaced under
        each; until then (or at the end of the walk, ``partly_walked_files``) it waits."""
        key = (status.st_dev, status.st_ino)
        _count, names = self._linked_names.setdefault(key, (status.st_nlink, []))
        if real not in names:
            names.append(real)
        if len(names) >= status.st_nlink:
            del self._linked_names[key]
            yield FileJob(source=names[0], destination=names[0], hard_links=tuple(names[1:]))

    def partly_walked_files(self) -> Iterator[AnonymizationResult]:
        """Refusals, at the end of the walk, of the files with names (hard links) outside the walked paths:
        replacing the names reached would leave the original under the others. One per file."""
        for count, names in self._linked_names.values():
            others = f" (also {', '.join(map(str, names[1:]))})" if len(names) > 1 else ""
            message = (
                f"this file has {count} names (hard links) but the paths given reach only {len(names)}{others};"
                " replacing those would leave the original under the others: give folders that hold every name"
                " (as image or video files), or write copies with --output"
            )
            yield _failure(names[0], HardLinkError(message, path=names[0]), self._mode)
        self._linked_names.clear()


def _is_walked(real: Path, folders: Iterable[Path], out_root: Path | None) -> bool:
    """Whether the walk of one of ``folders`` reaches ``real`` (a resolved path) under its own name."""
    return any(folder != real and _is_inside(real, folder) for folder in folders) and not (
        out_root is not None and _is_inside(real, out_root)
    )


def plan_jobs(paths: list[Path], *, output_dir: Path | None = None, dry_run: bool = False) -> Plan:
    """Plans a run over files and folders (folders recursively, when the plan's ``items`` are walked).

    Args:
        paths: files and folders as the user gave them.
        output_dir: write a mirrored tree here instead of replacing files in place. A folder input
            ``photos/`` maps to ``output_dir/photos/...``; a file input to ``output_dir/<name>``.
        dry_run: detect only, write nothing.

    Returns:
        The plan. A path given twice, or inside a given folder, is planned once.

    Raises:
        ConfigurationError: the output folder is one of the input folders.
    """
    mode = WriteMode.DRY_RUN if dry_run else (WriteMode.OUTPUT_DIR if output_dir else WriteMode.IN_PLACE)
    out_root = output_dir.resolve() if output_dir is not None else None
    roots: list[_Root] = []
    missing: list[AnonymizationResult] = []
    for given in paths:
        path = given.absolute()
        if path.is_dir():
            folder = path.resolve()
            if out_root is not None and folder == out_root:
                raise ConfigurationError(f"the output folder {output_dir} is also an input folder")
            roots.append(_Root(given=path, real=folder, is_folder=True, prefix=Path(folder.name)))
        elif path.exists() or path.is_symlink():
            roots.append(_Root(given=path, real=path.resolve(), is_folder=False, prefix=Path(path.name)))
        else:
            missing.append(_failure(path, InputNotFoundError("no such file or folder", path=path), mode))
    return Plan(mode=mode, roots=_distinct(roots, out_root), missing=tuple(missing), output_dir=out_root)


def _distinct(roots: list[_Root], out_root: Path | None) -> tuple[_Root, ...]:
    """Drops roots that another root covers: a folder inside a given folder, a file a folder walk reaches,
    a path given twice."""
    folders = [root.real for root in roots if root.is_folder]
    kept: list[_Root] = []
    seen: set[Path] = set()
    for root in roots:
        is_reached = _is_walked(root.real, folders, out_root) and (root.is_folder or _is_candidate(root.real))
        if root.real in seen or is_reached:
            continue
        seen.add(root.real)
        kept.append(root)
    return tuple(kept)


def count_jobs_ahead(items: Iterable[PlanItem], *, limit: int) -> tuple[int, Iterator[PlanItem]]:
    """Counts the files to anonymize among the first items, up to ``limit``, without losing any item.

    Used to start no more processes than there are files. Walks only until ``limit`` files are found.

    Returns:
        The count (at most ``limit``) and an iterator over every item, the counted ones included.
    """
    iterator = iter(items)
    head: list[PlanItem] = []
    found = 0
    for item in iterator:
        head.append(item)
        found += isinstance(item, FileJob)
        if found >= limit:
            break
    return found, itertools.chain(head, iterator)
