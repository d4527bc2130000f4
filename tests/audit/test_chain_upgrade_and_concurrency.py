"""Migration 0004 on a database that holds rows from before the chain, and many real writer processes at once,
on real SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import efface.audit
from efface.audit import AuditStore
from efface.audit.chain import EventKind
from efface.audit.store import schema_head
from efface.audit.tables import api_keys, chain, files, runs, validations
from efface.audit.verifier import BreakKind

MIGRATIONS_DIR = Path(efface.audit.__file__).parent / "migrations"
SRC_DIR = Path(__file__).resolve().parents[2] / "src"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEY = b"m" * 32


def upgrade_to(engine: sa.Engine, revision: str) -> None:
    if engine.dialect.name == "sqlite" and engine.url.database:
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("path_separator", "os")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade_to(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("path_separator", "os")
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def old_run(run_id: str, *, status: str, started_at: datetime) -> dict[str, object]:
    finished = status != "running"
    return {
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": started_at + timedelta(minutes=5) if finished else None,
        "efface_version": "0.1.0",
        "command": "anonymize",
        "mode": "in_place",
        "model_name": "centerface",
        "model_sha256": "ab" * 32,
        "settings": {"method": "fill", "box_scale": 1.6, "fill_rgb": [0, 0, 0]},
        "hostname": "old-host",
        "status": status,
        "files_total": 2 if finished else 0,
        "files_failed": 1 if finished else 0,
        "faces_detected": 3 if finished else 0,
        "faces_anonymized": 3 if finished else 0,
        "duration_s": 300.25 if finished else None,
    }


def old_file(run_id: str, index: int, *, outcome: str) -> dict[str, object]:
    is_error = outcome == "error"
    return {
        "run_id": run_id,
        "path": f"/data/in/{index}.jpg",
        "output_path": None if is_error else f"/data/in/{index}.jpg",
        "mode": "in_place",
        "outcome": outcome,
        "started_at": T0 + timedelta(seconds=index, microseconds=123456),
        "duration_s": 0.125 * index,
        "faces_detected": 0 if is_error else 3,
        "faces_anonymized": 0 if is_error else 3,
        "faces": [] if is_error else [{"xyxy": [1.5, 2.0, 30.25, 40.0], "score": 0.9123}],
        "output_sha256": None if is_error else "cd" * 32,
        "image_format": "JPEG",
        "width": 640,
        "height": 480,
        "error_class": "CorruptImageError" if is_error else None,
        "error_message": "truncated" if is_error else None,
        "details": {"exif_removed": True, "video": None},
    }


def fill_0003(engine: sa.Engine) -> tuple[list[str], str]:
    run_ids = [uuid.uuid4().hex, uuid.uuid4().hex]
    validation_id = uuid.uuid4().hex
    with engine.begin() as connection:
        connection.execute(runs.insert(), [old_run(run_ids[0], status="failed", started_at=T0)])
        connection.execute(runs.insert(), [old_run(run_ids[1], status="running", started_at=T0 + timedelta(hours=1))])
        connection.execute(
            files.insert(),
            [old_file(run_ids[0], 0, outcome="anonymized"), old_file(run_ids[0], 1, outcome="error")]
            + [old_file(run_ids[1], i, outcome="no_faces") for i in range(2, 5)],
        )
        connection.execute(
            validations.insert().values(
                validation_id=validation_id,
                kind="coverage",
                created_at=T0,
                efface_version="0.1.0",
                model_name="centerface",
                model_sha256="ab" * 32,
                settings={"preset": "balanced"},
                dataset={"images": 198},
                figures={"recall": 0.891, "fp_per_image": 3.11},
                passed=None,
                hostname="old-host",
            )
        )
        connection.execute(api_keys.insert().values(key_id="0" * 16, name="ci", key_sha256="ee" * 32, created_at=T0))
    return run_ids, validation_id


def rows_of(engine: sa.Engine, table: sa.Table, *, columns: Iterable[str] | None = None) -> list[dict[str, object]]:
    """A table's rows, in the columns given or those the database has now (an old schema may lack some)."""
    names = set(columns) if columns is not None else {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
    query = sa.select(*(c for c in table.c if c.name in names)).order_by(*table.primary_key.columns)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "keyed"])
