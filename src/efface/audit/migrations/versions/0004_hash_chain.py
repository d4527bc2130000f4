"""The chain table: a hash chain over every run, file, validation and prune, and the chaining of the rows that
exist already (a genesis event, then one chain row per record as it is now), so ``verify`` passes at once.

The rows are hashed with the audit key when the store that upgrades has one (``EFFACE_AUDIT_KEY``).

Frozen: the hashing and the field lists below are copies of ``efface.audit.chain`` as it was at this revision
(content version 1, which rows without a ``content_version`` are verified with), so that no later change to
efface changes what an upgrade from 0003 writes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.engine import Connection

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GENESIS_PREV_HASH = "0" * 64
_PAGE_ROWS = 5_000

# The canonical content of each record as hashed at this revision: field name and how it is written.
RUN_START_FIELDS = {
    "run_id": "str",
    "started_at": "time",
    "efface_version": "str",
    "command": "str",
    "mode": "str",
    "model_name": "str",
    "model_sha256": "str",
    "settings": "json",
    "hostname": "str",
}
RUN_FINISH_FIELDS = {
    "run_id": "str",
    "status": "str",
    "finished_at": "time",
    "files_total": "int",
    "files_failed": "int",
    "faces_detected": "int",
    "faces_anonymized": "int",
    "duration_s": "float",
}
FILE_FIELDS = {
    "id": "int",
    "run_id": "str",
    "path": "str",
    "output_path": "str",
    "mode": "str",
    "outcome": "str",
    "started_at": "time",
    "duration_s": "float",
    "faces_detected": "int",
    "faces_anonymized": "int",
    "faces": "json",
    "output_sha256": "str",
    "image_format": "str",
    "width": "int",
    "height": "int",
    "error_class": "str",
    "error_message": "str",
    "details": "json",
}
VALIDATION_FIELDS = {
    "validation_id": "str",
    "kind": "str",
    "created_at": "time",
    "efface_version": "str",
    "model_name": "str",
    "model_sha256": "str",
    "settings": "json",
    "dataset": "json",
    "figures": "json",
    "passed": "bool",
    "hostname": "str",
}
_RUN_FIELDS = {**RUN_START_FIELDS, **RUN_FINISH_FIELDS}
_INITIAL_RUN_FINISH = {
    "status": "running",
    "finished_at": None,
    "files_total": 0,
    "files_failed": 0,
    "faces_detected": 0,
    "faces_anonymized": 0,
    "duration_s": None,
}
# The SQL type that reads each kind of field back as efface wrote it.
_SQL_TYPES: dict[str, Any] = {
    "str": sa.String(),
    "int": sa.Integer(),
    "float": sa.Float(),
    "bool": sa.Boolean(),
    "time": sa.DateTime(timezone=True),
    "json": sa.JSON(),
}


def _table(name: str, fields: Mapping[str, str]) -> sa.TableClause:
    return sa.table(name, *(sa.column(field, _SQL_TYPES[kind]) for field, kind in fields.items()))


_runs = _table("runs", _RUN_FIELDS)
_files = _table("files", FILE_FIELDS)
_validations = _table("validations", VALIDATION_FIELDS)
_chain = sa.table(
    "chain",
    sa.column("seq", sa.BigInteger()),
    sa.column("kind", sa.String()),
    sa.column("recorded_at", sa.DateTime(timezone=True)),
    sa.column("run_id", sa.String()),
    sa.column("file_id", sa.Integer()),
    sa.column("validation_id", sa.String()),
    sa.column("payload", sa.JSON(none_as_null=True)),
    sa.column("content_sha256", sa.String()),
    sa.column("prev_hash", sa.String()),
    sa.column("row_hash", sa.String()),
    sa.column("hash_alg", sa.String()),
    sa.column("pruned_by", sa.BigInteger()),
)


def _json_value(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _time(value: datetime) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_NORMALIZERS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "time": _time,
    "json": _json_value,
}


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _content_sha256(fields: Mapping[str, str], row: Mapping[str, Any]) -> str:
    normalized = {name: None if row[name] is None else _NORMALIZERS[kind](row[name]) for name, kind in fields.items()}
    return _sha256(_canonical_json(normalized))


def _row_hash(row: Mapping[str, Any], key: bytes | None) -> str:
    message = _canonical_json(
        {
            "seq": row["seq"],
            "kind": row["kind"],
            "recorded_at": _time(row["recorded_at"]),
            "run_id": row["run_id"],
            "file_id": row["file_id"],
            "validation_id": row["validation_id"],
            "content_sha256": row["content_sha256"],
            "prev_hash": row["prev_hash"],
            "hash_alg": row["hash_alg"],
        }
    ).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class _Chain:
    """Appends chain rows after the last one appended (the migration's lock is held: nobody else appends)."""

    def __init__(self, connection: Connection, key: bytes | None) -> None:
        self._connection = connection
        self._key = key
        self._seq = 0
        self._prev_hash = _GENESIS_PREV_HASH

    def append(self, events: Sequence[dict[str, Any]]) -> None:
        recorded_at = datetime.now(UTC)
        rows = []
        for event in events:
            self._seq += 1
            row = {
                "seq": self._seq,
                "kind": event["kind"],
                "recorded_at": recorded_at,
                "run_id": event.get("run_id"),
                "file_id": event.get("file_id"),
                "validation_id": event.get("validation_id"),
                "payload": event.get("payload"),
                "content_sha256": event["content_sha256"],
                "prev_hash": self._prev_hash,
                "hash_alg": "sha256" if self._key is None else "hmac-sha256",
                "pruned_by": None,
            }
            row["row_hash"] = self._prev_hash = _row_hash(row, self._key)
            rows.append(row)
        if rows:
            self._connection.execute(_chain.insert(), rows)


def _pages(connection: Connection, table: sa.TableClause, id_name: str) -> Iterator[list[dict[str, Any]]]:
    """A table's hashed fields, in pages by keyset on its primary key."""
    id_column = table.c[id_name]
    last: Any = None
    while True:
        query = sa.select(table).order_by(id_column).limit(_PAGE_ROWS)
        if last is not None:
            query = query.where(id_column > last)
        page = [dict(row) for row in connection.execute(query).mappings()]
        if not page:
            return
        yield page
        last = page[-1][id_name]


def _run_started(run: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "run_started", "content_sha256": _content_sha256(RUN_START_FIELDS, run), "run_id": run["run_id"]}


def _run_finished(run: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "run_finished", "content_sha256": _content_sha256(RUN_FINISH_FIELDS, run), "run_id": run["run_id"]}


def _is_finished(run: Mapping[str, Any]) -> bool:
    initial = {**_INITIAL_RUN_FINISH, "run_id": run["run_id"]}
    return _content_sha256(RUN_FINISH_FIELDS, run) != _content_sha256(RUN_FINISH_FIELDS, initial)


def chain_existing_rows(connection: Connection, *, key: bytes | None) -> None:
    """Starts the chain: a genesis event, then one chain row per existing run start, file, run finish and
    validation, hashed as they are now.
    """
    count = sa.select(sa.func.count()).select_from
    existing = {
        "runs": connection.scalar(count(_runs)) or 0,
        "files": connection.scalar(count(_files)) or 0,
        "validations": connection.scalar(count(_validations)) or 0,
    }
    genesis = {"schema_revision": "0004", "chained_existing_records": existing}
    chain = _Chain(connection, key)
    chain.append(
        [{"kind": "genesis", "content_sha256": _sha256(_canonical_json(_json_value(genesis))), "payload": genesis}]
    )
    finished: list[dict[str, Any]] = []
    for page in _pages(connection, _runs, "run_id"):
        chain.append([_run_started(run) for run in page])
        finished += [_run_finished(run) for run in page if _is_finished(run)]
    for page in _pages(connection, _files, "id"):
        chain.append(
            [{"kind": "file", "content_sha256": _content_sha256(FILE_FIELDS, f), "file_id": f["id"]} for f in page]
        )
    for start in range(0, len(finished), _PAGE_ROWS):
        chain.append(finished[start : start + _PAGE_ROWS])
    for page in _pages(connection, _validations, "validation_id"):
        chain.append(
            [
                {
                    "kind": "validation",
                    "content_sha256": _content_sha256(VALIDATION_FIELDS, v),
                    "validation_id": v["validation_id"],
                }
                for v in page
            ]
        )


def upgrade() -> None:
    op.create_table(
        "chain",
        # Assigned under the append lock: 1, 2, 3, ... without gaps.
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        # The record a row stands for; no foreign keys: a pruned record's chain row stays.
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("file_id", sa.Integer(), nullable=True),
        sa.Column("validation_id", sa.String(32), nullable=True),
        # The content of genesis and prune events, which have no record.
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("hash_alg", sa.String(16), nullable=False),
        # Set by a prune on the rows whose records it deleted; not part of the hash.
        sa.Column("pruned_by", sa.BigInteger(), nullable=True),
    )
    for column in ("run_id", "file_id", "validation_id", "pruned_by"):
        op.create_index(f"ix_chain_{column}", "chain", [column])
    chain_existing_rows(op.get_bind(), key=context.config.attributes.get("chain_key"))


def downgrade() -> None:
    for column in ("run_id", "file_id", "validation_id", "pruned_by"):
        op.drop_index(f"ix_chain_{column}", table_name="chain")
    op.drop_table("chain")
