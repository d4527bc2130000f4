"""Turns the paths a user gives into a lazy stream of work: folders are walked as the run goes, destinations
mirrored, leftovers of interrupted runs found, and inputs that cannot even be planned reported as failed
results.

Every file is looked at, whatever its name: its first bytes are sniffed (``media.sniff``), so a JPEG named
``.jfif`` or with no extension is a picture and an MPEG transport stream named ``.mts`` a video. A picture or a
video becomes a job (anonymized, or refused aloud by the decoder when efface cannot write its format); so does a
file whose name claims one (a ``.jpg`` holding text is refused aloud, not passed over). Anything else is audited as
not media, one row per file: a data-protection officer asks "was this file looked at?" by its path, which a count
per folder could not answer.

Why sniff here and not in the worker: the plan must know whether a file is a picture, a video or neither before a
process is spent on it, and a worker process cannot be handed the planner's open file. The head read (one page)
costs one open per file in the walk, which runs ahead of the workers while they anonymize.

Why lazy: a dataset is millions of files. The run starts on the first file while the walk goes on, and
memory does not grow with the number of files: one folder's listing is held at a time (sorted, for a stable
order), never the whole tree. Only the given paths are checked up front, so that a bad command fails
before any file is touched.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from efface.errors import (
    ConfigurationError,
    EffaceError,
    HardLinkError,
    InputNotFoundError,
    OutputError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from efface.media.atomic import find_leftovers, is_leftover, leftovers_of
from efface.media.sniff import MediaKind, claimed_kind, refusal, sniff_file
from efface.pipeline import results
from efface.pipeline.core import FileJob
from efface.pipeline.objects import ObjectJob
from efface.records import AnonymizationResult, WriteMode
from efface.text import path_text

__all__ = ["Leftover", "Plan", "PlanItem", "count_jobs_ahead", "plan_jobs"]


@dataclass(frozen=True, slots=True)
class Leftover:
    """A temporary file that an interrupted run left behind, to delete (and audit) before going on.

    It is reported before any file of its folder is handed out, so it can never be the temporary file
    of a file in flight in this run; one that another live run is writing holds its lock and is left alone
    when it comes to deleting it (``remove_if_leftover``).
    """

    path: Path


# What a plan yields: a file (or an object) to anonymize, an input refused before processing or found not to be
# media, or a leftover to delete.
PlanItem = FileJob | ObjectJob | AnonymizationResult | Leftover


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
    """Whether the walk plans the file under its own name: every file but a leftover temporary one."""
    return not is_leftover(path)


_LOOP_MESSAGE = "symbolic link loop: the link leads back to itself"


def _resolved(path: Path) -> Path:
    """``path.resolve()``, or an UnreadableFileError for a symbolic link loop (Python < 3.13 raises RuntimeError)."""
    try:
        return path.resolve()
    except RuntimeError as exc:
        raise UnreadableFileError(_LOOP_MESSAGE, path=path) from exc
    except OSError as exc:
        message = _LOOP_MESSAGE if exc.errno == errno.ELOOP else f"cannot resolve: {exc.strerror or exc}"
        raise UnreadableFileError(message, path=path) from exc


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run will do, walked lazily by ``items``.

    Attributes:
        mode: in place, output folder or dry run.
        roots: the given files and folders that exist, without those another folder root already holds.
        missing: given paths that do not exist or cannot be resolved (a symbolic link loop), as failures.
        output_dir: the resolved output folder of an ``OUTPUT_DIR`` run.
        output_file: the resolved output file of an ``OUTPUT_DIR`` run of one input file (``-o out.jpg``).
    """

    mode: WriteMode
    roots: tuple[_Root, ...]
    missing: tuple[AnonymizationResult, ...]
    output_dir: Path | None
    output_file: Path | None = None

    def items(self) -> Iterator[PlanItem]:
        """The run's work in a stable order: leftovers in the output folder, the given paths that do not
        exist, then for each root in the order given its leftovers, refusals, files and files that are not
        media, folder by folder (names sorted, a folder's files before its subfolders).

        Each call walks the file system again.
        """
        if self.output_dir is not None and self.output_dir.is_dir():
            # Before any file is handed out: later, a temporary file there may belong to a file in flight.
            yield from (Leftover(path) for path in sorted(find_leftovers(self.output_dir)))
        if self.output_file is not None and self.output_file.parent.is_dir():
            yield from (Leftover(path) for path in sorted(leftovers_of(self.output_file)))
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
            yield from self._target(root.given, root, root.prefix, is_root=True)
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
            relative = root.prefix / path.relative_to(root.real)
            if entry.is_symlink():
                yield from self._target(path, root, relative, is_root=False)
            elif entry.is_file(follow_symlinks=False):
                yield from self._file(path, path, root, relative)
            else:
                yield self._not_regular(path)
        for sub in folders:
            yield from self._folder(root, sub)

    def _target(self, source: Path, root: _Root, relative: Path, *, is_root: bool) -> Iterator[PlanItem]:
        """A given file or a symbolic link met in a folder: what it leads to, checked, then sniffed."""
        try:
            mode_bits = os.stat(source).st_mode
        except FileNotFoundError:
            if is_root or claimed_kind(source) is not None:
                yield _failure(source, InputNotFoundError("no such file (dangling link?)", path=source), self._mode)
            else:
                yield results.not_media(source, mode=self._mode, reason="a symbolic link to nothing")
            return
        except OSError as exc:
            message = _LOOP_MESSAGE if exc.errno == errno.ELOOP else f"cannot stat: {exc.strerror or exc}"
            yield _failure(source, UnreadableFileError(message, path=source), self._mode)
            return
        if stat.S_ISDIR(mode_bits):
            # Not followed (a link can loop, or lead outside what the user meant), and not skipped silently.
            message = "a symbolic link to a folder is not followed; give the folder it points to"
            yield _failure(source, UnreadableFileError(message, path=source), self._mode)
            return
        if not stat.S_ISREG(mode_bits):
            yield self._not_regular(source)
            return
        if is_root:
            yield from self._file(source, root.real, root, relative)
            return
        try:
            real = _resolved(source)
        except UnreadableFileError as exc:
            yield _failure(source, exc, self._mode)
            return
        if (_is_candidate(real) and _is_walked(real, self._folders, self._plan.output_dir)) or real in self._linked:
            return  # the file itself is (or was) planned under its own name
        self._linked.add(real)
        yield from self._file(source, real, root, relative)

    def _not_regular(self, path: Path) -> AnonymizationResult:
        """A FIFO, socket or device: never read (a FIFO would block the walk); refused when named as media."""
        if claimed_kind(path) is not None:
            return _failure(path, UnreadableFileError("not a regular file", path=path), self._mode)
        return results.not_media(path, mode=self._mode, reason="not a regular file")

    def _file(self, source: Path, real: Path, root: _Root, relative: Path) -> Iterator[PlanItem]:
        """A regular file: sniffed, then planned as a job or audited as not media."""
        try:
            sniffed = sniff_file(real)
        except UnreadableFileError as exc:
            # It may be a picture: not knowing is an error, not a file passed over.
            self._candidates += 1
            yield _failure(source, UnreadableFileError(exc.message, path=source), self._mode)
            return
        kind = sniffed.kind or claimed_kind(source)
        if kind is None:
            reason = sniffed.format_name or "content not recognised as a picture or video"
            yield results.not_media(source, mode=self._mode, reason=reason)
            return
        self._candidates += 1
        refused = refusal(sniffed, source)
        if refused is not None:
            yield _failure(source, UnsupportedFormatError(refused, path=source), self._mode)
            return
        if self._mode is WriteMode.IN_PLACE:  # in place, the link count matters
            try:
                status = os.stat(real)
            except OSError as exc:
                unreadable = UnreadableFileError(f"cannot stat: {exc.strerror or exc}", path=source)
                yield _failure(source, unreadable, self._mode)
                return
            if status.st_nlink > 1:
                yield from self._hard_linked(real, status, kind)
                return
        if self._plan.output_file is not None:
            target = self._plan.output_file
        elif self._plan.output_dir is None:
            target = real  # in place replaces the file itself, not a symbolic link to it
        else:
            target = self._plan.output_dir / relative
            if root.prefix in self._shared_prefixes:
                if target in self._destinations:
                    error = OutputError(f"another input also maps to {path_text(target)}", path=source)
                    yield _failure(source, error, self._mode)
                    return
                self._destinations.add(target)
        if self._mode is WriteMode.DRY_RUN:
            # Nothing is written; the target says what the same command without --dry-run would skip.
            yield FileJob(source=real, destination=None, dry_run_target=target, kind=kind)
        else:
            yield FileJob(source=real, destination=target, kind=kind)

    def _hard_linked(self, real: Path, status: os.stat_result, kind: MediaKind) -> Iterator[PlanItem]:
        """In place, a file with several names is handed out once all of them are met, to be replaced under
        each; until then (or at the end of the walk, ``partly_walked_files``) it waits."""
        key = (status.st_dev, status.st_ino)
        _count, names = self._linked_names.setdefault(key, (status.st_nlink, []))
        if real not in names:
            names.append(real)
        if len(names) >= status.st_nlink:
            del self._linked_names[key]
            yield FileJob(source=names[0], destination=names[0], hard_links=tuple(names[1:]), kind=kind)

    def partly_walked_files(self) -> Iterator[AnonymizationResult]:
        """Refusals, at the end of the walk, of the files with names (hard links) outside the walked paths:
        replacing the names reached would leave the original under the others. One per file."""
        for count, names in self._linked_names.values():
            others = f" (also {', '.join(map(path_text, names[1:]))})" if len(names) > 1 else ""
            message = (
                f"this file has {count} names (hard links) but the paths given reach only {len(names)}{others};"
                " replacing those would leave the original under the others: give folders that hold every name"
                " (as picture or video files), or write copies with --output"
            )
            yield _failure(names[0], HardLinkError(message, path=names[0]), self._mode)
        self._linked_names.clear()


