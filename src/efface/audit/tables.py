"""SQLAlchemy Core tables of the audit log: the one declaration of each table's columns, as the Alembic
migrations leave them (a test compares the two).

Everything else is derived from these tables: the rows the store writes (each column from the record's
attribute of that name), the ``Stored*`` records it reads (built from a row by column name: their typed fields
must match the columns, or the first read fails), the columns of an export, and ``CONTENT_SCHEMA``, what the
hash chain hashes of each record. A column marked
``info=hashed(kind, since=N)`` is part of the canonical content of ``kind`` records from content version ``N``
on, written as the ``FieldType`` its SQL type implies (``field_type``). Rows hashed with an older version keep
verifying with its fields.

To add an audited column: a new migration adds it nullable and leaves it NULL in the existing rows, and the
column here is marked ``since=CONTENT_SCHEMA.current_version + 1``. Never change the marks of existing
columns: the rows already hashed depend on them (a test holds version 1 to the field lists migration 0004
hashed). The migrations themselves are frozen history and import nothing from here.

There is no binary column: image content can never be stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from efface.audit.chain import RECORD_KINDS, ContentSchema, EventKind, FieldType
from efface.records import RunStatus

__all__ = [
    "CONTENT_SCHEMA",
    "api_keys",
    "chain",
    "content_schema",
    "field_type",
    "files",
    "hashed",
    "metadata",
    "reviews",
    "runs",
    "validations",
]

_HASHED = "efface_hashed"


@dataclass(frozen=True, slots=True)
class _Hashed:
    kinds: frozenset[EventKind]
    since: int


def hashed(*kinds: EventKind, since: int = 1) -> dict[str, Any]:
    """The ``Column.info`` of a column that the canonical content of ``kinds`` records holds.

    Args:
        kinds: the record kinds whose content holds the column (a run's start and finish hash different ones).
        since: the first content version that holds it.

    Raises:
        ValueError: no kind, a kind that is no record, or a version below 1.
    """
    if not kinds or not set(kinds) <= set(RECORD_KINDS):
        raise ValueError(f"expected one or more of {[str(k) for k in RECORD_KINDS]}, got {[str(k) for k in kinds]}")
    if since < 1:
        raise ValueError(f"content versions start at 1, got {since}")
    return {_HASHED: _Hashed(frozenset(kinds), since)}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC and always read back timezone-aware in UTC.

    SQLite has no time zones and returns naive values; they were written as UTC, so UTC is attached.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"audit datetimes must be timezone-aware, got naive {value.isoformat()}")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def field_type(column: sa.Column[Any]) -> FieldType:
    """How a column's values are written in canonical content and exports, from its SQL type."""
    column_type = column.type
    if isinstance(column_type, UTCDateTime):
        return FieldType.TIME
    if isinstance(column_type, sa.JSON):
        return FieldType.JSON
    if isinstance(column_type, sa.Boolean):
        return FieldType.BOOL
    if isinstance(column_type, sa.Integer):
        return FieldType.INT
    if isinstance(column_type, sa.Float):
        return FieldType.FLOAT
    return FieldType.STR


_RUN_START = EventKind.RUN_STARTED
_RUN_FINISH = EventKind.RUN_FINISHED
_FILE = EventKind.FILE
_VALIDATION = EventKind.VALIDATION

metadata = sa.MetaData()

# A run's start fields are hashed when it starts, its status and totals when it finishes; until then they
# hold their defaults (what a run that never finished must still hold).
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True, info=hashed(_RUN_START, _RUN_FINISH)),
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True, info=hashed(_RUN_START)),
    sa.Column("finished_at", UTCDateTime(), nullable=True, info=hashed(_RUN_FINISH)),
    sa.Column("efface_version", sa.String(64), nullable=False, info=hashed(_RUN_START)),
    sa.Column("command", sa.String(64), nullable=False, info=hashed(_RUN_START)),
    sa.Column("mode", sa.String(16), nullable=False, info=hashed(_RUN_START)),
    sa.Column("model_name", sa.String(128), nullable=False, info=hashed(_RUN_START)),
    sa.Column("model_sha256", sa.String(64), nullable=False, info=hashed(_RUN_START)),
    sa.Column("settings", sa.JSON(), nullable=False, info=hashed(_RUN_START)),
    sa.Column("hostname", sa.String(255), nullable=False, info=hashed(_RUN_START)),
    sa.Column("status", sa.String(16), nullable=False, default=RunStatus.RUNNING.value, info=hashed(_RUN_FINISH)),
    sa.Column("files_total", sa.Integer(), nullable=False, default=0, info=hashed(_RUN_FINISH)),
    sa.Column("files_failed", sa.Integer(), nullable=False, default=0, info=hashed(_RUN_FINISH)),
    sa.Column("faces_detected", sa.Integer(), nullable=False, default=0, info=hashed(_RUN_FINISH)),
    sa.Column("faces_anonymized", sa.Integer(), nullable=False, default=0, info=hashed(_RUN_FINISH)),
    sa.Column("duration_s", sa.Float(), nullable=True, info=hashed(_RUN_FINISH)),
    # Migration 0007: what a resumed run compares (NULL in runs from before it, whose files are never skipped).
    sa.Column("settings_sha256", sa.String(64), nullable=True, info=hashed(_RUN_START, since=3)),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, info=hashed(_FILE)),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False, index=True, info=hashed(_FILE)),
    # NULL for a request to the HTTP service, which has a request id instead.
    sa.Column("path", sa.Text(), nullable=True, index=True, info=hashed(_FILE)),
    sa.Column("output_path", sa.Text(), nullable=True, info=hashed(_FILE)),
    sa.Column("mode", sa.String(16), nullable=False, info=hashed(_FILE)),
    sa.Column("outcome", sa.String(32), nullable=False, info=hashed(_FILE)),
    sa.Column("started_at", UTCDateTime(), nullable=False, info=hashed(_FILE)),
    sa.Column("duration_s", sa.Float(), nullable=False, info=hashed(_FILE)),
    sa.Column("faces_detected", sa.Integer(), nullable=False, info=hashed(_FILE)),
    sa.Column("faces_anonymized", sa.Integer(), nullable=False, info=hashed(_FILE)),
    sa.Column("faces", sa.JSON(), nullable=False, info=hashed(_FILE)),
    sa.Column("output_sha256", sa.String(64), nullable=True, info=hashed(_FILE)),
    sa.Column("image_format", sa.String(32), nullable=True, info=hashed(_FILE)),
    sa.Column("width", sa.Integer(), nullable=True, info=hashed(_FILE)),
    sa.Column("height", sa.Integer(), nullable=True, info=hashed(_FILE)),
    sa.Column("error_class", sa.String(128), nullable=True, info=hashed(_FILE)),
    sa.Column("error_message", sa.Text(), nullable=True, info=hashed(_FILE)),
    sa.Column("details", sa.JSON(), nullable=False, info=hashed(_FILE)),
    # Migration 0006.
    sa.Column("request_id", sa.String(32), nullable=True, index=True, info=hashed(_FILE, since=2)),
    # Migration 0008: what the detector was unsure of (NULL: not recorded, as before it and where no detector ran).
    sa.Column("uncertain", sa.Integer(), nullable=True, index=True, info=hashed(_FILE, since=4)),
    sa.Column("uncertainty", sa.JSON(), nullable=True, info=hashed(_FILE, since=4)),
)

