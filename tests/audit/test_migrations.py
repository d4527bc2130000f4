"""The Alembic migrations are frozen history: they import no efface code, they end where ``tables.py`` is,
and a database created at any earlier head, holding the rows that schema allowed (chained from 0004 on),
upgrades to the head and verifies, old rows (hashed with content version 1, or 2 by a store at 0006) and new
ones alike; so does one upgraded through a later migration that adds a column. Real SQLite and real PostgreSQL.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

import efface.audit
from efface.audit import AuditStore
from efface.audit.chain import RECORD_KINDS, Event, EventKind, FieldType, content_sha256, link
from efface.audit.query import RecordFilter
from efface.audit.store import schema_head
from efface.audit.tables import CONTENT_SCHEMA, api_keys, chain, files, metadata, runs, validations
from efface.audit.verifier import BreakKind
from efface.records import (
    AnonymizationResult,
    Outcome,
    RunInfo,
    RunStatus,
    RunSummary,
    ValidationKind,
    ValidationRecord,
    WriteMode,
)

MIGRATIONS_DIR = Path(efface.audit.__file__).parent / "migrations"
MIGRATION_FILES = [*sorted(MIGRATIONS_DIR.glob("versions/*.py")), MIGRATIONS_DIR / "env.py"]
EARLIER_HEADS = ["0001", "0002", "0003", "0004", "0005", "0006"]
T0 = datetime(2025, 3, 1, 9, 0, 0, 250_000, tzinfo=UTC)


def load_migration(name: str) -> ModuleType:
    """A revision file as a module of its own (importing it runs nothing: upgrade() is not called)."""
    path = next(MIGRATIONS_DIR.glob(f"versions/{name}_*.py"))
    spec = importlib.util.spec_from_file_location(f"frozen_migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FROZEN_0004 = load_migration("0004")
# What each record kind hashed at 0004: content version 1, frozen in that migration.
FIELDS_AT_0004 = {
    EventKind.RUN_STARTED: FROZEN_0004.RUN_START_FIELDS,
    EventKind.RUN_FINISHED: FROZEN_0004.RUN_FINISH_FIELDS,
    EventKind.FILE: FROZEN_0004.FILE_FIELDS,
    EventKind.VALIDATION: FROZEN_0004.VALIDATION_FIELDS,
}


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, anywhere in it; relative imports as ``.name``."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules.append("." * node.level + (node.module or ""))
    return modules


@pytest.mark.parametrize("path", MIGRATION_FILES, ids=lambda path: path.name)
def test_no_migration_imports_efface(path: Path) -> None:
    live = [m for m in imported_modules(path) if m == "efface" or m.startswith(("efface.", "."))]
    assert live == [], f"{path.name} imports live code: {live}"


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "import os\nimport efface.audit.ledger as ledger\nfrom efface.audit import chain\nfrom . import x\n"
        "def f():\n    from efface import records\n"
    )
    assert imported_modules(source) == ["os", "efface.audit.ledger", "efface.audit", ".", "efface"]


@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_content_version_1_is_what_migration_0004_hashed(kind: EventKind) -> None:
    # The marks in tables.py must keep declaring version 1 as it was, or every old row would read as altered.
    declared = {name: field_type.value for name, field_type in CONTENT_SCHEMA.fields(kind, 1).items()}
    assert declared == FIELDS_AT_0004[kind]


def test_a_run_starts_as_migration_0004_expects_an_unfinished_run() -> None:
    assert dict(CONTENT_SCHEMA.run_finish_defaults) == FROZEN_0004._INITIAL_RUN_FINISH


# What each content version adds to the one before: 2 (migration 0006) files.request_id, 3 (migration 0007)
# runs.settings_sha256 in a run's start, 4 (migration 0008) files.uncertain and files.uncertainty.
ADDED_BY_VERSION = {
    2: {EventKind.FILE: {"request_id": FieldType.STR}},
    3: {EventKind.RUN_STARTED: {"settings_sha256": FieldType.STR}},
    4: {EventKind.FILE: {"uncertain": FieldType.INT, "uncertainty": FieldType.JSON}},
}


@pytest.mark.parametrize("version", sorted(ADDED_BY_VERSION))
def test_each_content_version_adds_only_its_migrations_columns(version: int) -> None:
    assert CONTENT_SCHEMA.current_version == max(ADDED_BY_VERSION)
    for kind in RECORD_KINDS:
        before, now = CONTENT_SCHEMA.fields(kind, version - 1), CONTENT_SCHEMA.fields(kind, version)
        assert dict(now.items() - before.items()) == ADDED_BY_VERSION[version].get(kind, {}), kind
        assert before.keys() <= now.keys()


def test_the_migrated_schema_is_what_tables_declare(raw_engine: sa.Engine) -> None:
    # Migrated by Alembic itself: a store creates a new database from the tables (test_create_at_head.py).
    upgrade(raw_engine, "head")
    with raw_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def upgrade(engine: sa.Engine, revision: str, *, migrations: Path = MIGRATIONS_DIR) -> None:
    """Upgrades with Alembic alone, as an older efface's store would have (no audit key)."""
    if engine.dialect.name == "sqlite" and engine.url.database:
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(migrations))
        config.set_main_option("path_separator", "os")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def old_run(*, is_finished: bool, started_at: datetime) -> dict[str, Any]:
    return {
        "run_id": uuid.uuid4().hex,
        "started_at": started_at,
        "finished_at": started_at + timedelta(minutes=5) if is_finished else None,
        "efface_version": "0.1.0",
        "command": "anonymize",
        "mode": "in_place",
        "model_name": "centerface",
        "model_sha256": "ab" * 32,
        "settings": {"method": "fill", "box_scale": 1.6, "fill_rgb": [0, 0, 0], "nested": {"a": "é", "b": None}},
        "hostname": "old-host",
        "status": "failed" if is_finished else "running",
        "files_total": 3 if is_finished else 0,
        "files_failed": 1 if is_finished else 0,
        "faces_detected": 4 if is_finished else 0,
        "faces_anonymized": 4 if is_finished else 0,
        "duration_s": 300.25 if is_finished else None,
    }


