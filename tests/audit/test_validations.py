"""Validation records in the audit log, and the 0001 -> 0002 migration, on SQLite and real PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import efface.audit
from efface.audit import AuditStore
from efface.audit.store import schema_head
from efface.audit.tables import files, runs
from efface.errors import AuditError
from efface.records import ValidationKind, ValidationRecord

MIGRATIONS_DIR = Path(efface.audit.__file__).parent / "migrations"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

COVERAGE_FIGURES: dict[str, object] = {
    "recall": 0.9731,
    "precision": 0.88,
    "iou_threshold": 0.5,
    "per_size_px": [
        {"min_px": 0, "max_px": 16, "faces": 12, "recall": 0.5},
        {"min_px": 16, "max_px": None, "faces": 300, "recall": 0.99},
    ],
    "missed": [],
    "notes": {"annotator": "Müller", "flags": [True, False, None]},
}
STRENGTH_FIGURES: dict[str, object] = {
    "models": {
        "arcface_r100": {"rank1_before": 0.98, "rank1_after": 0.004, "tar_at_far": {"1e-3": 0.001}},
        "facenet": {"rank1_before": 0.95, "rank1_after": 0.0},
    },
    "pairs": 6000,
}


def make_validation(
    validation_id: str | None = None,
    *,
    kind: ValidationKind = ValidationKind.COVERAGE,
    created_at: datetime = T0,
    passed: bool | None = True,
) -> ValidationRecord:
    return ValidationRecord(
        validation_id=validation_id or uuid.uuid4().hex,
        kind=kind,
        created_at=created_at,
        efface_version="0.2.0",
        model_name="centerface",
        model_sha256="ab" * 32,
        settings={"score_threshold": 0.2, "preset": "balanced", "scales": [1.0, 2.0]},
        dataset={"path": "/data/wider/val", "format": "wider", "subset": "hard", "images": 3226},
        figures=COVERAGE_FIGURES if kind is ValidationKind.COVERAGE else STRENGTH_FIGURES,
        passed=passed,
        hostname="test-host",
    )


def alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def version_of(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def test_migration_creates_validations_table(store: AuditStore, raw_engine: sa.Engine) -> None:
    inspector = sa.inspect(raw_engine)
    assert "validations" in inspector.get_table_names()
    # tables.py and the migration describe the same columns.
    assert [c["name"] for c in inspector.get_columns("validations")] == list(efface.audit.tables.validations.c.keys())
    assert inspector.get_pk_constraint("validations")["constrained_columns"] == ["validation_id"]
    assert any(ix["column_names"] == ["created_at"] for ix in inspector.get_indexes("validations"))
    nullable = {c["name"] for c in inspector.get_columns("validations") if c["nullable"]}
    assert nullable == {"passed"}
    assert version_of(raw_engine) == [schema_head()]


def test_validations_table_has_no_binary_column(store: AuditStore, raw_engine: sa.Engine) -> None:
    for column in sa.inspect(raw_engine).get_columns("validations"):
        kind = column["type"]
        assert not isinstance(kind, sa.LargeBinary | sa.BINARY | sa.VARBINARY), column["name"]
        assert not {"BLOB", "BYTEA", "BINARY"} & set(str(kind).upper().split("(")), (column["name"], kind)


@pytest.mark.parametrize("kind", list(ValidationKind))
@pytest.mark.parametrize("passed", [None, True, False])
def test_validation_round_trip(store: AuditStore, kind: ValidationKind, passed: bool | None) -> None:
    # Two hours east of UTC: the store must convert, not drop, the offset.
    created_at = datetime(2024, 5, 1, 14, 0, 1, 123456, tzinfo=timezone(timedelta(hours=2)))
    record = make_validation(kind=kind, created_at=created_at, passed=passed)
    store.record_validation(record)

    stored = store.get_validation(record.validation_id)
    assert isinstance(stored, ValidationRecord)
    assert stored.kind is kind
    assert stored.created_at == created_at
    assert stored.created_at.tzinfo is UTC
    assert stored.passed is passed
    assert (stored.settings, stored.dataset, stored.figures) == (record.settings, record.dataset, record.figures)
    assert (stored.efface_version, stored.model_name, stored.model_sha256, stored.hostname) == (
        "0.2.0",
        "centerface",
        "ab" * 32,
        "test-host",
    )
    assert store.list_validations() == [stored]


def test_stored_validation_is_frozen(store: AuditStore) -> None:
    record = make_validation()
    store.record_validation(record)
    stored = store.get_validation(record.validation_id)
    assert asdict(stored)["validation_id"] == record.validation_id
    with pytest.raises(AttributeError):
        stored.passed = False  # type: ignore[misc]


def test_list_validations_newest_first_with_limit_and_kind(store: AuditStore) -> None:
    kinds = [ValidationKind.COVERAGE, ValidationKind.STRENGTH, ValidationKind.COVERAGE, ValidationKind.STRENGTH]
    ids = [uuid.uuid4().hex for _ in kinds]
    # Created out of order, so insertion order cannot pass for time order.
    for hours, validation_id, kind in zip((1, 3, 0, 2), ids, kinds, strict=True):
        store.record_validation(make_validation(validation_id, kind=kind, created_at=T0 + timedelta(hours=hours)))

    assert [v.validation_id for v in store.list_validations()] == [ids[1], ids[3], ids[0], ids[2]]
    assert [v.validation_id for v in store.list_validations(limit=2)] == [ids[1], ids[3]]
    coverage = store.list_validations(kind=ValidationKind.COVERAGE)
    assert [v.validation_id for v in coverage] == [ids[0], ids[2]]
    assert {v.kind for v in coverage} == {ValidationKind.COVERAGE}
    strength = store.list_validations(limit=1, kind=ValidationKind.STRENGTH)
    assert [v.validation_id for v in strength] == [ids[1]]
    # Validations and runs are separate logs.
    assert store.list_runs() == []


def test_list_validations_of_empty_log(store: AuditStore) -> None:
    assert store.list_validations() == []
    assert store.list_validations(kind=ValidationKind.STRENGTH) == []


def test_get_validation_by_prefix(store: AuditStore) -> None:
    for validation_id in ("abc1" + "0" * 28, "abc2" + "0" * 28, "def" + "0" * 29):
        store.record_validation(make_validation(validation_id))

    assert store.get_validation("def").validation_id == "def" + "0" * 29
    assert store.get_validation("abc2" + "0" * 28).validation_id == "abc2" + "0" * 28
    with pytest.raises(AuditError, match="ambiguous validation id prefix 'abc'"):
        store.get_validation("abc")
    with pytest.raises(AuditError, match="no validation matches 'fff'"):
        store.get_validation("fff")
    # LIKE wildcards in the prefix are literal characters, not patterns.
    for pattern in ("a%", "ab_"):
        with pytest.raises(AuditError, match="no validation matches"):
            store.get_validation(pattern)
    with pytest.raises(AuditError, match="no validation id given"):
        store.get_validation("")


def test_duplicate_validation_id_raises_audit_error(store: AuditStore) -> None:
    record = make_validation()
    store.record_validation(record)
    with pytest.raises(AuditError, match=f"cannot record validation {record.validation_id}") as raised:
        store.record_validation(replace(record, kind=ValidationKind.STRENGTH, passed=False))
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value.__cause__, sa.exc.IntegrityError)
    # The first record is untouched.
    assert store.get_validation(record.validation_id).kind is ValidationKind.COVERAGE


def test_database_at_0001_is_upgraded_on_open_and_keeps_its_runs(
    db_url: str, raw_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = uuid.uuid4().hex
    if raw_engine.url.database and raw_engine.dialect.name == "sqlite":
        # Only the store creates the folder; this database predates it.
        Path(raw_engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    with raw_engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
    with raw_engine.begin() as connection:
        connection.execute(
            runs.insert().values(
                run_id=run_id,
                started_at=T0,
                efface_version="0.1.0",
                command="anonymize",
                mode="output_dir",
                model_name="centerface",
                model_sha256="0" * 64,
                settings={"method": "blur"},
                hostname="old-host",
                status="completed",
                files_total=1,
                files_failed=0,
                faces_detected=2,
                faces_anonymized=2,
                duration_s=1.5,
            )
        )
        connection.execute(
            files.insert().values(
                run_id=run_id,
                path="/data/in/a.jpg",
                mode="output_dir",
                outcome="anonymized",
                started_at=T0,
                duration_s=1.5,
                faces_detected=2,
                faces_anonymized=2,
                faces=[],
                details={},
            )
        )
    assert version_of(raw_engine) == ["0001"]
    assert "validations" not in sa.inspect(raw_engine).get_table_names()

    caplog.set_level(logging.INFO, logger="alembic")
    with AuditStore(db_url) as store:
        run = store.get_run(run_id)
        assert (run.hostname, run.settings, run.started_at, run.duration_s) == ("old-host", {"method": "blur"}, T0, 1.5)
        assert [f.path for f in store.list_files(run_id)] == [Path("/data/in/a.jpg")]
        record = make_validation()
        store.record_validation(record)
    assert any("Running upgrade 0001 -> 0002" in message for message in caplog.messages)
    assert version_of(raw_engine) == [schema_head()]

    caplog.clear()
    with AuditStore(db_url) as store:
        assert store.get_validation(record.validation_id).figures == record.figures
        assert store.get_run(run_id).run_id == run_id
    assert not any("Running upgrade" in message for message in caplog.messages)


def test_downgrade_to_0001_drops_only_validations(store: AuditStore, raw_engine: sa.Engine) -> None:
    store.record_validation(make_validation())
    with raw_engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0001")
    tables = set(sa.inspect(raw_engine).get_table_names())
    assert "validations" not in tables
    assert {"runs", "files"} <= tables
    assert version_of(raw_engine) == ["0001"]
