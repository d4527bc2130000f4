"""``efface verify identity``: the matcher measured with both real recognizers on LFW people (research-only data
beside the repository, read in place), stored as a validation record that the DPO report shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.audit.report import build_report, render_html
from efface.audit.summary import ReportScope
from efface.cli import app
from efface.records import ValidationKind

FACES_IDENTITY = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces-identity"


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (FACES_IDENTITY / "people").is_dir():
        pytest.skip(f"evaluation data not present: {FACES_IDENTITY}")
    chosen = tmp_path_factory.mktemp("people")
    for person in sorted((FACES_IDENTITY / "people").iterdir())[:20]:
        (chosen / person.name).symlink_to(person)
    return chosen


@pytest.mark.slow
def test_the_matcher_is_measured_on_people_it_was_not_tuned_on_and_reported(people: Path, sqlite_url: str) -> None:
    distractors = FACES_IDENTITY / "distractors"
    result = CliRunner().invoke(
        app, ["verify", "identity", str(people), "--distractors", str(distractors), "--json", "--db", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    rates = figures["rates"]
    assert figures["people"] == 20 and figures["skipped"] == 0
    # Each half's thresholds measured on the other half, pooled: every third party against every reference.
    assert rates["third_party_faces"] > 20 * 100 and rates["subject_faces"] > 20
    assert rates["leak_rate"] <= 0.001 < rates["subject_kept_rate"]
    assert rates["subject_kept_rate"] > 0.5 and rates["only_missed_rate"] < 0.1
    defaults = figures["at_default_thresholds"]  # what --keep-person does here with one photo per person
    assert figures["references"] == 1 and defaults["leak_rate"] <= 0.001 and defaults["subject_kept_rate"] > 0.5
    keep = figures["thresholds"]["keep"]
    assert set(keep) == {"dlib", "facenet"} and figures["thresholds"]["other"]["dlib"] <= keep["dlib"]
    with AuditStore(sqlite_url) as store:
        (record,) = store.list_validations(kind=ValidationKind.IDENTITY)
        page = render_html(build_report(store, ReportScope(), efface_version="9.9.9"))
    assert record.passed is True and record.figures["rates"] == rates
    assert "Selective anonymization: telling the data subject apart" in page
    assert f"of {rates['third_party_faces']} faces (target 0.001)" in page