def _is_walked(real: Path, folders: Iterable[Path], out_root: Path | None) -> bool:
    """Whether the walk of one of ``folders`` reaches ``real`` (a resolved path) under its own name."""
    return any(folder != real and _is_inside(real, folder) for folder in folders) and not (
        out_root is not None and _is_inside(real, out_root)
    )


def plan_jobs(
    paths: list[Path], *, output_dir: Path | None = None, dry_run: bool = False, output_file: Path | None = None
) -> Plan:
    """Plans a run over files and folders (folders recursively, when the plan's ``items`` are walked).

    Args:
        paths: files and folders as the user gave them.
        output_dir: write a mirrored tree here instead of replacing files in place. A folder input
            ``photos/`` maps to ``output_dir/photos/...``; a file input to ``output_dir/<name>``.
        dry_run: detect only, write nothing.
        output_file: for one input file, write its output here (``output_target`` decides).

    Returns:
        The plan. A path given twice, or inside a given folder, is planned once.

    Raises:
        ConfigurationError: the output folder is one of the input folders.
    """
    if output_file is not None:
        return _file_plan(paths, output_file, dry_run=dry_run)
    mode = WriteMode.DRY_RUN if dry_run else (WriteMode.OUTPUT_DIR if output_dir else WriteMode.IN_PLACE)
    out_root = output_dir.resolve() if output_dir is not None else None
    roots: list[_Root] = []
    missing: list[AnonymizationResult] = []
    for given in paths:
        path = given.absolute()
        try:
            real = _resolved(path) if path.exists() or path.is_symlink() else None
        except UnreadableFileError as exc:
            missing.append(_failure(path, exc, mode))
            continue
        if real is not None and path.is_dir():
            if out_root is not None and real == out_root:
                raise ConfigurationError(f"the output folder {path_text(output_dir or real)} is also an input folder")
            roots.append(_Root(given=path, real=real, is_folder=True, prefix=Path(real.name)))
        elif real is not None:
            roots.append(_Root(given=path, real=real, is_folder=False, prefix=Path(path.name)))
        else:
            missing.append(_failure(path, InputNotFoundError("no such file or folder", path=path), mode))
    return Plan(mode=mode, roots=_distinct(roots, out_root), missing=tuple(missing), output_dir=out_root)


