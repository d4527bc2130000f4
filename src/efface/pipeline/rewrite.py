"""Files anonymized part by part (a shard's members, a table's cells): read once, the new file written as it goes
into a temporary beside its destination and staged (``media.atomic``), so that the audited run swaps it in as it
swaps in any file, and a kill leaves only efface temporaries that the next run sweeps.

``rewrite`` is what shards and tables share: the pass itself (``run_pass``) is theirs. A file none of whose parts
changed is not rewritten in place (it stays byte for byte) and is copied as it is into an output folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Generic, Protocol, TypeVar

from efface.errors import OutputError
from efface.media.atomic import StagedFile, discard, original_of, stage_with
from efface.pipeline.core import FileJob, StagedResult, _file_sha256, _hard_link_details, _make_parent, _read_failure
from efface.records import AnonymizationResult, Outcome, WriteMode

__all__ = ["Pass", "Rewritten", "rewrite", "staged_whole"]

_COPY_BYTES = 1 << 20


class Pass(Protocol):
    """What a pass over a file's parts found; ``is_changed``: whether any part's bytes changed."""

    @property
    def is_changed(self) -> bool: ...


_P = TypeVar("_P", bound=Pass)


@dataclass(frozen=True, slots=True)
class Rewritten(Generic[_P]):
    """A file passed over, and staged where it changed.

    Attributes:
        found: what the pass returned.
        staged: the new file beside the destination (the source copied as it is into an output folder when
            nothing changed); None in a dry run and in place when nothing changed.
        output_sha256: the destination's content once swapped in (None in a dry run).
        source_sha256: the source's, when something is staged.
    """

    found: _P
    staged: StagedFile | None
    output_sha256: str | None
    source_sha256: str | None


def rewrite(job: FileJob, run_pass: Callable[[BinaryIO, BinaryIO | None], _P]) -> Rewritten[_P]:
    """Passes once over ``job.source`` with ``run_pass(source, sink)``, ``sink`` the staged temporary opened for
    writing (None in a dry run).

    Raises:
        Exception: whatever the pass raises (an ``OSError`` of the sink as ``OutputError``); nothing staged is
            left, and the source is untouched.
    """
    destination = job.destination
    if destination is not None:
        _make_parent(destination)
    staged: StagedFile | None = None
    try:
        with _open(job.source) as handle:
            if destination is None:
                found = run_pass(handle, None)
            else:

                def write(tmp: Path) -> _P:
                    try:
                        with tmp.open("wb") as sink:
                            return run_pass(handle, sink)
                    except OSError as exc:
                        raise OutputError(f"cannot write: {exc.strerror or exc}", path=destination) from exc

                if job.mode is WriteMode.IN_PLACE:
                    original = original_of(_fstat(handle, job.source), other_names=job.hard_links)
                    staged, found = stage_with(destination, write, replacing=original)
                else:
                    staged, found = stage_with(destination, write, permissions_from=job.source)
        if staged is not None and not found.is_changed:
            discard(staged)
            staged = None
            if job.mode is WriteMode.OUTPUT_DIR and destination is not None:
                staged = _stage_copy(job.source, destination)
        output_sha256 = None
        if destination is not None:
            output_sha256 = _file_sha256(staged.temp_path if staged is not None else job.source)
        source_sha256 = _file_sha256(job.source) if staged is not None else None
    except BaseException:
        if staged is not None:
            discard(staged)
        raise
    return Rewritten(found, staged, output_sha256, source_sha256)


def staged_whole(
    job: FileJob,
    done: Rewritten[_P],
    parts: tuple[AnonymizationResult, ...],
    *,
    image_format: str,
    started_at: datetime,
    t0: float,
    details: dict[str, object],
) -> StagedResult:
    """The file's own result beside its parts' (a shard's members, a table's cells), and what is staged.

    The faces are on the parts' rows: the file's own row counts none, so a run's totals count each once; its
    details sum them (``with_faces``, ``faces_detected``, ``faces_anonymized``) after ``details``, its own.
    """
    media = [part for part in parts if part.image_format is not None]
    faces_anonymized = sum(part.faces_anonymized for part in media)
    result = AnonymizationResult(
        path=job.source,
        outcome=Outcome.of_processing(job.mode, faces_anonymized=faces_anonymized),
        mode=job.mode,
        started_at=started_at,
        duration_s=time.perf_counter() - t0,
        output_path=job.destination,
        output_sha256=done.output_sha256,
        image_format=image_format,
        details={
            "rewritten": done.staged is not None and done.found.is_changed,
            **details,
            "with_faces": sum(1 for part in media if part.faces_detected),
            "faces_detected": sum(part.faces_detected for part in media),
            "faces_anonymized": faces_anonymized,
            **_hard_link_details(job),
        },
    )
    return StagedResult(result, done.staged, done.source_sha256, members=parts)


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise _read_failure(path, exc) from exc


def _fstat(handle: BinaryIO, path: Path) -> os.stat_result:
    try:
        return os.fstat(handle.fileno())
    except OSError as exc:
        raise _read_failure(path, exc) from exc


def _stage_copy(source: Path, destination: Path) -> StagedFile:
    """The file copied byte for byte (into an output folder, when none of its parts changed)."""

    def write(tmp: Path) -> None:
        try:
            with source.open("rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_BYTES)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=destination) from exc

    staged, _ = stage_with(destination, write, permissions_from=source)
    return staged
