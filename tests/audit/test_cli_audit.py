"""The ``efface audit`` commands end to end with ``CliRunner`` on real databases: list with filters, export,
verify (exit codes and the named row), prune and report."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from PIL import Image
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.cli import app

from .conftest import record_history

runner = CliRunner()


@pytest.fixture
def history(db_url: str) -> list[str]:
    with AuditStore(db_url) as store:
        return record_history(store)


def invoke(*args: str, input_text: str | None = None) -> object:
    return runner.invoke(app, ["audit", *args], input=input_text, env={"COLUMNS": "200"})


def test_list_runs_and_files_with_filters(db_url: str, history: list[str]) -> None:
    runs = invoke("list", "--db", db_url, "--json")
    assert runs.exit_code == 0, runs.output
    assert [r["run_id"] for r in json.loads(runs.stdout)] == history[::-1]

    since = invoke("list", "--db", db_url, "--since", "2026-11-05", "--json")
    assert [r["run_id"] for r in json.loads(since.stdout)] == [history[4], history[3]]

    errors = invoke("list", "--db", db_url, "--outcome", "error", "--limit", "100", "--json")
    rows = json.loads(errors.stdout)
    assert len(rows) == 10 and {r["outcome"] for r in rows} == {"error"}

    one_run = invoke("list", "--db", db_url, "--run", history[2][:8], "--path", "*/IMG_001?.jpg", "--json")
    rows = json.loads(one_run.stdout)
    assert {r["run_id"] for r in rows} == {history[2]}
    assert sorted(Path(r["path"]).name for r in rows) == [f"IMG_{i:04d}.jpg" for i in range(10, 18)]

    table = invoke("list", "--db", db_url, "--files", "--outcome", "error", "--outcome", "no_faces")
    assert table.exit_code == 0
    assert "CorruptImageError" in table.stdout and "efface files" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "expected a date"),
        (["--outcome", "lost"], "lost"),
        (["--run", "ffffffff"], "no run"),
    ],
)
def test_list_refuses_bad_filters(db_url: str, history: list[str], args: list[str], message: str) -> None:
    result = invoke("list", "--db", db_url, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_export_formats(db_url: str, history: list[str], tmp_path: Path) -> None:
    csv_out = invoke("export", "--db", db_url, "--format", "csv", "--outcome", "error")
    assert csv_out.exit_code == 0, csv_out.output
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert len(rows) == 10 and {r["outcome"] for r in rows} == {"error"}
    assert "exported 10 files rows" in csv_out.stderr

    jsonl = invoke("export", "--db", db_url, "--format", "jsonl", "--table", "runs", "--since", "2026-11-05")
    assert [json.loads(line)["run_id"] for line in jsonl.stdout.splitlines()] == history[3:]

    parquet = tmp_path / "chain.parquet"
    result = invoke("export", "--db", db_url, "--format", "parquet", "--table", "chain", "--out", str(parquet))
    assert result.exit_code == 0, result.output
    assert pq.read_table(parquet).column("seq").to_pylist() == list(range(1, 1 + 2 + 5 * (1 + 18 + 1) + 1))

    misplaced = invoke("export", "--db", db_url, "--format", "csv", "--table", "runs", "--outcome", "error")
    assert misplaced.exit_code == 2 and "apply to files" in misplaced.output
    no_file = invoke("export", "--db", db_url, "--format", "parquet")
    assert no_file.exit_code == 2 and "--out" in no_file.output


def test_verify_exit_codes_and_the_named_row(db_url: str, history: list[str], raw_engine: sa.Engine) -> None:
    intact = invoke("verify", "--db", db_url)
    assert intact.exit_code == 0, intact.output
    assert "chain intact" in intact.stdout
    head = json.loads(invoke("verify", "--db", db_url, "--json").stdout)["head_hash"]
    assert invoke("verify", "--db", db_url, "--expect", head).exit_code == 0

    with raw_engine.begin() as connection:
        target = connection.execute(sa.text("SELECT max(id) FROM files WHERE outcome = 'error'")).scalar_one()
        connection.execute(sa.text("UPDATE files SET outcome = 'anonymized' WHERE id = :id"), {"id": target})
    broken = invoke("verify", "--db", db_url)
    assert broken.exit_code == 1
    assert f"files row {target}" in broken.stderr and "altered" in broken.stderr
    document = json.loads(invoke("verify", "--db", db_url, "--json").stdout)
    assert document["is_intact"] is False
    assert document["breaks"][0]["row_id"] == str(target)


def test_verify_with_the_key_from_the_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFACE_AUDIT_KEY", "correct horse battery staple")
    with AuditStore(db_url) as store:
        record_history(store, days=1)
    assert invoke("verify", "--db", db_url).exit_code == 0
    monkeypatch.setenv("EFFACE_AUDIT_KEY", "a different key, long enough")
    wrong = invoke("verify", "--db", db_url)
    assert wrong.exit_code == 1 and "is it the key" in wrong.output
    monkeypatch.delenv("EFFACE_AUDIT_KEY")
    missing = invoke("verify", "--db", db_url)
    assert missing.exit_code == 1 and "EFFACE_AUDIT_KEY" in missing.output
    monkeypatch.setenv("EFFACE_AUDIT_KEY", "short")
    assert invoke("verify", "--db", db_url).exit_code == 2


def test_prune(db_url: str, history: list[str], raw_engine: sa.Engine) -> None:
    # The history is from November 2026; "now" is later, so a 1h age covers all of it.
    dry = invoke("prune", "--db", db_url, "--older-than", "1h", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would remove 5 runs, 90 files and 2 validations" in dry.stdout
    declined = invoke("prune", "--db", db_url, "--older-than", "1h", input_text="n\n")
    assert declined.exit_code == 1
    kept = invoke("prune", "--db", db_url, "--older-than", "5000d", "--yes")
    assert kept.exit_code == 0 and "removed 0 runs" in kept.stdout

    with raw_engine.begin() as connection:
        connection.execute(sa.text("UPDATE runs SET hostname = 'elsewhere'"))
    refused = invoke("prune", "--db", db_url, "--older-than", "1h", "--yes")
    assert refused.exit_code == 1 and "refusing to prune" in refused.output
    with raw_engine.begin() as connection:
        connection.execute(sa.text("UPDATE runs SET hostname = 'worker-1'"))

    done = invoke("prune", "--db", db_url, "--older-than", "1h", "--yes")
    assert done.exit_code == 0, done.output
    assert "removed 5 runs, 90 files and 2 validations" in done.stdout
    assert invoke("verify", "--db", db_url).exit_code == 0
    assert json.loads(invoke("list", "--db", db_url, "--json").stdout) == []
    assert invoke("prune", "--db", db_url, "--older-than", "1 year").exit_code == 2


def test_report_command(db_url: str, history: list[str], tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = invoke("report", "--db", db_url, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "not met  Every file in scope anonymized without error" in result.stdout
    page = out.read_text(encoding="utf-8")
    assert "every run in the audit log" in page

    one = invoke("report", "--db", db_url, "--run", "latest", "--out", str(out))
    assert one.exit_code == 0
    assert f"run {history[-1]}" in out.read_text(encoding="utf-8")
    since = invoke("report", "--db", db_url, "--since", "2026-11-05", "--out", str(out))
    assert since.exit_code == 0 and "runs started since 2026-11-05" in out.read_text(encoding="utf-8")

    both = invoke("report", "--db", db_url, "--run", "latest", "--since", "1d", "--out", str(out))
    assert both.exit_code == 2
    unwritable = invoke("report", "--db", db_url, "--out", str(tmp_path / "missing" / "r.html"))
    assert unwritable.exit_code == 2 and "cannot write the report" in unwritable.output


def run_efface(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``efface`` command in a child process."""
    env = {**os.environ, "COLUMNS": "200"}  # one error box line per message
    return subprocess.run(
        [sys.executable, "-m", "efface", *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://user@127.0.0.1/efface", "SQLite or PostgreSQL, not mysql"),
        ("oracle+oracledb://user@127.0.0.1/efface", "SQLite or PostgreSQL, not oracle"),
        ("postgresql+pg8000://root@127.0.0.1/test", "audit database driver pg8000 is not installed"),
        ("not a url", "cannot parse audit database URL"),
    ],
)
def test_a_database_url_that_cannot_work_is_one_line_and_exit_2(url: str, message: str) -> None:
    result = run_efface("audit", "list", "--db", url)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgres://", "postgresql://", "postgres+psycopg://"])
