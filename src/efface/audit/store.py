"""``AuditStore``: writes runs, per-file results and validations to SQLite or PostgreSQL and reads them back.

Every write inserts its record and appends its chain row (``chain.py``, ``ledger.py``) in one transaction that
holds the chain's append lock, so concurrent writers, threads or processes, keep one valid chain.

Every SQLAlchemy, driver, Alembic and file-system error is translated into ``AuditError`` by
``_errors.translate_errors``: nothing foreign leaves this module.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from efface.audit import ledger
from efface.audit._errors import translate_errors
from efface.audit.chain import Event, EventKind, Fields, payload_sha256
from efface.audit.ledger import PruneCounts
from efface.audit.query import AuditTable, RecordFilter, matches_path, select_records
from efface.audit.summary import ActivitySummary, ReportScope, summarize
from efface.audit.tables import CONTENT_SCHEMA, files, metadata, runs, validations
from efface.audit.urls import engine_url
from efface.audit.verifier import ChainReport, ChainVerifier
from efface.errors import AuditError, ConfigurationError
from efface.records import (
    AnonymizationResult,
    Location,
    ObjectURL,
    Outcome,
    RunInfo,
    RunStatus,
    RunSummary,
    ValidationKind,
    ValidationRecord,
    WriteMode,
)
from efface.text import path_text

__all__ = ["AUDIT_KEY_ENV", "AuditStore", "StoredFile", "StoredRun", "audit_key_from_env"]

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

_MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest revision in ``migrations/versions``, which ``tables.py`` declares. Known here so that opening a
# database already at it asks SQL alone, without loading Alembic and its scripts; a test checks it is Alembic's head.
SCHEMA_HEAD = "0009"
# Alembic's bookkeeping table, as Alembic creates it (``DefaultImpl.version_table_impl``): written here for a new
# database created at the head, read here to see whether a database is at it.
_alembic_version = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)
# The first chain row of a new database, as migration 0004 writes it when it starts the chain of an empty one
# (no records to chain; written before content versions, so with none).
_GENESIS_PAYLOAD: dict[str, Any] = {
    "schema_revision": "0004",
    "chained_existing_records": {"runs": 0, "files": 0, "validations": 0},
}
# Worker processes wait this long for another writer's lock before failing (unless the URL says ?timeout=).
_SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any constant: serialises concurrent first-time migrations of one PostgreSQL database.
_PG_MIGRATION_LOCK_KEY = 0x0EFFACE
# Audit details may hold paths or enums; they are stored as their string form rather than failing the file.
_json_serializer = functools.partial(json.dumps, default=str)
AUDIT_KEY_ENV = "EFFACE_AUDIT_KEY"
# Rows fetched per round trip when streaming a table.
_STREAM_ROWS = 10_000
# An HMAC key shorter than this is guessable; 32 random characters are recommended.
_MIN_KEY_CHARS = 16


def audit_key_from_env() -> bytes | None:
    """The HMAC key of the chain from ``EFFACE_AUDIT_KEY`` (UTF-8), or None when it is unset or empty.

    Raises:
        ConfigurationError: the key is shorter than 16 characters.
    """
    value = os.environ.get(AUDIT_KEY_ENV, "")
    if not value:
        return None
    if len(value) < _MIN_KEY_CHARS:
        raise ConfigurationError(f"{AUDIT_KEY_ENV} must be at least {_MIN_KEY_CHARS} characters, got {len(value)}")
    return value.encode()


@dataclass(frozen=True, slots=True)
class StoredRun:
    """One row of the ``runs`` table. Datetimes are timezone-aware UTC."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None
    efface_version: str
    command: str
    mode: WriteMode
    model_name: str
    model_sha256: str
    settings: dict[str, Any]
    hostname: str
    status: RunStatus
    files_total: int
    files_failed: int
    faces_detected: int
    faces_anonymized: int
    duration_s: float | None
    settings_sha256: str | None


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One row of the ``files`` table. Datetimes are timezone-aware UTC.

    Attributes:
        path: the file; None for a request to the HTTP service, which has ``request_id`` instead.
        request_id: the HTTP request, or None for a file.
        faces: ``{"xyxy": [x1, y1, x2, y2], "score": s}`` per detected face, pixels rounded to 0.01
            and scores to 1e-4.
        uncertain: what is worth a reviewer's look (faint candidates, a video's bridged frames); 0: nothing; None:
            not recorded (no detector ran on it, or a row from before efface recorded it).
        uncertainty: the faint candidates' boxes and the counts (``records.Uncertainty.as_dict``), or None.
    """

    id: int
    run_id: str
    path: Location | None
    request_id: str | None
    output_path: Location | None
    mode: WriteMode
    outcome: Outcome
    started_at: datetime
    duration_s: float
    faces_detected: int
    faces_anonymized: int
    faces: tuple[dict[str, Any], ...]
    output_sha256: str | None
    image_format: str | None
    width: int | None
    height: int | None
    error_class: str | None
    error_message: str | None
    details: dict[str, Any]
    uncertain: int | None = None
    uncertainty: dict[str, Any] | None = None


def _unsettled_pending_query() -> sa.Select[Any]:
    """The pending rows of one path (``:path``) that no later row of their run follows."""
    later = sa.alias(files, "later")
    settled = sa.select(later.c.id).where(
        later.c.path == files.c.path, later.c.run_id == files.c.run_id, later.c.id > files.c.id
    )
    return (
        files.select()
        .where(files.c.path == sa.bindparam("path"), files.c.outcome == Outcome.PENDING.value, ~sa.exists(settled))
        .order_by(files.c.id)
    )


# Built once: it runs for every file a run plans.
_UNSETTLED_PENDING = _unsettled_pending_query()


def _sqlite_connect_hook(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # WAL lets readers proceed while one worker writes; the timeout makes writers queue, not fail.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return on_connect


def _create_engine(parsed: sa.URL) -> Engine:
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, json_serializer=_json_serializer)
    if engine.dialect.name == "sqlite":
        # The URL's own ``?timeout=SECONDS`` (pysqlite's) says how long to wait for another writer's lock.
        timeout = parsed.query.get("timeout")
        busy_timeout_ms = _SQLITE_BUSY_TIMEOUT_MS if timeout is None else int(float(str(timeout)) * 1000)
        sa.event.listen(engine, "connect", _sqlite_connect_hook(busy_timeout_ms))
    return engine


def _lock_for_migration(connection: Connection) -> None:
    """Makes concurrent openers of a fresh database migrate one after the other."""
    if connection.dialect.name == "sqlite":
        # pysqlite would only BEGIN before DML; take the write lock now so the DDL is one transaction.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})


def _alembic_config(migrations: Path) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("path_separator", "os")
    return config


def schema_head(migrations: Path = _MIGRATIONS_DIR) -> str:
    """The newest revision of a migrations folder (efface's own by default): what an opened store migrates to."""
    if migrations == _MIGRATIONS_DIR:
        return SCHEMA_HEAD
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(migrations)).get_current_head()
    if head is None:
        raise AuditError(f"the audit migrations in {migrations} have no head revision")
    return head


