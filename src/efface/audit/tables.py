"""SQLAlchemy Core tables of the audit log, as the Alembic migrations leave them.

The schema itself is owned by ``migrations/versions``; these objects only describe it for queries
(and for ``alembic revision --autogenerate``). There is no binary column: image content can never be
stored.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = ["api_keys", "chain", "files", "metadata", "runs", "validations"]


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


metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("efface_version", sa.String(64), nullable=False),
    sa.Column("command", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("settings", sa.JSON(), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("files_total", sa.Integer(), nullable=False),
    sa.Column("files_failed", sa.Integer(), nullable=False),
    sa.Column("faces_detected", sa.Integer(), nullable=False),
    sa.Column("faces_anonymized", sa.Integer(), nullable=False),
    sa.Column("duration_s", sa.Float(), nullable=True),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False, index=True),
    sa.Column("path", sa.Text(), nullable=False, index=True),
    sa.Column("output_path", sa.Text(), nullable=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("duration_s", sa.Float(), nullable=False),
    sa.Column("faces_detected", sa.Integer(), nullable=False),
    sa.Column("faces_anonymized", sa.Integer(), nullable=False),
    sa.Column("faces", sa.JSON(), nullable=False),
    sa.Column("output_sha256", sa.String(64), nullable=True),
    sa.Column("image_format", sa.String(32), nullable=True),
    sa.Column("width", sa.Integer(), nullable=True),
    sa.Column("height", sa.Integer(), nullable=True),
    sa.Column("error_class", sa.String(128), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=True),
    sa.Column("details", sa.JSON(), nullable=False),
)

validations = sa.Table(
    "validations",
    metadata,
    sa.Column("validation_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("efface_version", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("settings", sa.JSON(), nullable=False),
    sa.Column("dataset", sa.JSON(), nullable=False),
    sa.Column("figures", sa.JSON(), nullable=False),
    sa.Column("passed", sa.Boolean(), nullable=True),
    sa.Column("hostname", sa.String(255), nullable=False),
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
)