def old_file(run_id: str, index: int, *, outcome: str) -> dict[str, Any]:
    is_error = outcome == "error"
    return {
        "run_id": run_id,
        "path": f"/data/in/{uuid.uuid4().hex[:8]}/{index}.jpg",
        "output_path": None if is_error else f"/data/in/{index}.jpg",
        "mode": "in_place",
        "outcome": outcome,
        "started_at": T0 + timedelta(seconds=index, microseconds=123_456),
        "duration_s": 0.125 * index,
        "faces_detected": 0 if is_error else 4,
        "faces_anonymized": 0 if is_error else 4,
        "faces": [] if is_error else [{"xyxy": [1.5, 2.0, 30.25, 40.0], "score": 0.9123}],
        "output_sha256": None if is_error else "cd" * 32,
        "image_format": "JPEG",
        "width": 640,
        "height": 480,
        "error_class": "CorruptImageError" if is_error else None,
        "error_message": "truncated" if is_error else None,
        "details": {"exif_removed": True, "video": None},
    }


def old_validation() -> dict[str, Any]:
    return {
        "validation_id": uuid.uuid4().hex,
        "kind": "coverage",
        "created_at": T0,
        "efface_version": "0.1.0",
        "model_name": "centerface",
        "model_sha256": "ab" * 32,
        "settings": {"preset": "balanced"},
        "dataset": {"images": 198},
        "figures": {"recall": 0.891, "fp_per_image": 3.11},
        "passed": False,
        "hostname": "old-host",
    }


Record = tuple[EventKind, dict[str, Any]]


def insert_records(connection: sa.Connection, revision: str) -> list[Record]:
    """A finished and a running run with three files each, and what else the schema at ``revision`` has
    tables for (a validation from 0002, an API key from 0003), in the order a store appends them.
    """
    records: list[Record] = []
    for is_finished in (True, False):
        run = old_run(is_finished=is_finished, started_at=T0 + timedelta(hours=len(records)))
        connection.execute(runs.insert().values(**run))
        records.append((EventKind.RUN_STARTED, run))
        for index, outcome in enumerate(("anonymized", "error", "no_faces")):
            file = old_file(run["run_id"], index, outcome=outcome)
            file["id"] = connection.execute(files.insert().values(**file)).inserted_primary_key[0]
            records.append((EventKind.FILE, file))
        if is_finished:
            records.append((EventKind.RUN_FINISHED, run))
    if revision >= "0002":
        validation = old_validation()
        connection.execute(validations.insert().values(**validation))
        records.append((EventKind.VALIDATION, validation))
    if revision >= "0003":
        connection.execute(
            api_keys.insert().values(
                key_id=uuid.uuid4().hex[:16], name="ci", key_sha256=uuid.uuid4().hex * 2, created_at=T0
            )
        )
    return records


