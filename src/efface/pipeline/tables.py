"""Tables: Parquet files and Arrow IPC files and streams (what ``datasets`` writes: ``to_parquet``, and the
``.arrow`` files of a ``save_to_disk`` folder) anonymized cell by cell, as one file of the run.

Which columns hold pictures:
- the columns named (``Policy.image_columns``, ``--column``): every non-null cell must be a picture, and a picture
  met in any other column fails the table aloud (it would be left as it is);
- else every column typed as a ``datasets`` ``Image`` (a struct ``{bytes, path}``), every non-null cell of which must
  be a picture too, and every binary column, whose cells are sniffed one by one: a picture is anonymized, anything
  else (an embedding, a serialized array) is kept as it is.
A picture nested deeper (a list of images, a struct holding one), an image stored by its path only (not in the
table), and a video in a cell are refused aloud: efface would leave them as they are.

The file is read and rewritten a row group (Parquet) or a record batch (Arrow) at a time, at most one in memory.
The output keeps the schema with its metadata (the ``huggingface`` features included), the file's key-value
metadata, the row order, the row groups or batches as they were, every other column's values, and each column's
compression (Parquet). One audit row per picture cell (``TABLE#row=N,col=C``, rows counted from 0 over the whole
file), and the table's own with its output hash. The new table is staged beside its destination
(``media.atomic``) and swapped in by the audited run, as a shard is; a table none of whose cells changed is not
rewritten in place. A damaged table, a cell that is not a picture in a picture column, and a picture that cannot
be anonymized fail the table aloud and leave it byte for byte.

A large Parquet table can be spread over workers (a Ray cluster): ``slice_table`` cuts it into runs of row groups,
``stage_table_slice`` anonymizes one (its new row groups handed on apart from its cells' results), and
``assemble_table`` writes them, in order, into the staged table with the same guarantees as ``stage_table``: the
same rows, the same output, and a table changed on disk between the slices' reads fails aloud.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from efface.detection.models import DetectionModels
from efface.errors import CorruptImageError, EffaceError, SourceChangedError, UnsupportedFormatError
from efface.media.sniff import SNIFF_BYTES, MediaKind, sniff
from efface.pipeline.core import (
    FileJob,
    Policy,
    StagedResult,
    _error_result,
    _is_done,
    _read_failure,
    _skipped,
    anonymize_part,
)
from efface.pipeline.rewrite import Rewritten, rewrite, staged_whole
from efface.records import AnonymizationResult

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "SliceResult",
    "TableSlice",
    "assemble_table",
    "cell_path",
    "slice_table",
    "stage_table",
    "stage_table_slice",
]

logger = logging.getLogger(__name__)

_IMAGE_FIELDS = frozenset({"bytes", "path"})
# Parquet's codec names as the metadata gives them, where the writer calls them otherwise.
_CODEC_NAMES = {"uncompressed": "none", "lz4_raw": "lz4"}
# Row groups a slice holds at most (what a worker keeps in memory at once is a slice).
_SLICE_GROUPS = 8


def cell_path(table: Path, *, row: int, column: str) -> Path:
    """The path a cell is audited under: the table's path, ``#row=N,col=C``."""
    return Path(f"{table}#row={row},col={column}")


class _Role(Enum):
    """What a column's cells may be."""

    PICTURES = "every non-null cell a picture"
    MIXED = "pictures anonymized, other cells kept"
    NO_PICTURES = "a picture here fails the table"
    NESTED = "binary nested in lists, structs, maps or dictionaries: a picture there fails the table"


_ANONYMIZED = (_Role.PICTURES, _Role.MIXED)


@dataclass(frozen=True, slots=True)
class _Column:
    """A column whose cells are looked at.

    Attributes:
        index: its position in the schema.
        name: its name.
        is_image_struct: a ``datasets`` image (``{bytes, path}``) rather than plain binary.
        role: what its cells may be.
    """

    index: int
    name: str
    is_image_struct: bool
    role: _Role