def _revisions(connection: Connection) -> list[str] | None:
    """The revisions ``alembic_version`` holds (one, unless a database has branches), or None without the table."""
    if not sa.inspect(connection).has_table(_alembic_version.name):
        return None
    return list(connection.execute(sa.select(_alembic_version.c.version_num)).scalars())


def _create_at_head(connection: Connection, *, key: bytes | None) -> None:
    """Gives an empty database the schema that the migrations end with, in one step: the declared tables, the
    genesis row migration 0004 writes for an empty database, and the head revision, stamped.

    A test checks that a database made so and one migrated revision by revision have the same schema and the
    same genesis row; a migration that changes more than the schema (as 0004 does) must be mirrored here.
    """
    metadata.create_all(connection, checkfirst=False)
    genesis = Event(EventKind.GENESIS, payload_sha256(_GENESIS_PAYLOAD), payload=_GENESIS_PAYLOAD)
    ledger.append(connection, [genesis], key=key)
    _alembic_version.create(connection)
    connection.execute(_alembic_version.insert().values(version_num=SCHEMA_HEAD))
    logger.info("created the audit schema at revision %s", SCHEMA_HEAD)


def _upgrade(connection: Connection, *, key: bytes | None, migrations: Path) -> None:
    """Runs the migrations from the database's revision to the head with Alembic (imported only here)."""
    from alembic import command

    config = _alembic_config(migrations)
    config.attributes["connection"] = connection
    # 0004 chains the rows that exist already, keyed when this store has a key.
    config.attributes["chain_key"] = key
    command.upgrade(config, "head")


