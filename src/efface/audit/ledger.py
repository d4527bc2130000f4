"""SQL over the ``chain`` table: the append lock, appends, the verification walk and pruning. ``chain.py`` holds
the hashing; this module the queries. (Migration 0004 chains the rows that predate the chain with its own frozen
copy of this code.)

Appends are serialised: every writer takes the chain lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``LOCK TABLE
chain IN EXCLUSIVE MODE``, which readers do not wait for) in the transaction that inserts the record and its
chain row, so two writers can never link to the same previous row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from efface.audit.chain import (
    GENESIS_PREV_HASH,
    ChainRow,
    Event,
    EventKind,
    SeqDigest,
    content_sha256,
    link,
    payload_sha256,
)
from efface.audit.tables import CONTENT_SCHEMA, chain, files, runs, validations
from efface.errors import AuditError

__all__ = [
    "PruneCounts",
    "append",
    "file_event",
    "lock_chain",
    "prune",
    "run_finished_event",
    "run_started_event",
    "unchained_records",
    "validation_event",
    "walk",
]

_PAGE_ROWS = 5_000
# What the walk reads of each record: every field that some content version hashes.
_FILE_FIELDS = sorted(CONTENT_SCHEMA.names(EventKind.FILE))
_RUN_FIELDS = sorted(CONTENT_SCHEMA.names(EventKind.RUN_STARTED) | CONTENT_SCHEMA.names(EventKind.RUN_FINISHED))
_VALIDATION_FIELDS = sorted(CONTENT_SCHEMA.names(EventKind.VALIDATION))


def lock_chain(connection: Connection) -> None:
    """Takes the append lock for the rest of the connection's transaction. Call it first in the transaction."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # pysqlite would only BEGIN before the first insert; take the write lock before reading the chain's head.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        connection.exec_driver_sql("LOCK TABLE chain IN EXCLUSIVE MODE")
    else:
        raise AuditError(f"the audit log supports SQLite and PostgreSQL, not {dialect}")


def _head(connection: Connection) -> tuple[int, str]:
    row = connection.execute(sa.select(chain.c.seq, chain.c.row_hash).order_by(chain.c.seq.desc()).limit(1)).first()
    return (row.seq, row.row_hash) if row is not None else (0, GENESIS_PREV_HASH)


def append(connection: Connection, events: Sequence[Event], *, key: bytes | None) -> int:
    """Appends events after the chain's head; the caller holds the chain lock.

    Returns:
        The ``seq`` of the last row appended.
    """
    seq, prev_hash = _head(connection)
    recorded_at = datetime.now(UTC)
    rows = []
    for event in events:
        seq += 1
        row = link(event, seq=seq, prev_hash=prev_hash, recorded_at=recorded_at, key=key)
        rows.append(row)
        prev_hash = row["row_hash"]
    if rows:
        connection.execute(chain.insert(), rows)
    return seq


def _record_event(kind: EventKind, record: Mapping[str, Any], **record_id: Any) -> Event:
    """The event of a record, hashed with the current content version."""
    version = CONTENT_SCHEMA.current_version
    content = content_sha256(CONTENT_SCHEMA.fields(kind, version), record)
    return Event(kind, content, content_version=version, **record_id)


def run_started_event(run: Mapping[str, Any]) -> Event:
    return _record_event(EventKind.RUN_STARTED, run, run_id=run["run_id"])


def run_finished_event(run: Mapping[str, Any]) -> Event:
    return _record_event(EventKind.RUN_FINISHED, run, run_id=run["run_id"])


def file_event(file: Mapping[str, Any]) -> Event:
    return _record_event(EventKind.FILE, file, file_id=file["id"])


def validation_event(validation: Mapping[str, Any]) -> Event:
    return _record_event(EventKind.VALIDATION, validation, validation_id=validation["validation_id"])


def _payload_event(kind: EventKind, payload: dict[str, Any]) -> Event:
    return Event(kind, payload_sha256(payload), payload=payload, content_version=CONTENT_SCHEMA.current_version)


def _labelled(table: sa.Table, names: Iterable[str], prefix: str) -> list[sa.ColumnElement[Any]]:
    return [table.c[name].label(f"{prefix}{name}") for name in names]


def walk(connection: Connection) -> Iterator[ChainRow]:
    """Every chain row in ``seq`` order, with the record it stands for (None when missing or pruned), streamed."""
    live = chain.c.pruned_by.is_(None)
    query = (
        sa.select(
            chain,
            *_labelled(files, _FILE_FIELDS, "f_"),
            *_labelled(runs, _RUN_FIELDS, "r_"),
            *_labelled(validations, _VALIDATION_FIELDS, "v_"),
        )
        .select_from(
            chain.outerjoin(files, sa.and_(chain.c.file_id == files.c.id, live))
            .outerjoin(runs, sa.and_(chain.c.run_id == runs.c.run_id, live))
            .outerjoin(validations, sa.and_(chain.c.validation_id == validations.c.validation_id, live))
        )
        .order_by(chain.c.seq)
    )
    result = connection.execute(query, execution_options={"yield_per": _PAGE_ROWS})
    try:
        yield from (_chain_row(row) for row in result.mappings())
    finally:
        result.close()