@dataclass(slots=True)
class _Counts:
    """What a pass over a table (or a slice of it, from row ``first_row``) found, for its own row."""

    rows: int = 0
    batches: int = 0
    null_cells: int = 0
    kept_cells: int = 0
    is_changed: bool = False
    first_row: int = 0

    @property
    def next_row(self) -> int:
        """The row number, in the whole table, of the next row the pass meets."""
        return self.first_row + self.rows

    def add(self, other: _Counts) -> None:
        self.rows += other.rows
        self.batches += other.batches
        self.null_cells += other.null_cells
        self.kept_cells += other.kept_cells
        self.is_changed = self.is_changed or other.is_changed


@dataclass(slots=True)
class _Pass:
    """A pass over a table: the table, its looked-at columns, the picture cells' results and the counts."""

    table: _Table
    columns: tuple[_Column, ...]
    cells: tuple[AnonymizationResult, ...] = ()
    counts: _Counts = dataclasses.field(default_factory=_Counts)

    @property
    def is_changed(self) -> bool:
        return self.counts.is_changed


class _Writer(Protocol):
    def write(self, batch: Any) -> None: ...


class _Table(Protocol):
    """A table opened for reading: its format, schema, batches in order, and a writer of the same format."""

    format_name: str
    schema: pa.Schema

    def batches(self) -> Iterator[Any]: ...

    def writer(self, sink: BinaryIO) -> AbstractContextManager[_Writer]: ...


def stage_table(job: FileJob, *, models: DetectionModels, policy: Policy) -> StagedResult:
    """Anonymizes a table up to its replace (``core.stage_file`` for a table). Never raises for a problem with it.

    Returns:
        The table's result (``output_sha256`` the new table's, ``details`` the counts), its picture cells'
        results, and the staged table, or nothing staged when no cell changed in place (the table stays byte for
        byte), in a dry run, and on any failure (an error result naming the cell; the table untouched).
    """
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()

    def run_pass(handle: BinaryIO, sink: BinaryIO | None) -> _Pass:
        table = _open_table(handle, job.source)
        found = _Pass(table=table, columns=_picture_columns(table.schema, policy.image_columns, job.source))
        if sink is None:
            found.cells = _walk(table, None, found.columns, found.counts, job, models=models, policy=policy)
        else:
            with table.writer(sink) as out:
                found.cells = _walk(table, out, found.columns, found.counts, job, models=models, policy=policy)
        return found

    try:
        if _is_done(job, None):
            return StagedResult(_skipped(job, started_at=started_at, t0=t0))
        done = rewrite(job, run_pass)
    except Exception as exc:
        if not isinstance(exc, EffaceError):  # a bug must fail this table, not the whole batch
            logger.exception("unexpected error on %s", job.source)
        return StagedResult(_error_result(job, exc, started_at=started_at, t0=t0, processed=None))
    return _staged(job, done, started_at=started_at, t0=t0)


def _staged(
    job: FileJob, done: Rewritten[_Pass], *, started_at: datetime, t0: float, slices: int | None = None
) -> StagedResult:
    found, counts = done.found, done.found.counts
    details: dict[str, object] = {} if slices is None else {"slices": slices}
    details |= {
        "rows": counts.rows,
        "batches": counts.batches,
        "picture_columns": [column.name for column in found.columns if column.role in _ANONYMIZED],
        "pictures": len(found.cells),
        "null_cells": counts.null_cells,
        "kept_binary_cells": counts.kept_cells,
    }
    return staged_whole(
        job, done, found.cells, image_format=found.table.format_name, started_at=started_at, t0=t0, details=details
    )


@dataclass(frozen=True, slots=True)
class TableSlice:
    """Consecutive row groups of a Parquet table.

    Attributes:
        groups: their indexes.
        first_row: the row number, in the whole table, of the first row of the first.
    """

    groups: range
    first_row: int