def test_the_common_postgresql_spellings_reach_postgresql(pg_url: str, scheme: str) -> None:
    url = scheme + pg_url.split("://", 1)[1]
    with AuditStore(url) as store:
        record_history(store, days=1)
    result = invoke("list", "--db", url, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 1
    assert invoke("verify", "--db", pg_url).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["prune", "--older-than", "99999999999d", "--yes"],
        ["prune", "--older-than", "9999999d", "--yes"],
        ["list", "--since", "99999999999w"],
        ["list", "--until", "9999999d"],
    ],
    ids=["overflow-timedelta", "before-year-1", "since", "until"],
)
def test_an_age_too_large_is_one_line_and_exit_2(sqlite_url: str, args: list[str]) -> None:
    result = run_efface("audit", *args, "--db", sqlite_url)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "too large" in result.stderr, result.stderr


CARD = r'<div class="value">([^<]*)</div><div class="label">([^<]*)</div>'


def _report(db_url: str, out: Path) -> tuple[str, dict[str, str]]:
    result = invoke("report", "--db", db_url, "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    return result.stdout, {label: value for value, label in re.findall(CARD, page)}


def test_report_counts_a_typo_as_refused_not_as_a_failed_file(db_url: str, tmp_path: Path) -> None:
    for _ in range(2):  # the same typo twice
        typo = runner.invoke(app, ["anonymize", str(tmp_path / "nonexistent.jpg"), "--db", db_url])
        assert typo.exit_code == 1 and "no such file" in typo.stderr
    stdout, cards = _report(db_url, tmp_path / "report.html")
    assert "not met" not in stdout
    assert "0 file(s) (0 failed), 1 path(s) refused, 0 file(s) in dry runs, 0 request(s)" in stdout
    assert re.search(r"missing  Every file in scope anonymized without error", stdout), stdout
    assert (cards["files"], cards["files failed"], cards["refused"]) == ("0", "0", "1")
    assert "1 path refused (InputNotFoundError x1)" in (tmp_path / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_report_counts_each_file_once_and_dry_runs_apart(db_url: str, tmp_path: Path) -> None:
    photo = tmp_path / "photos" / "noise.jpg"
    photo.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photo)
    for args in (["--dry-run"], ["--dry-run"], [], ["--force"]):
        done = runner.invoke(app, ["anonymize", str(photo.parent), "--db", db_url, *args])
        assert done.exit_code == 0, done.output
    stdout, cards = _report(db_url, tmp_path / "report.html")
    # Four runs of one file: one file, one file in dry runs; not four.
    assert (cards["runs"], cards["files"], cards["files in dry runs"], cards["files failed"]) == ("4", "1", "1", "0")
    assert "met  Every file in scope anonymized without error" in stdout
    assert "1 file(s) (0 failed), 0 path(s) refused, 1 file(s) in dry runs, 0 request(s)" in stdout


def test_the_report_needs_no_plotting_library(tmp_path: Path, sqlite_url: str) -> None:
    """The base install renders the whole report: a real process where matplotlib cannot be imported."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoMatplotlib:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ImportError(f'{name} blocked by the test')\n"
        "sys.meta_path.insert(0, _NoMatplotlib())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *sys.path]), "COLUMNS": "200"}
    command = [sys.executable, "-m", "efface", "audit", "report", "--db", sqlite_url, "--out", str(tmp_path / "r.html")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg ") == 2 and "no file examined" in page