def _chain_row(row: sa.RowMapping) -> ChainRow:
    record: dict[str, Any] | None = None
    if row["f_id"] is not None:
        record = {name: row[f"f_{name}"] for name in _FILE_FIELDS}
    elif row["r_run_id"] is not None:
        record = {name: row[f"r_{name}"] for name in _RUN_FIELDS}
    elif row["v_validation_id"] is not None:
        record = {name: row[f"v_{name}"] for name in _VALIDATION_FIELDS}
    return ChainRow(
        seq=row["seq"],
        kind=row["kind"],
        recorded_at=row["recorded_at"],
        run_id=row["run_id"],
        file_id=row["file_id"],
        validation_id=row["validation_id"],
        payload=row["payload"],
        content_sha256=row["content_sha256"],
        prev_hash=row["prev_hash"],
        row_hash=row["row_hash"],
        hash_alg=row["hash_alg"],
        pruned_by=row["pruned_by"],
        content_version=row["content_version"],
        record=record,
    )


def unchained_records(connection: Connection) -> Iterator[tuple[str, str]]:
    """``(table, id)`` of every run, file and validation that no live chain row stands for: inserted rows."""
    live = chain.c.pruned_by.is_(None)
    checks = (
        ("runs", runs.c.run_id, chain.c.run_id, EventKind.RUN_STARTED),
        ("files", files.c.id, chain.c.file_id, EventKind.FILE),
        ("validations", validations.c.validation_id, chain.c.validation_id, EventKind.VALIDATION),
    )
    for name, id_column, chain_column, kind in checks:
        # EXCEPT rather than an anti-join: PostgreSQL plans it as a hash set operation whatever its statistics
        # say (a fresh table's would make a cursor's anti-join a quadratic nested loop).
        chained = sa.select(chain_column).where(chain.c.kind == kind.value, live)
        query = sa.select(id_column).except_(chained).order_by(sa.literal_column("1"))
        result = connection.execute(query, execution_options={"yield_per": _PAGE_ROWS})
        try:
            for (row_id,) in result:
                yield name, str(row_id)
        finally:
            result.close()


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """What a prune removed (or, in a dry run, would remove).

    Attributes:
        older_than: the cutoff (UTC).
        runs / files / validations: records deleted.
        chain_rows: chain rows of those records, marked as pruned (they stay: they hold hashes only).
        seq: the prune's own chain row, or None in a dry run.
    """

    older_than: datetime
    runs: int
    files: int
    validations: int
    chain_rows: int
    seq: int | None


def _old_runs(older_than: datetime) -> sa.Select[Any]:
    # A run is old when all of it is: its start, its finish and every file. A run that has not finished is
    # never old, however long ago it started or wrote its last file: it may be writing its next one (a run
    # killed without finishing stays too, since nothing tells it from one that is going).
    recent_file = sa.select(files.c.id).where(files.c.run_id == runs.c.run_id, files.c.started_at >= older_than)
    return sa.select(runs.c.run_id).where(
        runs.c.started_at < older_than,
        runs.c.finished_at.is_not(None),
        runs.c.finished_at < older_than,
        ~sa.exists(recent_file),
    )


def prune(connection: Connection, *, older_than: datetime, key: bytes | None, is_dry_run: bool) -> PruneCounts:
    """Deletes the runs (with their files) and validations older than ``older_than`` and appends a prune event
    holding the counts and a digest of the chain rows it marks; the caller holds the chain lock.
    """
    old_runs = _old_runs(older_than)
    old_files = sa.select(files.c.id).where(files.c.run_id.in_(old_runs))
    old_validations = sa.select(validations.c.validation_id).where(validations.c.created_at < older_than)
    if is_dry_run:
        count = sa.select(sa.func.count()).select_from
        return PruneCounts(
            older_than=older_than,
            runs=connection.scalar(count(_old_runs(older_than).subquery())) or 0,
            files=connection.scalar(count(old_files.subquery())) or 0,
            validations=connection.scalar(count(old_validations.subquery())) or 0,
            chain_rows=0,
            seq=None,
        )
    seq = _head(connection)[0] + 1
    connection.execute(
        chain.update()
        .where(
            chain.c.pruned_by.is_(None),
            sa.or_(
                chain.c.run_id.in_(old_runs),
                chain.c.file_id.in_(old_files),
                chain.c.validation_id.in_(old_validations),
            ),
        )
        .values(pruned_by=seq)
    )
    digest = SeqDigest()
    marked = sa.select(chain.c.seq).where(chain.c.pruned_by == seq).order_by(chain.c.seq)
    for (marked_seq,) in connection.execute(marked, execution_options={"yield_per": _PAGE_ROWS}):
        digest.add(marked_seq)
    deleted_files = connection.execute(files.delete().where(files.c.run_id.in_(old_runs))).rowcount
    deleted_runs = connection.execute(runs.delete().where(runs.c.run_id.in_(old_runs))).rowcount
    deleted_validations = connection.execute(validations.delete().where(validations.c.created_at < older_than)).rowcount
    payload = {
        "older_than": older_than.astimezone(UTC).isoformat(),
        "runs": deleted_runs,
        "files": deleted_files,
        "validations": deleted_validations,
        "chain_rows": digest.count,
        "chain_rows_sha256": digest.hexdigest(),
    }
    append(connection, [_payload_event(EventKind.PRUNE, payload)], key=key)
    return PruneCounts(older_than, deleted_runs, deleted_files, deleted_validations, digest.count, seq)