@dataclass(frozen=True, slots=True)
class SliceResult:
    """What ``stage_table_slice`` found in a slice (its new row groups are handed on apart).

    Attributes:
        piece: the slice.
        cells: its picture cells' results, rows numbered in the whole table.
        counts: its counts.
        columns: the table's looked-at columns.
        source: the table file as the slice read it (inode, size, modification time).
        error: why the slice failed (the table fails with it); None when it did not.
    """

    piece: TableSlice
    cells: tuple[AnonymizationResult, ...] = ()
    counts: _Counts = dataclasses.field(default_factory=_Counts)
    columns: tuple[_Column, ...] = ()
    source: tuple[int, int, int] | None = None
    error: Exception | None = None


def slice_table(job: FileJob, *, parts: int) -> tuple[TableSlice, ...] | StagedResult:
    """Cuts a Parquet table into at least ``parts`` slices (where it has the row groups; ``_SLICE_GROUPS`` row groups
    at most each) from its footer alone.

    Returns:
        The slices; none when the table is not worth cutting (it is staged whole by ``stage_table``: one row group,
        an Arrow table, a file whose footer cannot be read, which ``stage_table`` then fails); the table's result
        when an earlier run already wrote its output (skipped).
    """
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    if _is_done(job, None):
        return StagedResult(_skipped(job, started_at=started_at, t0=t0))
    pa = _pyarrow()
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(job.source).metadata
    except (pa.ArrowException, OSError):  # damaged, not Parquet, unreadable: the whole table's pass says which
        return ()
    rows = [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)]
    if len(rows) < 2:
        return ()
    count = min(len(rows), max(parts, math.ceil(len(rows) / _SLICE_GROUPS)))
    slices, first_row = [], 0
    for index in range(count):
        groups = range(index * len(rows) // count, (index + 1) * len(rows) // count)
        slices.append(TableSlice(groups, first_row))
        first_row += sum(rows[group] for group in groups)
    return tuple(slices)


def stage_table_slice(
    job: FileJob, piece: TableSlice, *, models: DetectionModels, policy: Policy
) -> tuple[list[Any], SliceResult]:
    """Anonymizes a slice's picture cells. Never raises for a problem with the table.

    Returns:
        The slice's row groups rewritten (none in a dry run or on a failure), and what it found.
    """
    try:
        handle = job.source.open("rb")
    except OSError as exc:
        return [], SliceResult(piece, error=_read_failure(job.source, exc))
    try:
        with handle:
            status = os.fstat(handle.fileno())
            table = _open_table(handle, job.source, groups=piece.groups)
            columns = _picture_columns(table.schema, policy.image_columns, job.source)
            counts = _Counts(first_row=piece.first_row)
            out = _Collected() if job.destination is not None else None
            cells = _walk(table, out, columns, counts, job, models=models, policy=policy)
    except Exception as exc:
        if not isinstance(exc, EffaceError):  # a bug must fail this table, not the whole batch
            logger.exception("unexpected error on %s", job.source)
        return [], SliceResult(piece, error=exc)
    source = (status.st_ino, status.st_size, status.st_mtime_ns)
    return (out.batches if out is not None else []), SliceResult(piece, cells, counts, columns, source)


def assemble_table(
    job: FileJob,
    slices: Sequence[SliceResult],
    batches: Callable[[int], Sequence[Any]],
    *,
    started_at: datetime,
    t0: float,
) -> StagedResult:
    """The table staged from its slices, in order (``batches(i)``: the i-th slice's row groups), as ``stage_table``
    stages it. Never raises for a problem with the table.

    A slice that failed fails the table (the first, by row); so does a table file that is not the one every slice
    read (rewritten, replaced meanwhile): it is left as it now is.
    """
    failed = next((piece for piece in slices if piece.error is not None), None)
    if failed is not None and failed.error is not None:
        return StagedResult(_error_result(job, failed.error, started_at=started_at, t0=t0, processed=None))

    def run_pass(handle: BinaryIO, sink: BinaryIO | None) -> _Pass:
        status = os.fstat(handle.fileno())
        if any(piece.source != (status.st_ino, status.st_size, status.st_mtime_ns) for piece in slices):
            raise SourceChangedError(
                "the table changed on disk while its slices were read: left as it is", path=job.source
            )
        table = _open_table(handle, job.source)
        found = _Pass(table=table, columns=slices[0].columns)
        found.cells = tuple(cell for piece in slices for cell in piece.cells)
        for piece in slices:
            found.counts.add(piece.counts)
        if sink is not None:
            with table.writer(sink) as out:
                for index in range(len(slices)):
                    for batch in batches(index):
                        out.write(batch)
        return found

    try:
        done = rewrite(job, run_pass)
    except Exception as exc:
        if not isinstance(exc, EffaceError):  # a bug must fail this table, not the whole batch
            logger.exception("unexpected error on %s", job.source)
        return StagedResult(_error_result(job, exc, started_at=started_at, t0=t0, processed=None))
    return _staged(job, done, started_at=started_at, t0=t0, slices=len(slices))


class _Collected:
    """A writer that keeps the batches (a slice's, handed on to the table's assembler)."""

    def __init__(self) -> None:
        self.batches: list[Any] = []

    def write(self, batch: Any) -> None:
        self.batches.append(batch)


def _io(handle: BinaryIO) -> io.IOBase:
    """A file opened with ``open`` as the ``io.IOBase`` it is (which pyarrow's stubs ask for)."""
    return cast(io.IOBase, handle)


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise UnsupportedFormatError("tables need pyarrow: pip install 'efface[parquet]'") from exc
    return pa


def _open_table(handle: BinaryIO, path: Path, *, groups: range | None = None) -> _Table:
    """The table in ``handle``, by its first bytes: Parquet (only the row groups ``groups``, when given), an Arrow
    IPC file or an Arrow IPC stream."""
    pa = _pyarrow()
    head = handle.read(SNIFF_BYTES)
    handle.seek(0)
    sniffed = sniff(head)
    if sniffed.kind is not MediaKind.TABLE:
        found = sniffed.format_name or "content not recognised"
        raise CorruptImageError(f"named as a table, but not Parquet or Arrow ({found})", path=path)
    try:
        if sniffed.format_name == "Parquet":
            return _Parquet(handle, path, groups=groups)
        if groups is not None:
            raise UnsupportedFormatError(
                f"only a Parquet table is read in slices, not {sniffed.format_name}", path=path
            )
        return _Arrow(handle, path, is_stream=sniffed.format_name == "Arrow IPC stream")
    except (pa.ArrowException, OSError) as exc:
        raise CorruptImageError(f"not a valid {sniffed.format_name} table: {exc}", path=path) from exc


class _Parquet:
    """A Parquet file, a row group at a time."""

    format_name = "parquet"

    def __init__(self, handle: BinaryIO, path: Path, *, groups: range | None = None) -> None:
        import pyarrow.parquet as pq

        self._path = path
        self._file = pq.ParquetFile(handle)
        self._groups = groups if groups is not None else range(self._file.num_row_groups)
        self.schema = self._file.schema_arrow
        metadata = self._file.metadata
        self._version = metadata.format_version
        # The file's key-value metadata beyond the Arrow schema (which every writer stores anew).
        self._key_values = {k: v for k, v in (metadata.metadata or {}).items() if k != b"ARROW:schema"}
        self._compression: dict[str, str] = {}
        if metadata.num_row_groups:
            group = metadata.row_group(0)
            for index in range(group.num_columns):
                chunk = group.column(index)
                codec = chunk.compression.lower()
                self._compression[chunk.path_in_schema] = _CODEC_NAMES.get(codec, codec)

    def batches(self) -> Iterator[Any]:
        import pyarrow as pa

        for index in self._groups:
            try:
                group = self._file.read_row_group(index)
            except (pa.ArrowException, OSError) as exc:
                raise CorruptImageError(f"damaged Parquet row group {index}: {exc}", path=self._path) from exc
            # One record batch per row group (the writer writes each back as one row group).
            chunks = group.combine_chunks().to_batches()
            yield chunks[0] if len(chunks) == 1 else pa.RecordBatch.from_pylist([], schema=self.schema)

    def writer(self, sink: BinaryIO) -> AbstractContextManager[_Writer]:
        return _ParquetWriter(self, sink)


class _ParquetWriter(AbstractContextManager["_ParquetWriter"]):
    def __init__(self, source: _Parquet, sink: BinaryIO) -> None:
        import pyarrow.parquet as pq

        # Typed as the stubs cannot know them: codec names and the version as the source file's metadata gives them.
        compression: Any = source._compression or "snappy"
        version: Any = source._version
        self._source = source
        self._writer = pq.ParquetWriter(sink, source.schema, compression=compression, version=version)

    def write(self, batch: Any) -> None:
        self._writer.write_batch(batch, row_group_size=max(1, batch.num_rows))

    def __exit__(self, *exc_info: object) -> None:
        if self._source._key_values:
            self._writer.add_key_value_metadata(cast(Any, self._source._key_values))  # bytes, as read
        self._writer.close()


class _Arrow:
    """An Arrow IPC file (random access) or stream, a record batch at a time."""

    def __init__(self, handle: BinaryIO, path: Path, *, is_stream: bool) -> None:
        import pyarrow as pa

        self._path = path
        self._is_stream = is_stream
        self.format_name = "arrow stream" if is_stream else "arrow"
        self._reader: Any = pa.ipc.open_stream(_io(handle)) if is_stream else pa.ipc.open_file(_io(handle))
        self.schema = self._reader.schema

    def batches(self) -> Iterator[Any]:
        import pyarrow as pa

        try:
            if self._is_stream:
                yield from self._reader
            else:
                for index in range(self._reader.num_record_batches):
                    yield self._reader.get_batch(index)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptImageError(f"damaged Arrow {self.format_name}: {exc}", path=self._path) from exc

    def writer(self, sink: BinaryIO) -> AbstractContextManager[_Writer]:
        import pyarrow as pa

        writer = (
            pa.ipc.new_stream(_io(sink), self.schema) if self._is_stream else pa.ipc.new_file(_io(sink), self.schema)
        )
        return _ArrowWriter(writer)


class _ArrowWriter(AbstractContextManager["_ArrowWriter"]):
    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, batch: Any) -> None:
        self._writer.write_batch(batch)

    def __exit__(self, *exc_info: object) -> None:
        self._writer.close()