def append_as_before_0006(connection: sa.Connection, records: list[Record]) -> None:
    """Chain rows as the store wrote them from 0004 to 0005: hashed with the field lists and the link hash
    frozen in migration 0004 (content version 1), into a chain table without a content_version column.
    """
    seq, prev_hash = connection.execute(sa.select(chain.c.seq, chain.c.row_hash).order_by(chain.c.seq.desc())).first()
    for kind, record in records:
        seq += 1
        row = {
            "seq": seq,
            "kind": kind.value,
            "recorded_at": datetime.now(UTC),
            "run_id": record["run_id"] if kind is not EventKind.VALIDATION else None,
            "file_id": record["id"] if kind is EventKind.FILE else None,
            "validation_id": record["validation_id"] if kind is EventKind.VALIDATION else None,
            "payload": None,
            "content_sha256": FROZEN_0004._content_sha256(FIELDS_AT_0004[kind], record),
            "prev_hash": prev_hash,
            "hash_alg": "sha256",
            "pruned_by": None,
        }
        if kind is EventKind.FILE:
            row["run_id"] = None
        row["row_hash"] = prev_hash = FROZEN_0004._row_hash(row, None)
        connection.execute(chain.insert(), [row])


def append_as_at_0006(connection: sa.Connection, records: list[Record]) -> None:
    """Chain rows as a store at 0006 wrote them: content version 2 (the field lists 0004 froze, and
    files.request_id), the version in the row and its hash."""
    seq, prev_hash = connection.execute(sa.select(chain.c.seq, chain.c.row_hash).order_by(chain.c.seq.desc())).first()
    for kind, record in records:
        seq += 1
        fields = dict(FIELDS_AT_0004[kind])
        if kind is EventKind.FILE:
            fields["request_id"] = "str"
            record = {"request_id": None, **record}  # a file of a run, not a request
        content = content_sha256({name: FieldType(value) for name, value in fields.items()}, record)
        ids = {
            "run_id": record["run_id"] if kind in (EventKind.RUN_STARTED, EventKind.RUN_FINISHED) else None,
            "file_id": record["id"] if kind is EventKind.FILE else None,
            "validation_id": record["validation_id"] if kind is EventKind.VALIDATION else None,
        }
        event = Event(kind, content, content_version=2, **ids)
        row = link(event, seq=seq, prev_hash=prev_hash, recorded_at=datetime.now(UTC), key=None)
        prev_hash = row["row_hash"]
        connection.execute(chain.insert(), [row])


def create_at(engine: sa.Engine, revision: str, *, migrations: Path = MIGRATIONS_DIR) -> list[Record]:
    """A database at ``revision`` holding the rows its schema allowed: records from before the chain (chained
    by migration 0004 when ``revision`` is past it), from 0004 on records appended through the chain, and at
    0006 records appended with content version 2.
    """
    before_chain = min(revision, "0003")
    upgrade(engine, before_chain, migrations=migrations)
    with engine.begin() as connection:
        records = insert_records(connection, before_chain)
    if revision >= "0004":
        upgrade(engine, revision, migrations=migrations)
        with engine.begin() as connection:
            chained = insert_records(connection, revision)
            append_as_before_0006(connection, chained)
        records += chained
    if revision >= "0006":
        with engine.begin() as connection:
            versioned = insert_records(connection, revision)
            append_as_at_0006(connection, versioned)
        records += versioned
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == revision
    return records


def append_after_upgrade(store: AuditStore, records: list[Record]) -> int:
    """Finishes the old runs still running, and appends a new run (a file and a request) and a validation.

    Returns:
        The chain rows appended.
    """
    running = [r["run_id"] for kind, r in records if kind is EventKind.RUN_STARTED and r["status"] == "running"]
    for run_id in running:
        store.finish_run(run_id, RunSummary(RunStatus.COMPLETED, T0 + timedelta(days=1), 3, 0, 8, 8, 60.0))
    run = RunInfo(
        uuid.uuid4().hex,
        T0 + timedelta(days=2),
        "0.2.0",
        "serve",
        WriteMode.RESPONSE,
        "centerface",
        "ab" * 32,
        {"method": "fill"},
        "new-host",
    )
    store.start_run(run)
    common = {"mode": WriteMode.RESPONSE, "started_at": run.started_at, "duration_s": 0.05}
    store.record_files(
        run.run_id,
        [
            AnonymizationResult(None, Outcome.NO_FACES, request_id=uuid.uuid4().hex, **common),
            AnonymizationResult(Path("/data/new.jpg"), Outcome.NO_FACES, **common),
        ],
    )
    store.finish_run(run.run_id, RunSummary(RunStatus.COMPLETED, run.started_at, 2, 0, 0, 0, 1.0))
    store.record_validation(
        ValidationRecord(
            uuid.uuid4().hex,
            ValidationKind.STRENGTH,
            run.started_at,
            "0.2.0",
            "centerface",
            "ab" * 32,
            {},
            {"identities": 3},
            {"rank1": 0.01},
            True,
            "new-host",
        )
    )
    return len(running) + 1 + 2 + 1 + 1


def content_versions(engine: sa.Engine) -> list[int | None]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(chain.c.content_version).order_by(chain.c.seq)).scalars())