def _migrate(engine: Engine, *, key: bytes | None, migrations: Path) -> None:
    head = schema_head(migrations)
    with engine.begin() as connection:
        _lock_for_migration(connection)
        revisions = _revisions(connection)
        if revisions == [head]:
            return
        if revisions is None and migrations == _MIGRATIONS_DIR and not sa.inspect(connection).get_table_names():
            _create_at_head(connection, key=key)
            return
        _upgrade(connection, key=key, migrations=migrations)


def _faces_json(result: AnonymizationResult) -> list[dict[str, Any]]:
    return [face.as_dict() for face in result.faces]


def _details_json(result: AnonymizationResult) -> dict[str, Any]:
    details = dict(result.details)
    if result.video is not None:
        details["video"] = result.video.as_dict()
    return details


# A row as read (SQLAlchemy's RowMapping) or as streamed by ``iter_records``.
_Row = Mapping[str, Any] | sa.RowMapping


def _resolution(index: int) -> Callable[[AnonymizationResult], int | None]:
    return lambda result: None if result.resolution_wh is None else result.resolution_wh[index]


# The files columns that are not the result's attribute of the same name.
def _uncertain(result: AnonymizationResult) -> int | None:
    return result.uncertainty.count if result.uncertainty is not None else None


def _uncertainty_json(result: AnonymizationResult) -> dict[str, object] | None:
    return result.uncertainty.as_dict() if result.uncertainty is not None else None


_FILE_COLUMN_VALUES: dict[str, Callable[[AnonymizationResult], Any]] = {
    "faces": _faces_json,
    "details": _details_json,
    "width": _resolution(0),
    "height": _resolution(1),
    "uncertain": _uncertain,
    "uncertainty": _uncertainty_json,
}