def _is_binary(data_type: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type) or pa.types.is_binary_view(data_type)
    )


def _is_image_struct(data_type: Any) -> bool:
    """A ``datasets`` ``Image``: a struct of ``bytes`` (binary) and ``path`` (string)."""
    import pyarrow as pa

    if not pa.types.is_struct(data_type) or {field.name for field in data_type} != _IMAGE_FIELDS:
        return False
    return _is_binary(data_type.field("bytes").type)


def _holds_image(data_type: Any) -> bool:
    """Whether a type nests an image struct (a list of images, a struct holding one)."""
    import pyarrow as pa

    if _is_image_struct(data_type):
        return True
    if pa.types.is_struct(data_type):
        return any(_holds_image(field.type) for field in data_type)
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        return _holds_image(data_type.value_type)
    if pa.types.is_map(data_type):
        return _holds_image(data_type.key_type) or _holds_image(data_type.item_type)
    return False


def _holds_binary(data_type: Any) -> bool:
    """Whether a type nests binary values (in a list, a struct, a map or a dictionary)."""
    import pyarrow as pa

    if _is_binary(data_type):
        return True
    if pa.types.is_dictionary(data_type):
        return _holds_binary(data_type.value_type)
    if pa.types.is_struct(data_type):
        return any(_holds_binary(field.type) for field in data_type)
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        return _holds_binary(data_type.value_type)
    if pa.types.is_map(data_type):
        return _holds_binary(data_type.key_type) or _holds_binary(data_type.item_type)
    return False