@pytest.mark.parametrize("revision", EARLIER_HEADS)
def test_a_database_from_an_earlier_head_upgrades_and_verifies(
    db_url: str, raw_engine: sa.Engine, revision: str
) -> None:
    records = create_at(raw_engine, revision)

    with AuditStore(db_url) as store:
        upgraded = store.verify()
        assert upgraded.is_intact, upgraded.breaks
        # genesis, then one chain row per record
        assert (upgraded.rows, upgraded.records_checked) == (1 + len(records), len(records))
        appended = append_after_upgrade(store, records)
        report = store.verify()
        assert report.is_intact, report.breaks
        assert report.rows == upgraded.rows + appended
        assert {f.request_id is None for f in store.find_files(RecordFilter(), limit=100)} == {True, False}
    # The rows from before 0006 have no content version (version 1), those a store at 0006 wrote version 2, the
    # new ones the current one.
    versions = content_versions(raw_engine)
    assert versions[upgraded.rows :] == [CONTENT_SCHEMA.current_version] * appended
    assert set(versions[: upgraded.rows]) == ({None, 2} if revision >= "0006" else {None})
    with raw_engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == schema_head()


def first_file_id(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.min(files.c.id))).scalar_one()


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("UPDATE files SET faces_detected = 7 WHERE id = :id", "was altered"),
        # Version 1 does not hash request_id: the upgrade left it NULL, and it must stay so.
        ("UPDATE files SET request_id = 'planted' WHERE id = :id", "request_id must be NULL"),
    ],
    ids=["hashed-field", "field-added-later"],
)
def test_an_altered_row_hashed_with_version_1_is_found(
    db_url: str, raw_engine: sa.Engine, sql: str, found: str
) -> None:
    create_at(raw_engine, "0005")
    target = first_file_id(raw_engine)
    with AuditStore(db_url) as store:
        assert store.verify().is_intact
        with raw_engine.begin() as connection:
            connection.execute(sa.text(sql), {"id": target})
        report = store.verify()
    assert report.breaks_total == 1, report.breaks
    (only,) = report.breaks
    assert (only.kind, only.table, only.row_id) == (BreakKind.ALTERED, "files", str(target))
    assert found in only.message, only.message


TEST_MIGRATION = textwrap.dedent(
    '''
    """A column added after 0009, by a test: the later history must leave the old rows verifying.

    Revision ID: 0010
    Revises: 0009
    """

    import sqlalchemy as sa
    from alembic import op

    revision = "0010"
    down_revision = "0009"
    branch_labels = None
    depends_on = None


    def upgrade() -> None:
        op.add_column("files", sa.Column("test_extra", sa.Text(), nullable=True))
        op.execute("UPDATE files SET test_extra = 'filled in by 0010'")


    def downgrade() -> None:
        op.drop_column("files", "test_extra")
    '''
)


def test_a_column_added_by_a_later_migration_leaves_old_rows_verifying(
    db_url: str, raw_engine: sa.Engine, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0010_test_extra.py").write_text(TEST_MIGRATION)
    assert schema_head(migrations) == "0010"
    # Rows of content version 1 (before 0006), 2 (a store at 0006) and 3 (a store at 0007), then the upgrade.
    records = create_at(raw_engine, "0006", migrations=migrations)
    with AuditStore(db_url) as store:
        appended = append_after_upgrade(store, records)
    with AuditStore(db_url, migrations=migrations) as store:
        report = store.verify()
        assert report.is_intact, report.breaks
        assert report.rows == 1 + len(records) + appended
        store.record_files(
            store.list_runs(limit=1)[0].run_id,
            [AnonymizationResult(Path("/data/later.jpg"), Outcome.NO_FACES, WriteMode.RESPONSE, T0, 0.0)],
        )
        assert store.verify().is_intact
    columns = {c["name"] for c in sa.inspect(raw_engine).get_columns("files")}
    assert {"request_id", "test_extra"} <= columns
    with raw_engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0010"


def test_a_settings_hash_planted_in_a_run_from_before_0007_is_found(db_url: str, raw_engine: sa.Engine) -> None:
    # A planted hash could make a resumed run skip that run's files: no content version before 3 hashes it, so
    # it must stay NULL there.
    create_at(raw_engine, "0006")
    with AuditStore(db_url) as store:
        assert store.verify().is_intact
        with raw_engine.begin() as connection:
            target = connection.execute(sa.select(sa.func.min(runs.c.run_id))).scalar_one()
            connection.execute(runs.update().where(runs.c.run_id == target).values(settings_sha256="ab" * 32))
        report = store.verify()
    assert report.breaks_total == 1, report.breaks
    (only,) = report.breaks
    assert (only.kind, only.table, only.row_id) == (BreakKind.ALTERED, "runs", target)
    assert "settings_sha256 must be NULL" in only.message, only.message
