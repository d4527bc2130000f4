"""Filters, time parsing and streamed exports (CSV, JSON Lines, Parquet) on real SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from efface.audit import AuditStore
from efface.audit.chain import FieldType
from efface.audit.export import ExportFormat, export_records
from efface.audit.query import (
    AuditTable,
    RecordFilter,
    _glob_to_like,
    column_types,
    matches_path,
    parse_age,
    parse_time,
)
from efface.errors import ConfigurationError
from efface.records import AnonymizationResult, Outcome, RunInfo, WriteMode

from .conftest import HISTORY_START, record_history

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("365d", timedelta(days=365)), ("12w", timedelta(weeks=12)), ("36h", timedelta(hours=36)), (" 1d ", timedelta(1))],
)
def test_parse_age(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "d", "365", "1.5d", "-3d", "3y", "3 days"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="365d"):
        parse_age(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-31", datetime(2025, 1, 31, tzinfo=UTC)),
        ("2025-01-31T12:30", datetime(2025, 1, 31, 12, 30, tzinfo=UTC)),
        ("2025-01-31T12:30Z", datetime(2025, 1, 31, 12, 30, tzinfo=UTC)),
        ("2025-01-31T14:30+02:00", datetime(2025, 1, 31, 12, 30, tzinfo=UTC)),
        ("30d", NOW - timedelta(days=30)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text, now=NOW)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["yesterday", "31/01/2025", ""])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected a date"):
        parse_time(text)


@pytest.mark.parametrize(
    ("pattern", "like", "path", "is_match"),
    [
        ("*.jpg", "%.jpg", "/a/b.jpg", True),
        ("*.jpg", "%.jpg", "/a/b.JPG", False),
        ("/photos/day?/*", "/photos/day_/%", "/photos/day1/x/y.png", True),
        ("*/IMG_[0-4]*.jpg", "%/IMG\\__%.jpg", "/p/IMG_0007.jpg", True),
        ("*/IMG_[0-4]*.jpg", "%/IMG\\__%.jpg", "/p/IMG_5007.jpg", False),
        ("100%_done.jpg", "100\\%\\_done.jpg", "100%_done.jpg", True),
        ("", "", "", True),
    ],
)
def test_glob(pattern: str, like: str, path: str, is_match: bool) -> None:
    assert _glob_to_like(pattern) == like
    assert matches_path(path, pattern) is is_match


def test_filter_refuses_naive_times_and_misplaced_conditions(store: AuditStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RecordFilter(since=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="apply to files"):
        list(store.iter_records(AuditTable.RUNS, RecordFilter(outcomes=(Outcome.ERROR,))))
    with pytest.raises(ValueError, match="--run does not apply"):
        list(store.iter_records(AuditTable.VALIDATIONS, RecordFilter(run_id="x")))


def test_find_files_with_filters(store: AuditStore) -> None:
    run_ids = record_history(store)
    errors = store.find_files(RecordFilter(outcomes=(Outcome.ERROR,)), limit=100)
    assert len(errors) == 10
    assert {f.outcome for f in errors} == {Outcome.ERROR}
    # Newest first.
    assert [f.id for f in errors] == sorted((f.id for f in errors), reverse=True)
    in_run = store.find_files(RecordFilter(run_id=run_ids[1], path_glob="*/IMG_000[0-4].jpg"), limit=100)
    assert sorted(f.path.name for f in in_run) == [f"IMG_000{i}.jpg" for i in range(5)]
    assert {f.run_id for f in in_run} == {run_ids[1]}
    # A case-different glob matches nothing, whatever SQLite's LIKE thinks.
    assert store.find_files(RecordFilter(path_glob="*/img_0001.jpg"), limit=100) == []
    day_two = RecordFilter(since=HISTORY_START + timedelta(days=1), until=HISTORY_START + timedelta(days=2))
    assert {f.run_id for f in store.find_files(day_two, limit=1000)} == {run_ids[1]}
    assert len(store.find_files(RecordFilter(), limit=7)) == 7
    runs = store.list_runs(record_filter=RecordFilter(since=HISTORY_START + timedelta(days=3)))
    assert [r.run_id for r in runs] == [run_ids[4], run_ids[3]]


@pytest.mark.parametrize("export_format", list(ExportFormat))
def test_export_round_trip(store: AuditStore, tmp_path: Path, export_format: ExportFormat) -> None:
    record_history(store, days=2)
    columns = column_types(AuditTable.FILES)
    record_filter = RecordFilter(outcomes=(Outcome.ANONYMIZED, Outcome.ERROR))
    expected = list(store.iter_records(AuditTable.FILES, record_filter))
    out = tmp_path / f"files.{export_format.value}"
    written = export_records(store.iter_records(AuditTable.FILES, record_filter), columns, export_format, out=out)
    assert written == len(expected) == 2 * (12 + 2)
    first = expected[0]
    if export_format is ExportFormat.CSV:
        with out.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == list(columns)
        assert rows[0]["started_at"] == first["started_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert json.loads(rows[0]["faces"]) == first["faces"]
        error = next(row for row in rows if row["outcome"] == "error")
        assert error["output_path"] == ""
        assert error["error_class"] in {"CorruptImageError", "UnsupportedFormatError"}
    elif export_format is ExportFormat.JSONL:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert rows[0]["faces"] == first["faces"]
        assert rows[0]["id"] == first["id"]
        assert rows[0]["started_at"].endswith("Z")
    else:
        table = pq.read_table(out)
        assert table.num_rows == len(expected)
        assert table.schema.field("started_at").type.tz == "UTC"
        assert table.column("started_at")[0].as_py() == first["started_at"]
        assert table.column("id").to_pylist() == [row["id"] for row in expected]
        assert json.loads(table.column("faces")[0].as_py()) == first["faces"]
        assert table.column("width").to_pylist()[0] == 1024


def test_export_every_table(store: AuditStore, tmp_path: Path) -> None:
    record_history(store, days=1)
    for table in AuditTable:
        out = tmp_path / f"{table.value}.parquet"
        written = export_records(
            store.iter_records(table, RecordFilter()), column_types(table), ExportFormat.PARQUET, out=out
        )
        assert pq.read_table(out).num_rows == written > 0
    assert column_types(AuditTable.CHAIN)["payload"] is FieldType.JSON
    assert column_types(AuditTable.VALIDATIONS)["passed"] is FieldType.BOOL


def test_empty_export_still_has_its_header_and_schema(store: AuditStore, tmp_path: Path) -> None:
    columns = column_types(AuditTable.FILES)
    out = tmp_path / "empty.parquet"
    assert export_records(iter(()), columns, ExportFormat.PARQUET, out=out) == 0
    assert pq.read_table(out).schema.names == list(columns)
    text = tmp_path / "empty.csv"
    export_records(iter(()), columns, ExportFormat.CSV, out=text)
    assert text.read_text().splitlines() == [",".join(columns)]


def test_parquet_needs_a_file_and_pyarrow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    columns = column_types(AuditTable.RUNS)
    with pytest.raises(ConfigurationError, match="--out"):
        export_records(iter(()), columns, ExportFormat.PARQUET, out=None)
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'efface\[parquet\]'"):
        export_records(iter(()), columns, ExportFormat.PARQUET, out=tmp_path / "x.parquet")


@pytest.mark.slow
def test_export_memory_does_not_grow_with_the_rows(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows are fetched 1,000 at a time (10,000 normally), so a few thousand rows show the streaming.
    monkeypatch.setattr("efface.audit.store._STREAM_ROWS", 1_000)
    with AuditStore(sqlite_url) as store:
        run = RunInfo(uuid.uuid4().hex, HISTORY_START, "0.1.0", "anonymize", WriteMode.DRY_RUN, "m", "0" * 64, {}, "h")
        store.start_run(run)

        def add(count: int) -> None:
            store.record_files(
                run.run_id,
                [
                    AnonymizationResult(Path(f"/in/{i}.jpg"), Outcome.NO_FACES, WriteMode.DRY_RUN, HISTORY_START, 0.0)
                    for i in range(count)
                ],
            )

        def peak() -> int:
            tracemalloc.start()
            try:
                records = store.iter_records(AuditTable.FILES, RecordFilter())
                export_records(records, column_types(AuditTable.FILES), ExportFormat.CSV, out=tmp_path / "x.csv")
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        add(2_500)
        small = peak()
        add(7_500)
        large = peak()
    # Five times the rows, about the same memory (one fetched batch at a time).
    assert large < 1.5 * small, (small, large)