def _binary_leaves(array: Any) -> Iterator[Any]:
    """The binary arrays nested in ``array`` (``_holds_binary``), offsets applied."""
    import pyarrow as pa

    data_type = array.type
    if _is_binary(data_type):
        yield array
    elif pa.types.is_dictionary(data_type):
        yield from _binary_leaves(array.dictionary)
    elif pa.types.is_struct(data_type):
        for child in array.flatten():
            yield from _binary_leaves(child)
    elif pa.types.is_map(data_type):
        yield from _binary_leaves(array.keys)
        yield from _binary_leaves(array.items)
    elif pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        yield from _binary_leaves(array.flatten())


def _check_nested(array: Any, column: _Column, first_row: int, job: FileJob) -> None:
    """Fails the table if a value nested in ``array`` is a picture or a video: efface would leave it as it is."""
    for leaf in _binary_leaves(array):
        for value in leaf.to_pylist():
            if value is None:
                continue
            sniffed = sniff(value[:SNIFF_BYTES])
            if sniffed.kind is MediaKind.IMAGE or sniffed.kind is MediaKind.VIDEO:
                raise UnsupportedFormatError(
                    f"column {column.name}: a {sniffed.format_name} nested in {array.type} (rows from {first_row}): "
                    "only a column of pictures, or of binary cells, can be anonymized",
                    path=job.source,
                )