# Suffixes that name the same format: the output of a file is written in the input's format.
_SAME_FORMAT = {".jpeg": ".jpg", ".jpe": ".jpg", ".tif": ".tiff"}


def _format_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    return _SAME_FORMAT.get(suffix, suffix)


def output_target(paths: Sequence[Path], output: Path, *, text: str) -> tuple[Path | None, Path | None]:
    """Whether ``-o OUTPUT`` is a folder (a mirrored tree) or, for one input file, the file to write:
    ``(output_dir, output_file)``, one of them set.

    A folder that exists, or a name ending in a separator, is a folder. For one input file, a name with a suffix
    (or a file that exists) is the output file, which must name the input's format. A name without a suffix for
    one file, or a file name for a folder or several inputs, would be ambiguous and is refused.

    Raises:
        ConfigurationError: an ambiguous name, a file name of another format, or the input itself.
    """
    is_folder = output.is_dir() or text.endswith(("/", os.sep))
    single = len(paths) == 1 and paths[0].is_file()
    if is_folder:
        return output, None
    if not single:
        if output.suffix and claimed_kind(output) is not None:
            raise ConfigurationError(
                f"-o {text} names a file, but the input is a folder or several files: give a folder to write "
                "a mirrored tree into"
            )
        return output, None
    source = paths[0]
    if not output.suffix and not output.exists():
        example = f"{text}{source.suffix}" if source.suffix else f"{text}.jpg"
        raise ConfigurationError(
            f"-o {text} could be a file or a folder: for one input file, give the file to write ({example}) or a "
            f"folder ({text}/)"
        )
    if source.suffix and _format_suffix(output) != _format_suffix(source):  # a name without one says nothing
        raise ConfigurationError(
            f"-o {text}: the anonymized file keeps the input's format, so its name must end in {source.suffix}"
        )
    if output.resolve() == source.resolve():
        raise ConfigurationError(f"-o {text} is the input itself: leave out -o to anonymize it in place")
    return None, output


def _file_plan(paths: list[Path], output_file: Path, *, dry_run: bool) -> Plan:
    (given,) = paths
    path = given.absolute()
    real = _resolved(path)
    mode = WriteMode.DRY_RUN if dry_run else WriteMode.OUTPUT_DIR
    root = _Root(given=path, real=real, is_folder=False, prefix=Path(path.name))
    return Plan(mode=mode, roots=(root,), missing=(), output_dir=None, output_file=output_file.absolute())


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
        found += isinstance(item, FileJob | ObjectJob)
        if found >= limit:
            break
    return found, itertools.chain(head, iterator)
