"""AuditStore against real databases: SQLite in a temp folder and the PostgreSQL server of CI."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from efface.audit import AuditStore, StoredFile
from efface.audit.query import RecordFilter
from efface.audit.report import build_report, render_html
from efface.audit.store import schema_head
from efface.audit.summary import ReportScope
from efface.errors import AuditError
from efface.records import (
    AnonymizationResult,
    BBox,
    Face,
    Outcome,
    RunInfo,
    RunStatus,
    RunSummary,
    WriteMode,
)

SRC_DIR = Path(__file__).resolve().parents[2] / "src"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_run(run_id: str | None = None, *, started_at: datetime = T0) -> RunInfo:
    return RunInfo(
        run_id=run_id or uuid.uuid4().hex,
        started_at=started_at,
        efface_version="0.1.0",
        command="anonymize",
        mode=WriteMode.OUTPUT_DIR,
        model_name="centerface",
        model_sha256="ab" * 32,
        settings={"score_threshold": 0.2, "method": "blur", "box_scale": 1.3},
        hostname="test-host",
    )


def make_results() -> list[AnonymizationResult]:
    # A zone two hours east of UTC: the store must convert, not drop, the offset.
    cest = timezone(timedelta(hours=2))
    faces = (
        Face(BBox(10.123456, 20.0, 50.987654, 70.5), 0.912345),
        Face(BBox(0.0, 0.0, 1.0, 1.0), 0.5),
    )
    common = {"mode": WriteMode.OUTPUT_DIR, "started_at": datetime(2024, 5, 1, 14, 0, 1, tzinfo=cest)}
    return [
        AnonymizationResult(
            path=Path("/data/in/a.jpg"),
            outcome=Outcome.ANONYMIZED,
            duration_s=0.25,
            output_path=Path("/data/out/a.jpg"),
            faces=faces,
            faces_anonymized=2,
            output_sha256="cd" * 32,
            image_format="JPEG",
            resolution_wh=(640, 480),
            details={"exif_removed": True},
            **common,
        ),
        AnonymizationResult(
            path=Path("/data/in/b.png"),
            outcome=Outcome.NO_FACES,
            duration_s=0.1,
            image_format="PNG",
            resolution_wh=(10, 20),
            **common,
        ),
        AnonymizationResult(
            path=Path("/data/in/c.jpg"),
            outcome=Outcome.ERROR,
            duration_s=0.0,
            error_class="CorruptImageError",
            error_message="image file is truncated (3 bytes not processed)",
            **common,
        ),
        AnonymizationResult(
            path=Path("/data/in/d.jpg"), outcome=Outcome.DRY_RUN, duration_s=0.5, faces=faces[:1], **common
        ),
        AnonymizationResult(
            path=Path("/data/in/.e.jpg.efface-tmp"), outcome=Outcome.LEFTOVER_REMOVED, duration_s=0.0, **common
        ),
        AnonymizationResult(
            path=Path("/data/in/f.jpg"),
            outcome=Outcome.SKIPPED,
            duration_s=0.01,
            details={"reason": "already anonymized by an earlier run"},
            **common,
        ),
    ]


def test_migrations_create_tables(store: AuditStore, raw_engine: sa.Engine) -> None:
    inspector = sa.inspect(raw_engine)
    assert {"runs", "files", "alembic_version"} <= set(inspector.get_table_names())
    if raw_engine.dialect.name == "postgresql":
        # Alembic's version table follows search_path into the test's own schema.
        assert inspector.default_schema_name.startswith("efface_test_")
    assert {c["name"] for c in inspector.get_columns("files")} >= {"faces", "error_class", "details", "width"}
    assert any(ix["column_names"] == ["run_id"] for ix in inspector.get_indexes("files"))
    assert [fk["referred_table"] for fk in inspector.get_foreign_keys("files")] == ["runs"]
    with raw_engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [schema_head()]


def test_no_column_can_hold_binary_content(store: AuditStore, raw_engine: sa.Engine) -> None:
    inspector = sa.inspect(raw_engine)
    for table in ("runs", "files"):
        for column in inspector.get_columns(table):
            kind = column["type"]
            assert not isinstance(kind, sa.LargeBinary | sa.BINARY | sa.VARBINARY), (table, column["name"])
            assert not {"BLOB", "BYTEA", "BINARY"} & set(str(kind).upper().split("(")), (table, kind)


def test_run_round_trip(store: AuditStore) -> None:
    run = make_run()
    results = make_results()
    store.start_run(run)

    started = store.get_run(run.run_id)
    assert started.status is RunStatus.RUNNING
    assert started.finished_at is None
    assert started.duration_s is None

    for result in results:
        store.record_file(run.run_id, result)
    finished_at = T0 + timedelta(seconds=3)
    summary = RunSummary(
        status=RunStatus.FAILED,
        finished_at=finished_at,
        files_total=5,
        files_failed=1,
        faces_detected=3,
        faces_anonymized=2,
        duration_s=3.0,
    )
    store.finish_run(run.run_id, summary)

    stored = store.get_run(run.run_id)
    assert stored.started_at == run.started_at
    assert stored.started_at.tzinfo is UTC
    assert stored.finished_at == finished_at
    assert stored.finished_at is not None
    assert stored.finished_at.tzinfo is UTC
    assert (stored.mode, stored.status) == (WriteMode.OUTPUT_DIR, RunStatus.FAILED)
    assert stored.settings == run.settings
    assert (stored.files_total, stored.files_failed, stored.faces_detected, stored.faces_anonymized) == (
        5,
        1,
        3,
        2,
    )
    assert stored.duration_s == pytest.approx(3.0)

    stored_files = store.list_files(run.run_id)
    assert [f.path for f in stored_files] == [r.path for r in results]
    # Every outcome of a run's files; a pending row (written before a replace) is the intent, not an outcome.
    assert [f.outcome for f in stored_files] == [o for o in Outcome if o not in (Outcome.NOT_MEDIA, Outcome.PENDING)]
    ids = [f.id for f in stored_files]
    assert ids == sorted(ids)
    for stored_file, result in zip(stored_files, results, strict=True):
        assert isinstance(stored_file, StoredFile)
        assert stored_file.run_id == run.run_id
        assert stored_file.started_at == result.started_at
        assert stored_file.started_at.tzinfo is UTC
        assert stored_file.output_path == result.output_path
        assert stored_file.faces_detected == result.faces_detected
        assert stored_file.faces_anonymized == result.faces_anonymized
        assert (stored_file.error_class, stored_file.error_message) == (
            result.error_class,
            result.error_message,
        )

    anonymized, no_faces, error, dry_run, _leftover, skipped = stored_files
    assert skipped.details == {"reason": "already anonymized by an earlier run"}
    assert anonymized.faces == (
        {"xyxy": [10.12, 20.0, 50.99, 70.5], "score": 0.9123},
        {"xyxy": [0.0, 0.0, 1.0, 1.0], "score": 0.5},
    )
    assert (anonymized.width, anonymized.height, anonymized.image_format) == (640, 480, "JPEG")
    assert anonymized.output_sha256 == "cd" * 32
    assert anonymized.details == {"exif_removed": True}
    assert no_faces.faces == ()
    assert (error.error_class, error.output_path, error.width) == ("CorruptImageError", None, None)
    assert error.error_message == "image file is truncated (3 bytes not processed)"
    assert dry_run.faces_detected == 1
    assert dry_run.faces_anonymized == 0


def test_list_runs_newest_first_with_limit(store: AuditStore) -> None:
    run_ids = [uuid.uuid4().hex for _ in range(3)]
    # Started out of order, so insertion order cannot pass for time order.
    for hours, run_id in zip((1, 0, 2), run_ids, strict=True):
        store.start_run(make_run(run_id, started_at=T0 + timedelta(hours=hours)))

    assert [r.run_id for r in store.list_runs()] == [run_ids[2], run_ids[0], run_ids[1]]
    assert [r.run_id for r in store.list_runs(limit=2)] == [run_ids[2], run_ids[0]]
    assert store.list_files(run_ids[0]) == []


def test_get_run_by_prefix(store: AuditStore) -> None:
    for run_id in ("abc1" + "0" * 28, "abc2" + "0" * 28, "def" + "0" * 29):
        store.start_run(make_run(run_id))

    assert store.get_run("def").run_id == "def" + "0" * 29
    assert store.get_run("abc2").run_id == "abc2" + "0" * 28
    with pytest.raises(AuditError, match="ambiguous"):
        store.get_run("abc")
    with pytest.raises(AuditError, match="no run"):
        store.get_run("fff")
    # LIKE wildcards in the prefix are literal characters, not patterns.
    with pytest.raises(AuditError, match="no run"):
        store.get_run("a%")
    with pytest.raises(AuditError, match="no run"):
        store.get_run("")


def test_writes_that_break_constraints_raise_audit_error(store: AuditStore) -> None:
    run = make_run()
    store.start_run(run)
    with pytest.raises(AuditError, match=run.run_id):
        store.start_run(run)
    with pytest.raises(AuditError, match="record"):
        store.record_file("0" * 32, make_results()[0])
    summary = RunSummary(RunStatus.COMPLETED, T0, 0, 0, 0, 0, 0.0)
    with pytest.raises(AuditError, match="no run"):
        store.finish_run("0" * 32, summary)


def test_reopen_keeps_data_and_does_not_migrate_again(
    db_url: str, raw_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    run = make_run()
    caplog.set_level(logging.INFO, logger="alembic")
    caplog.set_level(logging.INFO, logger="efface.audit.store")
    with AuditStore(db_url) as first:
        first.start_run(run)
        first.record_file(run.run_id, make_results()[0])
    # A new database is created at the head in one step, not migrated revision by revision.
    assert any("created the audit schema" in message for message in caplog.messages)
    assert not any("Running upgrade" in message for message in caplog.messages)

    caplog.clear()
    with AuditStore(db_url) as second:
        assert second.get_run(run.run_id).run_id == run.run_id
        assert len(second.list_files(run.run_id)) == 1
    assert not any("Running upgrade" in message or "created" in message for message in caplog.messages)
    with raw_engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [schema_head()]


def test_database_from_a_newer_efface_raises_audit_error(db_url: str, raw_engine: sa.Engine) -> None:
    AuditStore(db_url).close()
    with raw_engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    with pytest.raises(AuditError, match="ffff") as raised:
        AuditStore(db_url)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "is_foreign"),
    [
        pytest.param("postgresql+psycopg://root@127.0.0.1:1/test", True, id="unreachable-port"),
        pytest.param("this is not a url", True, id="garbage"),
        # Refused before SQLAlchemy looks for it: the audit log runs on SQLite and PostgreSQL only.
        pytest.param("nosuchdialect://host/db", False, id="unknown-dialect"),
        pytest.param("postgresql+psycopg://root:s3cret@127.0.0.1:1/test", True, id="password-hidden"),
    ],
)
def test_unusable_url_raises_one_line_audit_error(url: str, is_foreign: bool) -> None:
    with pytest.raises(AuditError) as raised:
        AuditStore(url)
    message = str(raised.value)
    assert message
    assert "\n" not in message
    assert "s3cret" not in message
    # A foreign error is translated with its cause kept.
    assert isinstance(raised.value.__cause__, Exception) is is_foreign


def test_sqlite_folder_that_cannot_be_created_raises_audit_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(AuditError, match="cannot open") as raised:
        AuditStore(f"sqlite:///{blocker / 'audit.db'}")
    assert "\n" not in str(raised.value)


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditStore(f"sqlite:///{path}").close()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


WORKER = textwrap.dedent(
    """
    import sys, uuid
    from datetime import UTC, datetime
    from pathlib import Path
    from efface.audit import AuditStore
    from efface.records import AnonymizationResult, Outcome, RunInfo, WriteMode

    url, run_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with AuditStore(url) as store:
        store.start_run(RunInfo(run_id, datetime.now(UTC), "0.1.0", "anonymize", WriteMode.DRY_RUN,
                                "centerface", "0" * 64, {}, "worker"))
        for i in range(count):
            store.record_file(run_id, AnonymizationResult(Path(f"/in/{i}.jpg"), Outcome.NO_FACES,
                                                          WriteMode.DRY_RUN, datetime.now(UTC), 0.0))
    """
)


def test_several_processes_open_and_write_one_fresh_database(db_url: str) -> None:
    run_ids = [uuid.uuid4().hex for _ in range(4)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC_DIR), os.environ.get("PYTHONPATH")]))}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, db_url, run_id, "25"], env=env, stderr=subprocess.PIPE)
        for run_id in run_ids
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr.decode()

    with AuditStore(db_url) as store:
        assert {r.run_id for r in store.list_runs()} == set(run_ids)
        for run_id in run_ids:
            assert [f.path.name for f in store.list_files(run_id)] == [f"{i}.jpg" for i in range(25)]


def test_stored_records_are_frozen(store: AuditStore) -> None:
    run = make_run()
    store.start_run(run)
    stored = store.get_run(run.run_id)
    assert asdict(stored)["run_id"] == run.run_id
    with pytest.raises(AttributeError):
        stored.run_id = "other"  # type: ignore[misc]


def test_a_request_is_stored_with_its_request_id_and_no_path(store: AuditStore, tmp_path: Path) -> None:
    run = make_run()
    store.start_run(run)
    common = {"mode": WriteMode.RESPONSE, "started_at": T0, "duration_s": 0.05}
    request_ids = [uuid.uuid4().hex, uuid.uuid4().hex]
    store.record_files(
        run.run_id,
        [
            AnonymizationResult(None, Outcome.NO_FACES, request_id=request_ids[0], **common),
            AnonymizationResult(
                None,
                Outcome.ERROR,
                request_id=request_ids[1],
                error_class="CorruptImageError",
                error_message="truncated",
                **common,
            ),
            AnonymizationResult(Path("/data/in/a.jpg"), Outcome.NO_FACES, **common),
        ],
    )
    stored = store.list_files(run.run_id)
    assert [(f.path, f.request_id) for f in stored] == [
        (None, request_ids[0]),
        (None, request_ids[1]),
        (Path("/data/in/a.jpg"), None),
    ]
    # A path pattern never matches a request, not even "*".
    assert [f.path for f in store.find_files(RecordFilter(path_glob="*"), limit=10)] == [Path("/data/in/a.jpg")]
    assert store.verify().is_intact
    (cause,) = store.summarize(ReportScope()).errors
    assert cause.example_path == f"request {request_ids[1]}"
    page = render_html(build_report(store, ReportScope(), efface_version="9.9.9"))
    assert f"request {request_ids[1]}" in page


def test_output_hashes_are_those_of_runs_with_the_same_settings_mode_and_destination(store: AuditStore) -> None:
    photo, copy = Path("/data/in/photo.jpg"), Path("/data/out/in/photo.jpg")

    def record(settings_sha256: str | None, output_path: Path, output_sha256: str, outcome: Outcome) -> str:
        mode = WriteMode.IN_PLACE if output_path == photo else WriteMode.OUTPUT_DIR
        run = replace(make_run(), mode=mode, settings_sha256=settings_sha256)
        store.start_run(run)
        result = AnonymizationResult(
            photo, outcome, mode, T0, 0.1, output_path=output_path, output_sha256=output_sha256
        )
        store.record_file(run.run_id, result)
        return run.run_id

    first = record("a" * 64, photo, "1" * 64, Outcome.NO_FACES)
    record("a" * 64, copy, "2" * 64, Outcome.NO_FACES)  # --output: never an in-place match
    record("b" * 64, photo, "3" * 64, Outcome.ANONYMIZED)  # other settings
    record("a" * 64, photo, "4" * 64, Outcome.ANONYMIZED)
    record(None, photo, "5" * 64, Outcome.ANONYMIZED)  # a run from before settings were hashed
    record("a" * 64, photo, "6" * 64, Outcome.SKIPPED)  # skipped rows write nothing
    assert store.output_hashes(photo, output_path=photo, settings_sha256="a" * 64) == {"1" * 64, "4" * 64}
    assert store.output_hashes(photo, output_path=copy, settings_sha256="a" * 64) == {"2" * 64}
    assert store.output_hashes(photo, output_path=photo, settings_sha256="b" * 64) == {"3" * 64}
    assert store.output_hashes(photo, output_path=photo, settings_sha256="c" * 64) == frozenset()
    assert store.get_run(first).settings_sha256 == "a" * 64
    assert store.verify().is_intact