def _picture_columns(schema: Any, named: tuple[str, ...], path: Path) -> tuple[_Column, ...]:
    """The columns whose cells are looked at, each with its role (see the module docstring).

    Raises:
        UnsupportedFormatError: a named column is missing or holds no pictures; images nested deeper.
    """
    names = list(schema.names)
    for name in named:
        if name not in names:
            raise UnsupportedFormatError(f"no column {name!r} (its columns: {', '.join(names)})", path=path)
    columns: list[_Column] = []
    for index, field in enumerate(schema):
        is_struct = _is_image_struct(field.type)
        if not is_struct and not _is_binary(field.type):
            if _holds_image(field.type):
                raise UnsupportedFormatError(
                    f"column {field.name!r} nests images ({field.type}): only a column of images or of binary "
                    "cells can be anonymized",
                    path=path,
                )
            if field.name in named:
                raise UnsupportedFormatError(
                    f"column {field.name!r} is {field.type}, not pictures (binary or a datasets Image)", path=path
                )
            if _holds_binary(field.type):  # looked at, so that a picture in there is not passed over
                columns.append(_Column(index=index, name=field.name, is_image_struct=False, role=_Role.NESTED))
            continue
        if named:
            role = _Role.PICTURES if field.name in named else _Role.NO_PICTURES
        else:
            role = _Role.PICTURES if is_struct else _Role.MIXED
        columns.append(_Column(index=index, name=field.name, is_image_struct=is_struct, role=role))
    return tuple(columns)


def _walk(
    table: _Table,
    out: _Writer | None,
    columns: tuple[_Column, ...],
    counts: _Counts,
    job: FileJob,
    *,
    models: DetectionModels,
    policy: Policy,
) -> tuple[AnonymizationResult, ...]:
    """Every batch of ``table`` in order, its picture cells anonymized, written to ``out`` (None: a dry run)."""
    import pyarrow as pa

    cells: list[AnonymizationResult] = []
    for batch in table.batches():
        arrays = list(batch.columns)
        found: list[tuple[int, AnonymizationResult]] = []
        for column in columns:
            if column.role is _Role.NESTED:
                _check_nested(arrays[column.index], column, counts.next_row, job)
                continue
            replaced = _column(
                arrays[column.index], column, counts, found, job, models=models, policy=policy, write=out is not None
            )
            if replaced is not None:
                arrays[column.index] = replaced
        found.sort(key=lambda cell: cell[0])  # row by row, each row's cells in column order (the sort is stable)
        cells.extend(result for _, result in found)
        if out is not None:
            out.write(pa.RecordBatch.from_arrays(arrays, schema=table.schema))
        counts.rows += batch.num_rows
        counts.batches += 1
    return tuple(cells)


