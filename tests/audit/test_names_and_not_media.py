"""Names no database takes as they are (not UTF-8, with control characters) and files that are not media, in the
audit log of both databases."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from efface.audit import AuditStore
from efface.audit.report import evaluate_checklist
from efface.audit.summary import ReportScope
from efface.pipeline import results
from efface.records import AnonymizationResult, Outcome, RunInfo, WriteMode
from efface.text import path_from_text, path_text


def _run(store: AuditStore) -> str:
    run_id = uuid.uuid4().hex
    info = RunInfo(
        run_id=run_id,
        started_at=datetime.now(UTC),
        efface_version="test",
        command="anonymize",
        mode=WriteMode.IN_PLACE,
        model_name="centerface",
        model_sha256="0" * 64,
        settings={},
        hostname="test",
        settings_sha256="5" * 64,
    )
    store.start_run(info)
    return run_id


def test_odd_names_are_stored_escaped_and_losslessly(store: AuditStore, raw_engine: sa.Engine) -> None:
    run_id = _run(store)
    odd = Path(os.fsdecode(b"/photos/b\xff\nc\x1b[31m.jpg"))
    done = AnonymizationResult(
        path=odd,
        outcome=Outcome.NO_FACES,
        mode=WriteMode.IN_PLACE,
        started_at=datetime.now(UTC),
        duration_s=0.1,
        output_path=odd,
        output_sha256="a" * 64,
    )
    store.record_file(run_id, done)
    store.record_file(run_id, results.failed(odd, OSError(f"cannot open {odd}"), mode=WriteMode.IN_PLACE))
    with raw_engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT path, output_path, error_message FROM files ORDER BY id")).all()
    assert stored[0][0] == stored[0][1] == "/photos/b\\xff\\nc\\x1b[31m.jpg"
    assert os.fsencode(path_from_text(stored[0][0])) == b"/photos/b\xff\nc\x1b[31m.jpg"
    assert stored[1][2] == "cannot open /photos/b\\xff\\nc\\x1b[31m.jpg"
    # A resumed run finds what an earlier one did under the same name.
    assert store.output_hashes(odd, output_path=odd, settings_sha256="5" * 64) == frozenset({"a" * 64})
    assert store.verify().is_intact


def test_files_that_are_not_media_are_audited_apart_from_the_files_of_a_run(store: AuditStore) -> None:
    run_id = _run(store)
    store.record_file(run_id, results.not_media(Path("/photos/notes.txt"), mode=WriteMode.IN_PLACE, reason="text"))
    ok = AnonymizationResult(
        path=Path("/photos/a.jpg"),
        outcome=Outcome.NO_FACES,
        mode=WriteMode.IN_PLACE,
        started_at=datetime.now(UTC),
        duration_s=0.1,
    )
    store.record_file(run_id, ok)
    (row,) = [row for row in store.list_files(run_id) if row.outcome is Outcome.NOT_MEDIA]
    assert row.path == Path("/photos/notes.txt") and row.details == {"reason": "text"}
    summary = store.summarize(ReportScope(run_id=run_id))
    assert summary.files_by_outcome == {Outcome.NOT_MEDIA: 1, Outcome.NO_FACES: 1}
    assert (summary.files_total, summary.files_failed) == (1, 0)
    evidence = {
        item.title: item.evidence
        for item in evaluate_checklist(summary, coverage=None, strength=None, chain=store.verify())
    }
    assert (
        "1 further file looked at and found not to be pictures or videos"
        in evidence["Every file in scope anonymized without error"]
    )
    assert path_text(row.path) == "/photos/notes.txt"