def _column_value(value: Any) -> Any:
    """A record's attribute as its column holds it: enums by value, paths as ``path_text`` (one line, escaped
    losslessly: a name that is not UTF-8 or holds a newline is stored, not refused by the database)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path | ObjectURL):
        return path_text(value)
    return value


def _current_fields(kind: EventKind) -> Fields:
    return CONTENT_SCHEMA.fields(kind, CONTENT_SCHEMA.current_version)


def _file_values(run_id: str, result: AnonymizationResult) -> dict[str, Any]:
    """The files row of a result: every column but the id (the database's), from the attribute of its name."""
    values: dict[str, Any] = {"run_id": run_id}
    for column in files.columns:
        if column.primary_key or column.name in values:
            continue
        derive = _FILE_COLUMN_VALUES.get(column.name)
        values[column.name] = derive(result) if derive is not None else _column_value(getattr(result, column.name))
    return values


def _stored_run(row: _Row) -> StoredRun:
    return StoredRun(**{**row, "mode": WriteMode(row["mode"]), "status": RunStatus(row["status"])})


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _path(value: str | None) -> Location | None:
    """A stored path read back: an object's URL (``s3://bucket/key``) or a local path."""
    if value is None:
        return None
    if _URL.match(value):
        return ObjectURL.parse(value)
    return Path(value)


def _stored_file(row: _Row) -> StoredFile:
    return StoredFile(
        **{
            **row,
            "path": _path(row["path"]),
            "output_path": _path(row["output_path"]),
            "mode": WriteMode(row["mode"]),
            "outcome": Outcome(row["outcome"]),
            "faces": tuple(row["faces"]),
        }
    )


def _stored_validation(row: _Row) -> ValidationRecord:
    return ValidationRecord(**{**row, "kind": ValidationKind(row["kind"])})


class AuditStore:
    """The audit log of runs, files and validations in one SQLite or PostgreSQL database, under a hash chain.

    Opening brings the database to the newest schema: an empty one is created at it directly (the declared
    tables, stamped with the head revision), an older one is migrated with Alembic, and one at the head is only
    read (its revision, by plain SQL). Each write commits at once, so a
    killed process loses at most the file in flight. Several processes may write to one database: appends
    are serialised by the chain's lock.

    Args:
        url: an SQLAlchemy URL, e.g. ``sqlite:////var/lib/efface/audit.db`` (the folder is created) or
            ``postgresql://user@host/db`` (``postgres://`` too; see ``urls.engine_url``).
        key: the HMAC key of the chain. None reads ``EFFACE_AUDIT_KEY`` (unset: rows are hashed with plain
            sha256, which anyone who can write the database can recompute).
        migrations: the Alembic scripts folder to migrate with; efface's own by default (tests upgrade
            through a copy holding a revision of their own).

    Raises:
        AuditError: the URL is invalid, or the database cannot be reached or migrated.
        ConfigurationError: ``EFFACE_AUDIT_KEY`` is too short.
    """

    def __init__(self, url: str, *, key: bytes | None = None, migrations: Path = _MIGRATIONS_DIR) -> None:
        self._key = key if key is not None else audit_key_from_env()
        with translate_errors("parse audit database URL"):
            parsed = engine_url(url)
            shown_url = parsed.render_as_string(hide_password=True)
        self.shown_url = shown_url
        with translate_errors(f"open audit database {shown_url}"):
            self._engine = _create_engine(parsed)
            try:
                _migrate(self._engine, key=self._key, migrations=migrations)
            except BaseException:
                self._engine.dispose()
                raise
        logger.debug("audit database %s is ready", shown_url)

    @property
    def is_keyed(self) -> bool:
        """Whether this store appends chain rows with the HMAC key."""
        return self._key is not None

    @contextmanager
    def _append(self, action: str) -> Iterator[Connection]:
        """A transaction holding the chain's append lock; it commits when the block ends."""
        with translate_errors(action), self._engine.begin() as connection:
            ledger.lock_chain(connection)
            yield connection

    def start_run(self, run: RunInfo) -> None:
        """Records a new run with status ``running``.

        Raises:
            AuditError: the run id exists already, or the database cannot be written.
        """
        # The finish fields start at their column defaults (status running, zero totals).
        values = {name: _column_value(getattr(run, name)) for name in _current_fields(EventKind.RUN_STARTED)}
        with self._append(f"start run {run.run_id}") as connection:
            connection.execute(runs.insert().values(**values))
            ledger.append(connection, [ledger.run_started_event(values)], key=self._key)

    def record_file(self, run_id: str, result: AnonymizationResult) -> None:
        """Records the result of one file of a run, committed immediately.

        Raises:
            AuditError: the run does not exist, or the database cannot be written.
        """
        subject = path_text(result.path) if result.path is not None else f"request {result.request_id}"
        self._record_files(run_id, [result], action=f"record {subject} in run {run_id}")

    def record_files(self, run_id: str, results: Iterable[AnonymizationResult]) -> None:
        """Records the results of many files of a run in one transaction (all or none).

        Raises:
            AuditError: the run does not exist, or the database cannot be written.
        """
        self._record_files(run_id, list(results), action=f"record files in run {run_id}")

    def _record_files(self, run_id: str, results: list[AnonymizationResult], *, action: str) -> None:
        if not results:
            return
        rows = [_file_values(run_id, result) for result in results]
        insert = files.insert().returning(files.c.id, sort_by_parameter_order=True)
        with self._append(action) as connection:
            ids = connection.execute(insert, rows).scalars().all()
            events = [ledger.file_event({**row, "id": file_id}) for row, file_id in zip(rows, ids, strict=True)]
            ledger.append(connection, events, key=self._key)

    def finish_run(self, run_id: str, summary: RunSummary) -> None:
        """Stores a run's final status and totals, and appends them to the chain.

        Raises:
            AuditError: there is no such run, or the database cannot be written.
        """
        values = {
            name: _column_value(getattr(summary, name))
            for name in _current_fields(EventKind.RUN_FINISHED)
            if not runs.c[name].primary_key
        }
        with self._append(f"finish run {run_id}") as connection:
            updated = connection.execute(runs.update().where(runs.c.run_id == run_id).values(**values))
            if updated.rowcount == 0:
                raise AuditError(f"no run {run_id!r} to finish")
            ledger.append(connection, [ledger.run_finished_event({**values, "run_id": run_id})], key=self._key)

    def list_runs(self, *, limit: int = 20, record_filter: RecordFilter | None = None) -> list[StoredRun]:
        """Returns up to ``limit`` runs, newest first.

        Args:
            limit: the most runs to return.
            record_filter: only runs it selects (run id, start time range).

        Raises:
            AuditError: the database cannot be read.
            ValueError: the filter has file-only conditions.
        """
        query = select_records(AuditTable.RUNS, record_filter or RecordFilter(), newest_first=True).limit(limit)
        with translate_errors("list runs"), self._engine.connect() as connection:
            return [_stored_run(row) for row in connection.execute(query).mappings()]

    def find_files(self, record_filter: RecordFilter, *, limit: int) -> list[StoredFile]:
        """Returns up to ``limit`` files the filter selects, newest first.

        Raises:
            AuditError: the database cannot be read.
        """
        found = []
        for row in self.iter_records(AuditTable.FILES, record_filter, newest_first=True):
            found.append(_stored_file(row))
            if len(found) >= limit:
                break
        return found

    def iter_records(
        self, table: AuditTable, record_filter: RecordFilter, *, newest_first: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Streams the rows of a table that the filter selects, in the order they were written (or newest
        first), fetched in batches: memory stays constant however many rows. Close the iterator, or read it to
        the end, to release its connection.

        Raises:
            AuditError: the database cannot be read.
            ValueError: the filter does not apply to the table.
        """
        query = select_records(table, record_filter, newest_first=newest_first)
        glob = record_filter.path_glob
        with translate_errors(f"read {table.value}"), self._engine.connect() as connection:
            result = connection.execute(query, execution_options={"yield_per": _STREAM_ROWS})
            try:
                for row in result.mappings():
                    # A request has no path: no pattern matches it.
                    if glob is None or (row["path"] is not None and matches_path(row["path"], glob)):
                        yield dict(row)
            finally:
                # A reader that stops early leaves PostgreSQL's server-side cursor open otherwise.
                result.close()

    def get_run(self, run_id_or_prefix: str) -> StoredRun:
        """Returns the one run whose id is, or starts with, ``run_id_or_prefix``.

        Raises:
            AuditError: no run matches, several do, or the database cannot be read.
        """
        return _stored_run(self._get_by_prefix(runs.c.run_id, run_id_or_prefix, noun="run"))

    def list_files(self, run_id: str, *, with_pending: bool = False) -> list[StoredFile]:
        """Returns the files recorded for a run, in the order they were recorded.

        Args:
            run_id: the run.
            with_pending: include the ``pending`` rows, each written before a file was replaced (and followed by
                the file's own row, unless the run lost its database or was killed in between).

        Raises:
            AuditError: the database cannot be read.
        """
        query = files.select().where(files.c.run_id == run_id).order_by(files.c.id)
        if not with_pending:
            query = query.where(files.c.outcome != Outcome.PENDING.value)
        with translate_errors(f"list files of run {run_id}"), self._engine.connect() as connection:
            return [_stored_file(row) for row in connection.execute(query).mappings()]

    def output_hashes(self, path: Location, *, output_path: Location, settings_sha256: str) -> frozenset[str]:
        """The sha256 of every output that runs with these settings wrote for ``path`` at ``output_path`` (an
        anonymized file, or one found without faces): when ``output_path`` hashes to one of them now, it is done.

        Args:
            path: the source file.
            output_path: where the output goes: ``path`` itself in place (only in-place rows count then, never
                those of an ``--output`` run), else the file in the output tree (only ``--output`` rows count).
            settings_sha256: the runs' detection and transform settings and model (``RunInfo.settings_sha256``).

        Raises:
            AuditError: the database cannot be read.
        """
        done = (Outcome.ANONYMIZED.value, Outcome.NO_FACES.value)
        mode = WriteMode.IN_PLACE if output_path == path else WriteMode.OUTPUT_DIR
        query = (
            sa.select(files.c.output_sha256)
            .join(runs, files.c.run_id == runs.c.run_id)
            .where(
                files.c.path == path_text(path),
                files.c.output_path == path_text(output_path),
                files.c.mode == mode.value,
                files.c.outcome.in_(done),
                files.c.output_sha256.is_not(None),
                runs.c.settings_sha256 == settings_sha256,
            )
        )
        with translate_errors(f"look up {path_text(path)}"), self._engine.connect() as connection:
            return frozenset(connection.execute(query).scalars())

    def unsettled_pending(self, path: Location) -> list[StoredFile]:
        """The ``pending`` rows of ``path`` that no later row of the same run settles: replaces that a run set out
        to do and never confirmed (it was killed, or lost its database), oldest first.

        Raises:
            AuditError: the database cannot be read.
        """
        with translate_errors(f"look up {path_text(path)}"), self._engine.connect() as connection:
            rows = connection.execute(_UNSETTLED_PENDING, {"path": path_text(path)}).mappings()
            return [_stored_file(row) for row in rows]

    def record_settlement(
        self,
        pending: StoredFile,
        *,
        outcome: Outcome,
        details: Mapping[str, Any],
        error_class: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Settles a ``pending`` row another run left: a row in that run, copied from the pending one, with the
        outcome found (and its error), and ``details`` over the pending row's own, committed immediately.

        Raises:
            AuditError: the database cannot be written.
        """
        values = {
            column.name: _column_value(getattr(pending, column.name))
            for column in files.columns
            if not column.primary_key
        }
        values.update(
            outcome=outcome.value,
            error_class=error_class,
            error_message=error_message,
            details={**pending.details, **details},
        )
        insert = files.insert().returning(files.c.id)
        with self._append(f"settle the pending row of {pending.path} in run {pending.run_id}") as connection:
            file_id = connection.execute(insert, values).scalar_one()
            ledger.append(connection, [ledger.file_event({**values, "id": file_id})], key=self._key)

    def record_validation(self, record: ValidationRecord) -> None:
        """Records a coverage or strength validation, committed immediately.

        Raises:
            AuditError: the validation id exists already, or the database cannot be written.
        """
        values = {column.name: _column_value(getattr(record, column.name)) for column in validations.columns}
        with self._append(f"record validation {record.validation_id}") as connection:
            connection.execute(validations.insert().values(**values))
            ledger.append(connection, [ledger.validation_event(values)], key=self._key)

    def list_validations(self, *, limit: int = 20, kind: ValidationKind | None = None) -> list[ValidationRecord]:
        """Returns up to ``limit`` validations, newest first.

        Args:
            limit: the most validations to return.
            kind: only validations of this kind; all kinds when None.

        Raises:
            AuditError: the database cannot be read.
        """
        query = validations.select()
        if kind is not None:
            query = query.where(validations.c.kind == ValidationKind(kind).value)
        query = query.order_by(validations.c.created_at.desc(), validations.c.validation_id.desc()).limit(limit)
        with translate_errors("list validations"), self._engine.connect() as connection:
            return [_stored_validation(row) for row in connection.execute(query).mappings()]

    def get_validation(self, id_or_prefix: str) -> ValidationRecord:
        """Returns the one validation whose id is, or starts with, ``id_or_prefix``.

        Raises:
            AuditError: no validation matches, several do, or the database cannot be read.
        """
        return _stored_validation(self._get_by_prefix(validations.c.validation_id, id_or_prefix, noun="validation"))

    def _get_by_prefix(self, id_column: sa.Column[str], id_or_prefix: str, *, noun: str) -> sa.RowMapping:
        if not id_or_prefix:
            raise AuditError(f"no {noun} id given")
        query = id_column.table.select().where(id_column.startswith(id_or_prefix, autoescape=True)).limit(2)
        with translate_errors(f"read {noun} {id_or_prefix}"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        if not rows:
            raise AuditError(f"no {noun} matches {id_or_prefix!r}")
        if len(rows) > 1:
            raise AuditError(f"ambiguous {noun} id prefix {id_or_prefix!r}: several {noun}s match")
        return rows[0]

    @contextmanager
    def _snapshot(self, action: str) -> Iterator[Connection]:
        """A read-only transaction that sees one snapshot of the database throughout (the chain walk and the
        search for records outside the chain must agree, while other processes go on appending).
        """
        with translate_errors(action), self._engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execution_options(isolation_level="REPEATABLE READ")
            else:
                # SQLite (WAL): a read transaction keeps the snapshot of its first read until it ends.
                connection.exec_driver_sql("BEGIN")
            try:
                yield connection
            finally:
                connection.rollback()

    def verify(self, *, expected_hashes: Iterable[str] = ()) -> ChainReport:
        """Walks the whole chain: every chain row's link and hash, and every record against its hash.

        Args:
            expected_hashes: chain row hashes noted earlier (e.g. a report's head) that must still be there, so
                that a truncated chain is found.

        Returns:
            The report; ``is_intact`` is False on any altered, deleted or inserted row.

        Raises:
            AuditError: the database cannot be read.
        """
        verifier = ChainVerifier(CONTENT_SCHEMA, key=self._key, expected_hashes=frozenset(expected_hashes))
        with self._snapshot("verify the audit chain") as connection:
            for row in ledger.walk(connection):
                verifier.feed(row)
            return verifier.finish(ledger.unchained_records(connection))

    def summarize(self, scope: ReportScope) -> ActivitySummary:
        """Totals, models and settings, error causes, faces per file and files over time of the runs in scope.

        Raises:
            AuditError: the database cannot be read.
        """
        with self._snapshot("summarize the audit log") as connection:
            return summarize(connection, scope)

    def prune(self, *, older_than: datetime, is_dry_run: bool = False) -> PruneCounts:
        """Deletes the runs (with their files) and validations older than ``older_than`` and records the prune
        in the chain, which keeps verifying. A run is old when it has finished and its start, finish and every
        file are before the cutoff; a run that has not finished is never pruned (it may still be recording).

        Args:
            older_than: the cutoff, timezone-aware.
            is_dry_run: count only; delete and record nothing.

        Raises:
            AuditError: the database cannot be written.
        """
        if older_than.tzinfo is None:
            raise ValueError(f"older_than must be timezone-aware, got {older_than.isoformat()}")
        with self._append("prune the audit log") as connection:
            return ledger.prune(connection, older_than=older_than, key=self._key, is_dry_run=is_dry_run)

    def close(self) -> None:
        """Closes every pooled connection. The store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