def _column(
    array: Any,
    column: _Column,
    counts: _Counts,
    cells: list[tuple[int, AnonymizationResult]],
    job: FileJob,
    *,
    models: DetectionModels,
    policy: Policy,
    write: bool,
) -> Any | None:
    """A column of one batch with its picture cells anonymized, or None when none of them changed."""
    import pyarrow as pa

    if column.is_image_struct:
        children = {field.name: child for field, child in zip(array.type, array.flatten(), strict=True)}
        contents, names = children["bytes"].to_pylist(), children["path"].to_pylist()
        is_null = array.is_null().to_pylist()
    else:
        contents = array.to_pylist()
        names = [None] * len(contents)
        is_null = [content is None for content in contents]
    outputs: list[bytes | None] = []
    is_changed = False
    for offset, (content, name, null) in enumerate(zip(contents, names, is_null, strict=True)):
        row = counts.next_row + offset
        label = f"row {row}, column {column.name}"
        if null or content is None:
            if not null and name is not None:
                raise UnsupportedFormatError(
                    f"{label}: an image stored by its path only ({name}), not in the table: anonymize that file "
                    "and embed it",
                    path=job.source,
                )
            counts.null_cells += 1
            outputs.append(content)
            continue
        output = _cell(content, name, row, label, column, counts, cells, job, models=models, policy=policy, write=write)
        is_changed = is_changed or output != content
        outputs.append(output)
    if not is_changed:
        return None
    counts.is_changed = True
    if not column.is_image_struct:
        return pa.array(outputs, type=array.type)
    fields = list(array.type)
    replaced = [
        pa.array(outputs, type=field.type) if field.name == "bytes" else children[field.name] for field in fields
    ]
    return pa.StructArray.from_arrays(replaced, fields=fields, mask=array.is_null())


def _cell(
    content: bytes,
    name: str | None,
    row: int,
    label: str,
    column: _Column,
    counts: _Counts,
    cells: list[tuple[int, AnonymizationResult]],
    job: FileJob,
    *,
    models: DetectionModels,
    policy: Policy,
    write: bool,
) -> bytes:
    """One non-null cell: anonymized if a picture (its row number and result appended to ``cells``), kept if its
    column allows."""
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    sniffed = sniff(content[:SNIFF_BYTES])
    if sniffed.kind is MediaKind.IMAGE:
        if column.role is _Role.NO_PICTURES:
            raise UnsupportedFormatError(
                f"{label}: a picture in a column not named with --column: name it too, or name none",
                path=job.source,
            )
        path = cell_path(job.source, row=row, column=column.name)
        result, output = anonymize_part(
            content,
            path=path,
            label=label,
            name=name or column.name,
            container=job.source,
            mode=job.mode,
            models=models,
            policy=policy,
            write=write,
        )
        output_path = cell_path(job.destination, row=row, column=column.name) if job.destination else None
        timed = dataclasses.replace(
            result,
            started_at=started_at,
            duration_s=time.perf_counter() - t0,
            output_path=output_path if write else None,
            output_sha256=hashlib.sha256(output).hexdigest() if write else None,
        )
        cells.append((row, timed))
        return output
    if sniffed.kind is MediaKind.VIDEO:
        raise UnsupportedFormatError(
            f"{label}: a video ({sniffed.format_name}); videos in cells are not supported", path=job.source
        )
    if column.role is _Role.PICTURES:
        found = sniffed.format_name or "content not recognised"
        raise UnsupportedFormatError(f"{label}: not a picture ({found}) in a column of pictures", path=job.source)
    counts.kept_cells += 1
    return content
