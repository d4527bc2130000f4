"""Writes audit records as CSV, JSON Lines or Parquet, streamed: memory stays constant however many rows.

CSV and JSON Lines write times as UTC ISO 8601 with ``Z``; CSV writes JSON columns as compact JSON text and
None as an empty cell. Parquet (needs ``pyarrow``: ``pip install 'efface[parquet]'``) keeps types: 64-bit
integers and floats, UTC timestamps in microseconds, booleans, and JSON columns as JSON text.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from efface.audit.chain import FieldType
from efface.errors import ConfigurationError, OutputError
from efface.text import iso_time

__all__ = ["ExportFormat", "export_records"]

# Rows per Parquet row group / record batch.
_PARQUET_BATCH_ROWS = 16_384


class ExportFormat(StrEnum):
    """The file format of an export."""

    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _csv_cell(value: Any, kind: FieldType) -> Any:
    if value is None:
        return ""
    if kind is FieldType.TIME:
        return iso_time(value)
    if kind is FieldType.JSON:
        return _json_text(value)
    if kind is FieldType.BOOL:
        return "true" if value else "false"
    return value


def _jsonl_value(value: Any, kind: FieldType) -> Any:
    if value is not None and kind is FieldType.TIME:
        return iso_time(value)
    return value


@contextmanager
def _text_out(out: Path | None) -> Iterator[TextIO]:
    if out is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        with out.open("w", encoding="utf-8", newline="") as handle:
            yield handle
    except OSError as exc:
        raise OutputError(f"cannot write the export: {exc.strerror or exc}", path=out) from exc


def _write_csv(records: Iterable[Mapping[str, Any]], columns: Mapping[str, FieldType], handle: TextIO) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for record in records:
        writer.writerow([_csv_cell(record[name], kind) for name, kind in columns.items()])
        count += 1
    return count


def _write_jsonl(records: Iterable[Mapping[str, Any]], columns: Mapping[str, FieldType], handle: TextIO) -> int:
    count = 0
    for record in records:
        line = {name: _jsonl_value(record[name], kind) for name, kind in columns.items()}
        handle.write(_json_text(line))
        handle.write("\n")
        count += 1
    return count


def _write_parquet(records: Iterable[Mapping[str, Any]], columns: Mapping[str, FieldType], out: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ConfigurationError("Parquet export needs pyarrow: pip install 'efface[parquet]'") from exc
    arrow_types: dict[FieldType, pa.DataType] = {
        FieldType.STR: pa.string(),
        FieldType.INT: pa.int64(),
        FieldType.FLOAT: pa.float64(),
        FieldType.BOOL: pa.bool_(),
        FieldType.TIME: pa.timestamp("us", tz="UTC"),
        FieldType.JSON: pa.string(),
    }
    schema = pa.schema([(name, arrow_types[kind]) for name, kind in columns.items()])
    json_columns = [name for name, kind in columns.items() if kind is FieldType.JSON]
    count = 0
    try:
        with pq.ParquetWriter(out, schema) as writer:
            batch: dict[str, list[Any]] = {name: [] for name in columns}
            for record in records:
                for name in columns:
                    batch[name].append(record[name])
                count += 1
                if count % _PARQUET_BATCH_ROWS == 0:
                    _flush(writer, batch, schema, json_columns, pa)
            if count % _PARQUET_BATCH_ROWS or count == 0:
                _flush(writer, batch, schema, json_columns, pa)
    except OSError as exc:
        raise OutputError(f"cannot write the export: {exc.strerror or exc}", path=out) from exc
    return count


def _flush(writer: Any, batch: dict[str, list[Any]], schema: Any, json_columns: list[str], pa: Any) -> None:
    for name in json_columns:
        batch[name] = [None if value is None else _json_text(value) for value in batch[name]]
    writer.write_batch(pa.RecordBatch.from_pydict(batch, schema=schema))
    for values in batch.values():
        values.clear()


def export_records(
    records: Iterable[Mapping[str, Any]],
    columns: Mapping[str, FieldType],
    export_format: ExportFormat,
    *,
    out: Path | None,
) -> int:
    """Writes records, one at a time, in the given format.

    Args:
        records: the rows, each a mapping with at least ``columns``.
        columns: the columns to write, in order, with their kinds.
        export_format: csv, jsonl or parquet.
        out: the file to write; None writes CSV or JSON Lines to standard output.

    Returns:
        The number of rows written.

    Raises:
        ConfigurationError: Parquet without pyarrow, or Parquet to standard output.
        OutputError: the file cannot be written.
    """
    export_format = ExportFormat(export_format)
    if export_format is ExportFormat.PARQUET:
        if out is None:
            raise ConfigurationError("a Parquet export needs --out FILE")
        return _write_parquet(records, columns, out)
    with _text_out(out) as handle:
        if export_format is ExportFormat.CSV:
            return _write_csv(records, columns, handle)
        return _write_jsonl(records, columns, handle)
