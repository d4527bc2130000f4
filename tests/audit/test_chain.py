"""The hash chain on real SQLite and PostgreSQL: an untouched log verifies, and every edit, deletion and insertion
made under the store with raw SQL is found and named.

Rows are inserted behind the store's back with SQLAlchemy Core on a plain engine (so that timestamps are
written in each database's own format); edits and deletions are plain SQL text.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from efface.audit import AuditStore
from efface.audit.chain import (
    HASH_ALG_PLAIN,
    UNVERSIONED,
    Event,
    EventKind,
    Fields,
    canonical_json,
    content_sha256,
    link,
    payload_sha256,
)
from efface.audit.tables import CONTENT_SCHEMA, chain, files, runs, validations
from efface.audit.verifier import BreakKind, ChainReport
from efface.errors import ConfigurationError
from efface.records import (
    AnonymizationResult,
    BBox,
    Face,
    Outcome,
    RunInfo,
    RunStatus,
    RunSummary,
    ValidationKind,
    ValidationRecord,
    WriteMode,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEY = b"k" * 32


def current_fields(kind: EventKind) -> Fields:
    return CONTENT_SCHEMA.fields(kind, CONTENT_SCHEMA.current_version)


def run_info(started_at: datetime = T0) -> RunInfo:
    return RunInfo(
        run_id=uuid.uuid4().hex,
        started_at=started_at,
        efface_version="0.1.0",
        command="anonymize",
        mode=WriteMode.IN_PLACE,
        model_name="centerface",
        model_sha256="ab" * 32,
        settings={"method": "fill", "box_scale": 1.6, "nested": {"b": [1, 2.5, None], "a": "é"}},
        hostname="host",
    )


def result(index: int, *, started_at: datetime = T0, outcome: Outcome = Outcome.ANONYMIZED) -> AnonymizationResult:
    faces = (Face(BBox(1.0, 2.0, 30.5, 40.25), 0.9), Face(BBox(0.0, 0.0, 1.0, 1.0), 0.5))
    is_error = outcome is Outcome.ERROR
    return AnonymizationResult(
        path=Path(f"/data/in/{index}.jpg"),
        outcome=outcome,
        mode=WriteMode.IN_PLACE,
        started_at=started_at + timedelta(seconds=index),
        duration_s=0.1 * index,
        output_path=None if is_error else Path(f"/data/in/{index}.jpg"),
        faces=() if is_error else faces,
        faces_anonymized=0 if is_error else 2,
        output_sha256=None if is_error else f"{index:064x}",
        image_format="JPEG",
        resolution_wh=(640, 480),
        error_class="CorruptImageError" if is_error else None,
        error_message="truncated" if is_error else None,
        details={"exif_removed": True},
    )


def validation(created_at: datetime = T0) -> ValidationRecord:
    return ValidationRecord(
        validation_id=uuid.uuid4().hex,
        kind=ValidationKind.COVERAGE,
        created_at=created_at,
        efface_version="0.1.0",
        model_name="centerface",
        model_sha256="ab" * 32,
        settings={"preset": "balanced"},
        dataset={"images": 198},
        figures={"recall": 0.891, "coverage": {"covered_share": 0.927}},
        passed=True,
        hostname="host",
    )


def fill(store: AuditStore, *, runs_count: int = 2, files_per_run: int = 3, started_at: datetime = T0) -> list[str]:
    """Runs (each with files, finished) and one validation; returns the run ids."""
    run_ids = []
    for r in range(runs_count):
        run = run_info(started_at + timedelta(hours=r))
        store.start_run(run)
        for i in range(files_per_run):
            store.record_file(run.run_id, result(i, started_at=run.started_at))
        store.finish_run(
            run.run_id,
            RunSummary(RunStatus.COMPLETED, run.started_at + timedelta(minutes=1), files_per_run, 0, 6, 6, 2),
        )
        run_ids.append(run.run_id)
    store.record_validation(validation(started_at))
    return run_ids


def file_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(files.c.id).order_by(files.c.id)).scalars())


def chain_seq_of_file(engine: sa.Engine, file_id: int) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(chain.c.seq).where(chain.c.file_id == file_id)).scalar_one()


def execute(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(sql), params)


def only_break(report: ChainReport) -> tuple[BreakKind, str, str, int | None]:
    assert not report.is_intact
    first = report.first_break
    assert first is not None
    return first.kind, first.table, first.row_id, first.seq


def test_a_new_database_starts_with_genesis_and_verifies(store: AuditStore, raw_engine: sa.Engine) -> None:
    report = store.verify()
    assert report.is_intact
    assert (report.rows, report.head_seq, report.records_checked) == (1, 1, 0)
    with raw_engine.connect() as connection:
        genesis = connection.execute(sa.select(chain)).mappings().one()
    assert genesis["kind"] == EventKind.GENESIS.value
    assert genesis["payload"]["chained_existing_records"] == {"runs": 0, "files": 0, "validations": 0}


def test_migration_and_tables_describe_the_same_chain(store: AuditStore, raw_engine: sa.Engine) -> None:
    inspector = sa.inspect(raw_engine)
    assert [c["name"] for c in inspector.get_columns("chain")] == list(chain.c.keys())
    assert inspector.get_pk_constraint("chain")["constrained_columns"] == ["seq"]
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("chain")}
    assert {("run_id",), ("file_id",), ("validation_id",), ("pruned_by",)} <= indexed
    nullable = {c["name"] for c in inspector.get_columns("chain") if c["nullable"]}
    assert nullable == {"run_id", "file_id", "validation_id", "payload", "pruned_by", "content_version"}
    # No foreign key: the chain row of a pruned record stays.
    assert inspector.get_foreign_keys("chain") == []


def test_every_write_is_chained_and_verifies(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    report = store.verify()
    assert report.is_intact, report.breaks
    # genesis + per run (start, 3 files, finish) + validation
    assert report.rows == 1 + 2 * 5 + 1
    assert report.records_checked == report.rows - 1
    assert report.head_seq == report.rows
    assert report.keyed_rows == 0
    with raw_engine.connect() as connection:
        rows = connection.execute(sa.select(chain).order_by(chain.c.seq)).mappings().all()
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["prev_hash"] == p["row_hash"] for p, r in itertools.pairwise(rows))
    assert report.head_hash == rows[-1]["row_hash"]
    assert [r["kind"] for r in rows[:6]] == ["genesis", "run_started", "file", "file", "file", "run_finished"]


def test_content_hash_is_that_of_the_row_read_back(store: AuditStore, raw_engine: sa.Engine) -> None:
    # Hashed from the values written, checked against the values read back: both must give the same bytes.
    run = run_info()
    store.start_run(run)
    store.record_file(run.run_id, result(1))
    with raw_engine.connect() as connection:
        stored = connection.execute(sa.select(files)).mappings().one()
        chained = connection.execute(sa.select(chain.c.content_sha256).where(chain.c.kind == "file")).scalar_one()
    assert stored["started_at"].tzinfo is UTC
    assert chained == content_sha256(current_fields(EventKind.FILE), stored)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, "{}"),
        ({"b": 0.1, "a": [1.0, "é"], "t": None}, '{"a":[1.0,"é"],"b":0.1,"t":null}'),
        ({"x": 1e-7, "y": 3, "z": True}, '{"x":1e-07,"y":3,"z":true}'),
    ],
)
def test_canonical_json(value: object, expected: str) -> None:
    assert canonical_json(value) == expected


def test_edited_file_row_is_named(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    target = file_ids(raw_engine)[4]
    execute(raw_engine, "UPDATE files SET faces_detected = 0 WHERE id = :id", id=target)
    report = store.verify()
    assert only_break(report) == (BreakKind.ALTERED, "files", str(target), chain_seq_of_file(raw_engine, target))
    assert report.breaks_total == 1
    assert f"files row {target}" in report.breaks[0].message


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("UPDATE runs SET hostname = 'elsewhere' WHERE run_id = :id", "start"),
        ("UPDATE runs SET files_failed = 0, status = 'completed', files_total = 99 WHERE run_id = :id", "finish"),
    ],
)
def test_edited_run_row_is_named(store: AuditStore, raw_engine: sa.Engine, sql: str, what: str) -> None:
    run_ids = fill(store)
    execute(raw_engine, sql, id=run_ids[1])
    report = store.verify()
    kind, table, row_id, _ = only_break(report)
    assert (kind, table, row_id) == (BreakKind.ALTERED, "runs", run_ids[1])
    assert report.breaks_total == 1, what


def test_edited_json_of_a_validation_is_named(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    with raw_engine.connect() as connection:
        validation_id = connection.execute(sa.select(validations.c.validation_id)).scalar_one()
    # The same JSON with one figure changed.
    with raw_engine.begin() as connection:
        connection.execute(validations.update().values(figures={"recall": 0.991, "coverage": {"covered_share": 0.927}}))
    assert only_break(store.verify())[:3] == (BreakKind.ALTERED, "validations", validation_id)


def test_deleted_file_row_is_named(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    target = file_ids(raw_engine)[2]
    execute(raw_engine, "DELETE FROM files WHERE id = :id", id=target)
    report = store.verify()
    assert only_break(report) == (BreakKind.DELETED, "files", str(target), chain_seq_of_file(raw_engine, target))
    assert "deleted" in report.breaks[0].message


def test_inserted_file_row_is_named(store: AuditStore, raw_engine: sa.Engine) -> None:
    run_ids = fill(store)
    row = {name: None for name in current_fields(EventKind.FILE) if name != "id"}
    row |= {
        "run_id": run_ids[0],
        "path": "/data/in/planted.jpg",
        "mode": "in_place",
        "outcome": "anonymized",
        "started_at": T0,
        "duration_s": 0.1,
        "faces_detected": 1,
        "faces_anonymized": 1,
        "faces": [],
        "details": {},
    }
    with raw_engine.begin() as connection:
        planted = connection.execute(files.insert().values(**row).returning(files.c.id)).scalar_one()
    report = store.verify()
    assert only_break(report) == (BreakKind.INSERTED, "files", str(planted), None)
    assert "not in the chain" in report.breaks[0].message


def test_inserted_run_row_is_named(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    planted = uuid.uuid4().hex
    with raw_engine.begin() as connection:
        connection.execute(
            runs.insert().values(
                **{
                    name: "x"
                    for name in current_fields(EventKind.RUN_STARTED)
                    if name not in ("run_id", "started_at", "settings")
                },
                run_id=planted,
                started_at=T0,
                settings={},
                status="completed",
                files_total=0,
                files_failed=0,
                faces_detected=0,
                faces_anonymized=0,
            )
        )
    assert only_break(store.verify())[:3] == (BreakKind.INSERTED, "runs", planted)


def test_deleted_chain_row_is_named(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    # The chain row of a file: its record is then unchained too.
    target = file_ids(raw_engine)[1]
    seq = chain_seq_of_file(raw_engine, target)
    execute(raw_engine, "DELETE FROM chain WHERE seq = :seq", seq=seq)
    report = store.verify()
    assert only_break(report) == (BreakKind.DELETED, "chain", str(seq), seq)
    assert f"chain rows {seq} were deleted" in report.breaks[0].message
    assert (BreakKind.INSERTED, "files", str(target)) in {(b.kind, b.table, b.row_id) for b in report.breaks}


def test_edited_chain_row_is_named(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    execute(raw_engine, "UPDATE chain SET recorded_at = :t WHERE seq = 5", t=T0)
    assert only_break(store.verify()) == (BreakKind.ALTERED, "chain", "5", 5)


def test_inserted_chain_row_is_named(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    # Shift the chain up by one from seq 4 and plant a row there that links to seq 3 correctly.
    with raw_engine.begin() as connection:
        rows = connection.execute(sa.select(chain).where(chain.c.seq >= 4).order_by(chain.c.seq.desc())).mappings()
        for row in list(rows):
            connection.execute(chain.update().where(chain.c.seq == row["seq"]).values(seq=row["seq"] + 1000))
        prev = connection.execute(sa.select(chain.c.row_hash).where(chain.c.seq == 3)).scalar_one()
        event_payload = {"note": "planted"}
        planted = link(
            Event(EventKind.GENESIS, payload_sha256(event_payload), payload=event_payload),
            seq=4,
            prev_hash=prev,
            recorded_at=T0,
            key=None,
        )
        connection.execute(chain.insert().values(**planted))
    report = store.verify()
    # The planted row itself is well formed; the row after it no longer links, and the old rows moved.
    assert not report.is_intact
    assert report.first_break is not None
    assert report.first_break.table == "chain"
    assert report.first_break.seq is not None and report.first_break.seq <= 1004


def rehash_everything(engine: sa.Engine, *, key: bytes | None) -> None:
    """What an insider who can write the database does after editing records: recompute every hash."""
    with engine.begin() as connection:
        rows = connection.execute(sa.select(chain).order_by(chain.c.seq)).mappings().all()
        prev = "0" * 64
        for row in rows:
            kind = EventKind(row["kind"])
            version = row["content_version"] or UNVERSIONED
            if kind is EventKind.FILE:
                record = connection.execute(sa.select(files).where(files.c.id == row["file_id"])).mappings().one()
                content = content_sha256(CONTENT_SCHEMA.fields(kind, version), record)
            elif kind in (EventKind.RUN_STARTED, EventKind.RUN_FINISHED):
                record = connection.execute(sa.select(runs).where(runs.c.run_id == row["run_id"])).mappings().one()
                content = content_sha256(CONTENT_SCHEMA.fields(kind, version), record)
            elif kind is EventKind.VALIDATION:
                record = (
                    connection.execute(
                        sa.select(validations).where(validations.c.validation_id == row["validation_id"])
                    )
                    .mappings()
                    .one()
                )
                content = content_sha256(CONTENT_SCHEMA.fields(kind, version), record)
            else:
                content = row["content_sha256"]
            event = Event(
                kind,
                content,
                row["run_id"],
                row["file_id"],
                row["validation_id"],
                row["payload"],
                row["content_version"],
            )
            new = link(event, seq=row["seq"], prev_hash=prev, recorded_at=row["recorded_at"], key=key)
            connection.execute(chain.update().where(chain.c.seq == row["seq"]).values(**new))
            prev = new["row_hash"]


def test_without_a_key_an_insider_can_recompute_the_chain(store: AuditStore, raw_engine: sa.Engine) -> None:
    # The limitation the audit key exists for.
    fill(store)
    execute(raw_engine, "UPDATE files SET faces_detected = 0")
    assert not store.verify().is_intact
    rehash_everything(raw_engine, key=None)
    assert store.verify().is_intact


def test_with_a_key_a_recomputed_chain_is_found(db_url: str, raw_engine: sa.Engine) -> None:
    with AuditStore(db_url, key=KEY) as keyed:
        fill(keyed)
        report = keyed.verify()
        assert report.is_intact
        # Genesis was written by the migration with the key too.
        assert report.keyed_rows == report.rows
        execute(raw_engine, "UPDATE files SET faces_detected = 0")
        # Without the key the insider can only write plain sha256 rows, or HMAC rows with a guessed key.
        rehash_everything(raw_engine, key=None)
        plain = keyed.verify()
        assert only_break(plain)[:2] == (BreakKind.UNVERIFIABLE, "chain")
        assert "no chain row is keyed" in plain.breaks[0].message
        rehash_everything(raw_engine, key=b"g" * 32)
        guessed = keyed.verify()
        assert guessed.first_break is not None
        assert guessed.first_break.kind is BreakKind.UNVERIFIABLE
        assert "is it the key" in guessed.first_break.message
        assert (guessed.breaks[1].kind, guessed.breaks[1].seq) == (BreakKind.ALTERED, 1)


def test_keyed_chain_without_the_key_is_unverifiable(db_url: str) -> None:
    with AuditStore(db_url, key=KEY) as keyed:
        fill(keyed)
    with AuditStore(db_url) as plain:
        report = plain.verify()
    assert only_break(report)[:2] == (BreakKind.UNVERIFIABLE, "chain")
    assert "EFFACE_AUDIT_KEY" in report.breaks[0].message


def test_plain_row_after_keyed_rows_is_found(db_url: str, raw_engine: sa.Engine) -> None:
    with AuditStore(db_url, key=KEY) as keyed:
        fill(keyed, runs_count=1)
    with AuditStore(db_url) as plain:
        plain.record_validation(validation())
    with AuditStore(db_url, key=KEY) as keyed:
        report = keyed.verify()
    kind, table, _, seq = only_break(report)
    assert (kind, table) == (BreakKind.INSERTED, "chain")
    with raw_engine.connect() as connection:
        assert connection.execute(sa.select(chain.c.hash_alg).where(chain.c.seq == seq)).scalar_one() == HASH_ALG_PLAIN


def test_key_from_the_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFACE_AUDIT_KEY", "s" * 32)
    with AuditStore(db_url) as store:
        assert store.is_keyed
        fill(store, runs_count=1)
        assert store.verify().keyed_rows == store.verify().rows
    monkeypatch.setenv("EFFACE_AUDIT_KEY", "short")
    with pytest.raises(ConfigurationError, match="at least 16"):
        AuditStore(db_url)


def test_truncated_chain_is_found_with_a_noted_head(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store)
    noted = store.verify().head_hash
    assert noted is not None
    with raw_engine.connect() as connection:
        last = connection.execute(sa.select(chain).order_by(chain.c.seq.desc()).limit(1)).mappings().one()
    execute(raw_engine, "DELETE FROM chain WHERE seq = :seq", seq=last["seq"])
    execute(raw_engine, "DELETE FROM validations")
    # The tail is gone without a trace, except against the noted head.
    assert store.verify().is_intact
    report = store.verify(expected_hashes=[noted])
    assert only_break(report)[:2] == (BreakKind.DELETED, "chain")
    assert noted in report.breaks[0].message


def test_prune_removes_old_records_and_the_chain_still_verifies(store: AuditStore, raw_engine: sa.Engine) -> None:
    old = fill(store, started_at=T0)
    recent = fill(store, started_at=T0 + timedelta(days=400))
    cutoff = T0 + timedelta(days=365)

    dry = store.prune(older_than=cutoff, is_dry_run=True)
    assert (dry.runs, dry.files, dry.validations, dry.seq) == (2, 6, 1, None)
    assert {r.run_id for r in store.list_runs()} == set(old + recent)

    counts = store.prune(older_than=cutoff)
    assert (counts.runs, counts.files, counts.validations) == (2, 6, 1)
    assert counts.chain_rows == 2 * 5 + 1
    assert {r.run_id for r in store.list_runs()} == set(recent)
    report = store.verify()
    assert report.is_intact, report.breaks
    assert report.prunes == 1
    assert report.head_seq == counts.seq
    with raw_engine.connect() as connection:
        event = connection.execute(sa.select(chain).where(chain.c.seq == counts.seq)).mappings().one()
    assert event["kind"] == EventKind.PRUNE.value
    assert event["payload"]["files"] == 6
    # A second prune finds nothing more to remove and still verifies.
    assert store.prune(older_than=cutoff).chain_rows == 0
    assert store.verify().is_intact


def test_prune_keeps_a_run_that_is_still_going(store: AuditStore) -> None:
    run = run_info(T0)
    store.start_run(run)
    store.record_file(run.run_id, result(0, started_at=T0 + timedelta(days=500)))
    assert store.prune(older_than=T0 + timedelta(days=365)).runs == 0
    assert store.get_run(run.run_id).status is RunStatus.RUNNING
    assert store.verify().is_intact


def test_prune_keeps_a_run_that_has_not_finished_even_when_all_of_it_is_old(store: AuditStore) -> None:
    run = run_info(T0)
    store.start_run(run)
    store.record_file(run.run_id, result(0, started_at=T0))
    cutoff = T0 + timedelta(days=365)
    assert store.prune(older_than=cutoff, is_dry_run=True).runs == 0
    assert (store.prune(older_than=cutoff).runs, len(store.list_files(run.run_id))) == (0, 1)
    # It goes on recording, then finishes; now it is old.
    store.record_file(run.run_id, result(1, started_at=T0))
    store.finish_run(run.run_id, RunSummary(RunStatus.COMPLETED, T0 + timedelta(hours=1), 2, 0, 0, 0, 3600.0))
    assert (store.prune(older_than=cutoff).runs, store.list_files(run.run_id)) == (1, [])
    assert store.verify().is_intact


def test_row_deleted_after_a_prune_and_marked_as_pruned_is_found(store: AuditStore, raw_engine: sa.Engine) -> None:
    fill(store, started_at=T0)
    fill(store, started_at=T0 + timedelta(days=400))
    counts = store.prune(older_than=T0 + timedelta(days=365))
    target = file_ids(raw_engine)[0]
    seq = chain_seq_of_file(raw_engine, target)
    execute(raw_engine, "DELETE FROM files WHERE id = :id", id=target)
    execute(raw_engine, "UPDATE chain SET pruned_by = :p WHERE seq = :seq", p=counts.seq, seq=seq)
    report = store.verify()
    assert only_break(report)[:2] == (BreakKind.DELETED, "chain")
    assert report.first_break is not None
    assert report.first_break.seq == counts.seq


def test_finishing_twice_keeps_the_chain_valid(store: AuditStore) -> None:
    run = run_info()
    store.start_run(run)
    store.finish_run(run.run_id, RunSummary(RunStatus.INTERRUPTED, T0, 0, 0, 0, 0, 1))
    store.finish_run(run.run_id, RunSummary(RunStatus.COMPLETED, T0, 1, 0, 2, 2, 3))
    assert store.verify().is_intact


def test_an_unfinished_run_must_hold_its_initial_state(store: AuditStore, raw_engine: sa.Engine) -> None:
    run = run_info()
    store.start_run(run)
    assert store.verify().is_intact
    assert content_sha256(current_fields(EventKind.RUN_FINISHED), CONTENT_SCHEMA.initial_run_finish(run.run_id))
    execute(raw_engine, "UPDATE runs SET status = 'completed'")
    assert only_break(store.verify())[:3] == (BreakKind.ALTERED, "runs", run.run_id)


def test_bulk_record_files_is_one_chained_transaction(store: AuditStore) -> None:
    run = run_info()
    store.start_run(run)
    store.record_files(run.run_id, [result(i) for i in range(50)])
    assert [f.path.name for f in store.list_files(run.run_id)] == [f"{i}.jpg" for i in range(50)]
    assert store.verify().rows == 1 + 1 + 50
