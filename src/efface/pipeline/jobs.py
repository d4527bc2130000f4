"""Turns the paths a user gives into file jobs: folders are walked, destinations mirrored, leftovers of
interrupted runs found, and inputs that cannot even be planned reported as failed results.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from efface.errors import (
    ConfigurationError,
    EffaceError,
    InputNotFoundError,
    OutputError,
    UnreadableFileError,
)
from efface.media.atomic import find_leftovers, is_leftover, leftovers_of
from efface.media.images import IMAGE_SUFFIXES, UNSUPPORTED_IMAGE_SUFFIXES
from efface.media.video import VIDEO_SUFFIXES
from efface.pipeline.core import FileJob
from efface.records import AnonymizationResult, Outcome, WriteMode

__all__ = ["Plan", "plan_jobs"]

_CANDIDATE_SUFFIXES = IMAGE_SUFFIXES | UNSUPPORTED_IMAGE_SUFFIXES | VIDEO_SUFFIXES


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run will do.

    Attributes:
        jobs: the files to anonymize, in a stable order.
        failures: inputs refused before any processing (missing path, folder without images, ...).
        leftovers: temporary files of interrupted runs, to delete before starting.
        mode: in place, output folder or dry run.
    """

    jobs: tuple[FileJob, ...]
    failures: tuple[AnonymizationResult, ...]
    leftovers: tuple[Path, ...]
    mode: WriteMode


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _failure(path: Path, exc: EffaceError, mode: WriteMode) -> AnonymizationResult:
    return AnonymizationResult(
        path=path,
        outcome=Outcome.ERROR,
        mode=mode,
        started_at=datetime.now(UTC),
        duration_s=0.0,
        error_class=type(exc).__name__,
        error_message=exc.message,
    )


def _folder_candidates(folder: Path, *, exclude: Path | None) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if exclude is None or not _is_inside(here / d, exclude))
        for name in sorted(filenames):
            candidate = here / name
            if candidate.suffix.lower() in _CANDIDATE_SUFFIXES and not is_leftover(candidate):
                found.append(candidate)
    return found


def plan_jobs(paths: list[Path], *, output_dir: Path | None = None, dry_run: bool = False) -> Plan:
    """Plans a run over files and folders (folders recursively).

    Args:
        paths: files and folders as the user gave them.
        output_dir: write a mirrored tree here instead of replacing files in place. A folder input
            ``photos/`` maps to ``output_dir/photos/...``; a file input to ``output_dir/<name>``.
        dry_run: detect only, write nothing.

    Returns:
        The plan.

    Raises:
        ConfigurationError: the output folder is one of the input folders.
    """
    mode = WriteMode.DRY_RUN if dry_run else (WriteMode.OUTPUT_DIR if output_dir else WriteMode.IN_PLACE)
    out_root = output_dir.resolve() if output_dir is not None else None
    jobs: list[FileJob] = []
    failures: list[AnonymizationResult] = []
    leftovers: set[Path] = set()
    seen_sources: set[Path] = set()
    seen_destinations: set[Path] = set()

    def add(source: Path, relative: Path) -> None:
        real = source.resolve()  # in place must replace the file itself, not a symlink to it
        if real in seen_sources:
            return
        try:
            mode_bits = os.stat(real).st_mode
        except FileNotFoundError:
            failures.append(_failure(source, InputNotFoundError("no such file (dangling link?)", path=source), mode))
            return
        except OSError as exc:
            failures.append(_failure(source, UnreadableFileError(f"cannot stat: {exc.strerror}", path=source), mode))
            return
        if not stat.S_ISREG(mode_bits):
            failures.append(_failure(source, UnreadableFileError("not a regular file", path=source), mode))
            return
        seen_sources.add(real)
        if mode is WriteMode.DRY_RUN:
            destination = None
        elif out_root is None:
            destination = real
        else:
            destination = out_root / relative
            if destination in seen_destinations:
                failures.append(
                    _failure(source, OutputError(f"another input also maps to {destination}", path=source), mode)
                )
                return
            seen_destinations.add(destination)
        jobs.append(FileJob(source=real, destination=destination))

    for given in paths:
        path = given.absolute()
        if path.is_dir():
            folder = path.resolve()
            if out_root is not None and folder == out_root:
                raise ConfigurationError(f"the output folder {output_dir} is also an input folder")
            candidates = _folder_candidates(folder, exclude=out_root)
            if not candidates:
                failures.append(
                    _failure(path, InputNotFoundError("no image or video files in this folder", path=path), mode)
                )
            for candidate in candidates:
                add(candidate, Path(folder.name) / candidate.relative_to(folder))
            leftovers.update(find_leftovers(folder))
        elif path.exists() or path.is_symlink():
            add(path, Path(path.name))
            real = path.resolve()
            leftovers.update(leftovers_of(real))
        else:
            failures.append(_failure(path, InputNotFoundError("no such file or folder", path=path), mode))
    if out_root is not None and out_root.is_dir():
        leftovers.update(find_leftovers(out_root))
    return Plan(jobs=tuple(jobs), failures=tuple(failures), leftovers=tuple(sorted(leftovers)), mode=mode)