def test_upgrade_from_0003_chains_existing_rows_without_loss(
    db_url: str, raw_engine: sa.Engine, key: bytes | None
) -> None:
    upgrade_to(raw_engine, "0003")
    run_ids, validation_id = fill_0003(raw_engine)
    before = {name: rows_of(raw_engine, table) for name, table in (("runs", runs), ("files", files))}
    assert "chain" not in sa.inspect(raw_engine).get_table_names()

    with AuditStore(db_url, key=key) as store:
        report = store.verify()
        assert report.is_intact, report.breaks
        # genesis, 2 run starts, 5 files, 1 finished run (the running one has no finish row), 1 validation
        assert report.rows == 1 + 2 + 5 + 1 + 1
        assert report.records_checked == report.rows - 1
        assert report.keyed_rows == (report.rows if key else 0)
        assert store.get_run(run_ids[1]).status.value == "running"
        assert store.get_validation(validation_id).figures == {"recall": 0.891, "fp_per_image": 3.11}
        # The store goes on appending after the migrated rows; the running run can still finish.
        store.record_validation(replace(store.get_validation(validation_id), validation_id=uuid.uuid4().hex))
        assert store.verify().is_intact

    after = {
        name: rows_of(raw_engine, table, columns=before[name][0].keys())
        for name, table in (("runs", runs), ("files", files))
    }
    with raw_engine.connect() as connection:
        genesis = connection.execute(sa.select(chain).where(chain.c.seq == 1)).mappings().one()
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        assert connection.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one() == 1
    assert after["runs"] == before["runs"]
    assert after["files"] == before["files"]
    assert version == schema_head()
    assert genesis["kind"] == EventKind.GENESIS.value
    assert genesis["payload"]["chained_existing_records"] == {"runs": 2, "files": 5, "validations": 1}

    # Tampering with a migrated row is found like any other.
    with raw_engine.begin() as connection:
        connection.execute(sa.text("UPDATE files SET error_message = 'fine' WHERE error_class IS NOT NULL"))
    with AuditStore(db_url, key=key) as store:
        first = store.verify().first_break
    assert first is not None
    assert (first.kind, first.table) == (BreakKind.ALTERED, "files")


def test_downgrade_to_0003_drops_the_chain_and_upgrade_chains_again(db_url: str, raw_engine: sa.Engine) -> None:
    AuditStore(db_url).close()
    downgrade_to(raw_engine, "0003")
    run_ids = [uuid.uuid4().hex, uuid.uuid4().hex]
    with raw_engine.begin() as connection:
        for run_id, status in zip(run_ids, ("failed", "completed"), strict=True):
            connection.execute(runs.insert(), [old_run(run_id, status=status, started_at=T0)])
    assert "chain" not in sa.inspect(raw_engine).get_table_names()
    with AuditStore(db_url) as store:
        report = store.verify()
        assert report.is_intact
        assert report.rows == 1 + 2 + 2
        assert {r.run_id for r in store.list_runs()} == set(run_ids)


WRITER = textwrap.dedent(
    """
    import sys, time, uuid
    from datetime import UTC, datetime
    from pathlib import Path
    from efface.audit import AuditStore
    from efface.records import AnonymizationResult, Outcome, RunInfo, RunStatus, RunSummary, WriteMode

    url, count, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    with AuditStore(url) as store:
        while not go.exists():
            time.sleep(0.01)
        run_id = uuid.uuid4().hex
        store.start_run(RunInfo(run_id, datetime.now(UTC), "0.1.0", "anonymize", WriteMode.DRY_RUN,
                                "centerface", "0" * 64, {}, "writer"))
        for i in range(count):
            store.record_file(run_id, AnonymizationResult(Path(f"/in/{i}.jpg"), Outcome.NO_FACES,
                                                          WriteMode.DRY_RUN, datetime.now(UTC), 0.0))
        store.finish_run(run_id, RunSummary(RunStatus.COMPLETED, datetime.now(UTC), count, 0, 0, 0, 1.0))
    """
)


@pytest.mark.slow
def test_eight_writer_processes_lose_nothing_and_keep_the_chain_valid(db_url: str, tmp_path: Path) -> None:
    # 250 rows each keep all eight appending at once for the whole run (each append takes the chain's lock in
    # turn); 500 only made the same overlap last twice as long.
    writers, rows_each = 8, 250
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC_DIR), os.environ.get("PYTHONPATH")]))}
    # Every writer opens the fresh database (and races to migrate it), then all append at once.
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_url, str(rows_each), str(go)], env=env, stderr=subprocess.PIPE
        )
        for _ in range(writers)
    ]
    time.sleep(1.0)
    go.touch()
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()

    with AuditStore(db_url) as store:
        report = store.verify()
        assert report.is_intact, report.breaks
        assert report.rows == 1 + writers * (rows_each + 2)
        finished = store.list_runs(limit=100)
        assert len(finished) == writers
        for run in finished:
            assert [f.path.name for f in store.list_files(run.run_id)] == [f"{i}.jpg" for i in range(rows_each)]
