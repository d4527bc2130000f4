"""The DPO report: the aggregates on both databases, the checklist's judgement, a self-contained page, and the
page rendered by a real headless Chromium with the network off."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.audit.report import CheckStatus, ReportData, build_report, evaluate_checklist, render_html
from efface.audit.summary import ReportScope, TimeUnit
from efface.cli import app
from efface.records import Outcome, RunStatus, WriteMode

from .conftest import HISTORY_START, coverage_record, record_history, strength_record


def test_summary_counts_the_runs_in_scope(store: AuditStore) -> None:
    run_ids = record_history(store)
    everything = store.summarize(ReportScope())
    assert everything.runs_total == 5
    assert everything.runs_by_mode == {WriteMode.IN_PLACE: 5}
    assert everything.runs_by_status == {RunStatus.FAILED: 5}
    assert everything.files_by_outcome == {Outcome.ANONYMIZED: 60, Outcome.NO_FACES: 20, Outcome.ERROR: 10}
    assert (everything.files_total, everything.files_failed) == (90, 10)
    assert (everything.faces_detected, everything.faces_anonymized) == (115, 115)
    assert [(c.error_class, c.files) for c in everything.errors] == [
        ("UnsupportedFormatError", 6),
        ("CorruptImageError", 4),
    ]
    assert everything.errors[1].example_message == "image file is truncated"
    assert dict(everything.faces_per_file) == {0: 20, 1: 30, 2: 15, 3: 10, 5: 5}
    assert everything.activity_unit is TimeUnit.DAY
    assert [start for start, _ in everything.activity] == [
        HISTORY_START.replace(hour=0) + timedelta(days=d) for d in range(5)
    ]
    assert sum(sum(counts.values()) for _, counts in everything.activity) == 90
    assert len(everything.models) == 1
    assert everything.models[0].runs == 5
    assert everything.models[0].settings["detection"] == {"passes": ["1x", "0.5x", "2x tiles"]}
    assert everything.first_file_at == HISTORY_START

    one = store.summarize(ReportScope(run_id=run_ids[2]))
    assert (one.runs_total, one.files_total, one.activity_unit) == (1, 18, TimeUnit.HOUR)
    assert [start.hour for start, _ in one.activity] == [HISTORY_START.hour + 2]
    recent = store.summarize(ReportScope(since=HISTORY_START + timedelta(days=3)))
    assert recent.runs_total == 2
    assert [run["run_id"] for run in recent.runs] == [run_ids[4], run_ids[3]]


def test_summary_of_an_empty_log(store: AuditStore) -> None:
    empty = store.summarize(ReportScope())
    assert (empty.runs_total, empty.files_total, empty.faces_detected) == (0, 0, 0)
    assert empty.activity == ()
    assert empty.models == ()


def test_report_scope_takes_one_run_or_a_date() -> None:
    with pytest.raises(ValueError, match="not both"):
        ReportScope(run_id="abc", since=datetime.now(UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        ReportScope(since=datetime(2025, 1, 1))


@pytest.fixture
def sqlite_store(sqlite_url: str) -> AuditStore:
    return AuditStore(sqlite_url)


def report_of(store: AuditStore) -> ReportData:
    return build_report(store, ReportScope(), efface_version="9.9.9")


def statuses(report: ReportData) -> list[CheckStatus]:
    return [item.status for item in report.checklist]


def test_checklist_with_every_piece_of_evidence(sqlite_store: AuditStore) -> None:
    with sqlite_store as store:
        record_history(store)
        report = report_of(store)
    # Coverage and strength verified, originals replaced in place, chain intact; but some files failed.
    assert statuses(report) == [
        CheckStatus.MET,
        CheckStatus.MET,
        CheckStatus.MET,
        CheckStatus.MET,
        CheckStatus.REVIEW,
        CheckStatus.NOT_MET,
    ]
    coverage, strength, originals, audit, uncertain, errors = report.checklist
    assert "recall 0.891 on 198 images" in coverage.evidence
    assert "rank-1 0.008" in strength.evidence
    assert "90 files processed in place" in originals.evidence
    assert "hash chain verified" in audit.evidence and "not keyed" in audit.evidence
    assert "10 of 90 files failed" in errors.evidence
    assert "15 files have faint candidates worth a look (of 80 files)" in uncertain.evidence
    assert (report.activity.uncertain_files, report.activity.uncertainty_recorded) == (15, 80)


def test_checklist_marks_what_is_missing_or_contradicted(sqlite_store: AuditStore) -> None:
    with sqlite_store as store:
        empty = report_of(store)
        assert statuses(empty) == [
            CheckStatus.MISSING,
            CheckStatus.MISSING,
            CheckStatus.MISSING,
            CheckStatus.MET,
            CheckStatus.MISSING,
            CheckStatus.MISSING,
        ]
        record_history(store)
        base = report_of(store)

    def judged(**changes: object) -> list[CheckStatus]:
        evidence = {"coverage": base.coverage, "strength": base.strength, "chain": base.chain, **changes}
        return [item.status for item in evaluate_checklist(base.activity, **evidence)]  # type: ignore[arg-type]

    assert judged(coverage=coverage_record(passed=False))[0] is CheckStatus.NOT_MET
    assert judged(coverage=coverage_record(passed=None))[0] is CheckStatus.REVIEW
    other_model = replace(coverage_record(), model_sha256="ff" * 32)
    assert judged(coverage=other_model)[0] is CheckStatus.REVIEW
    assert judged(strength=strength_record(passed=False))[1] is CheckStatus.NOT_MET
    # Strength measured for a blur, runs filled: the measurement does not speak for these runs.
    blur = strength_record(method="blur")
    assert judged(strength=blur)[1] is CheckStatus.REVIEW
    broken = replace(base.chain, breaks_total=1)
    assert judged(chain=broken)[3] is CheckStatus.NOT_MET
    output_dir = replace(base.activity, runs_by_mode={WriteMode.OUTPUT_DIR: 1, WriteMode.IN_PLACE: 4})
    assert (
        evaluate_checklist(output_dir, coverage=None, strength=None, chain=base.chain)[2].status is CheckStatus.REVIEW
    )
    # The HTTP service keeps no original and no copy: its runs meet the item, with the uploads as evidence.
    served = replace(
        base.activity,
        runs_by_mode={WriteMode.RESPONSE: 1},
        files_by_mode={WriteMode.RESPONSE: 7},
        files_by_outcome={Outcome.ANONYMIZED: 7},
    )
    originals = evaluate_checklist(served, coverage=None, strength=None, chain=base.chain)[2]
    assert originals.status is CheckStatus.MET and "7 uploads" in originals.evidence


def test_page_is_self_contained_with_the_key_figures(sqlite_store: AuditStore) -> None:
    with sqlite_store as store:
        record_history(store)
        report = report_of(store)
    page = render_html(report)
    # No resource from outside the page: no URL, no script; the plots are inline SVG.
    assert not re.search(r"(?:src|href)\s*=\s*[\"'](?!data:)", page)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page
    assert page.count("<svg ") == 2 and "data:image" not in page
    assert 'aria-label="Faces per file"' in page and 'aria-label="Processing over time (UTC)"' in page
    for text in ("90", "115", "INTACT", "0.891", "CorruptImageError", "NOT MET", "ab" * 32, report.chain.head_hash):
        assert text in page, text


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        reason = "Chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def run_chromium(page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        # The network is off: every request would go to a closed port, every name fails to resolve.
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        *arguments,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, timeout=120, check=True)


@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_network(db_url: str, tmp_path: Path) -> None:
    with AuditStore(db_url) as store:
        record_history(store)
        head = store.verify().head_hash
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["audit", "report", "--db", db_url, "--out", str(page)])
    assert result.exit_code == 0, result.output

    dom = run_chromium(page, tmp_path / "profile-dom", "--dump-dom").stdout.decode()
    text = re.sub(r"<[^>]+>", " ", dom)
    for figure in ("90", "115", "INTACT", "recall 0.891", "CorruptImageError", "Originals not retained", head):
        assert figure in text, figure
    assert dom.count("<svg ") == 2

    screenshot = tmp_path / "report.png"
    run_chromium(
        page, tmp_path / "profile-shot", "--hide-scrollbars", "--window-size=1280,4000", f"--screenshot={screenshot}"
    )
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape == (4000, 1280, 3)
    # The plots were decoded and drawn: their bar green (#2e7d32) covers a visible area.
    bar_green = np.all(np.abs(pixels.astype(int) - (0x2E, 0x7D, 0x32)) <= 6, axis=-1)
    assert bar_green.sum() > 5_000


def test_report_counts_a_tampered_log_as_broken(sqlite_store: AuditStore, sqlite_url: str) -> None:
    with sqlite_store as store:
        record_history(store, days=1)
        engine = sa.create_engine(sqlite_url)
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE files SET outcome = 'no_faces' WHERE outcome = 'error'"))
        engine.dispose()
        report = report_of(store)
    assert report.checklist[3].status is CheckStatus.NOT_MET
    assert "BROKEN" in render_html(report)