validations = sa.Table(
    "validations",
    metadata,
    sa.Column("validation_id", sa.String(32), primary_key=True, info=hashed(_VALIDATION)),
    sa.Column("kind", sa.String(16), nullable=False, info=hashed(_VALIDATION)),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True, info=hashed(_VALIDATION)),
    sa.Column("efface_version", sa.String(64), nullable=False, info=hashed(_VALIDATION)),
    sa.Column("model_name", sa.String(128), nullable=False, info=hashed(_VALIDATION)),
    sa.Column("model_sha256", sa.String(64), nullable=False, info=hashed(_VALIDATION)),
    sa.Column("settings", sa.JSON(), nullable=False, info=hashed(_VALIDATION)),
    sa.Column("dataset", sa.JSON(), nullable=False, info=hashed(_VALIDATION)),
    sa.Column("figures", sa.JSON(), nullable=False, info=hashed(_VALIDATION)),
    sa.Column("passed", sa.Boolean(), nullable=True, info=hashed(_VALIDATION)),
    sa.Column("hostname", sa.String(255), nullable=False, info=hashed(_VALIDATION)),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("rate_limit_per_min", sa.Integer(), nullable=True),
)

# The state of a review of one file (migration 0009): working state, not hashed (``audit.reviews``).
reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("path", sa.Text(), primary_key=True),
    sa.Column("source_sha256", sa.String(64), nullable=False),
    sa.Column("reviewer", sa.String(255), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("state", sa.JSON(), nullable=False),
    sa.Column("applied_run_id", sa.String(32), nullable=True),
)

# The hash chain (migration 0004): one row per appended audit record, in append order. See ``chain.py``.
chain = sa.Table(
    "chain",
    metadata,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=True, index=True),
    sa.Column("file_id", sa.Integer(), nullable=True, index=True),
    sa.Column("validation_id", sa.String(32), nullable=True, index=True),
    sa.Column("payload", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("hash_alg", sa.String(16), nullable=False),
    sa.Column("pruned_by", sa.BigInteger(), nullable=True, index=True),
    # NULL: content version 1 (migration 0006 added the column).
    sa.Column("content_version", sa.Integer(), nullable=True),
)


def content_schema(*tables: sa.Table) -> ContentSchema:
    """The content schema that the ``hashed`` marks of the tables' columns declare.

    Raises:
        ValueError: a finish field of a run without a plain default to start from.
    """
    marked = [(column, column.info[_HASHED]) for table in tables for column in table.columns if _HASHED in column.info]
    current = max((mark.since for _, mark in marked), default=1)
    versions = {
        version: {
            kind: {
                column.name: field_type(column)
                for column, mark in marked
                if kind in mark.kinds and mark.since <= version
            }
            for kind in RECORD_KINDS
        }
        for version in range(1, current + 1)
    }
    finish_defaults = {
        column.name: _initial_value(column)
        for column, mark in marked
        if _RUN_FINISH in mark.kinds and not column.primary_key
    }
    return ContentSchema(versions, finish_defaults)


def _initial_value(column: sa.Column[Any]) -> Any:
    default = column.default
    if default is None:
        return None
    if isinstance(default, sa.ColumnDefault) and default.is_scalar:
        return default.arg
    raise ValueError(f"{column.table.name}.{column.name} needs a constant default, got {default!r}")


CONTENT_SCHEMA = content_schema(runs, files, validations)
"""What the chain hashes of each record, in every content version."""
