"""The report's accounting on both databases: distinct files by their latest state, dry runs and requests apart,
refusals apart from failures, and an outcome the accounting does not know shown under its own name."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from efface import errors
from efface.audit import AuditStore
from efface.audit.report import CheckStatus, build_report, render_html
from efface.audit.summary import FILE_REFUSALS, REQUEST_REFUSALS, ReportScope
from efface.errors import CorruptImageError, EffaceError, InputNotFoundError, UnsupportedFormatError
from efface.pipeline import results
from efface.records import AnonymizationResult, BBox, Face, Outcome, RunInfo, RunStatus, RunSummary, WriteMode
from efface.service import errors as service_errors
from efface.service.errors import InvalidApiKeyError, InvalidOptionError, ProcessingTimeoutError

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
CARD = r'<div class="value">([^<]*)</div><div class="label">([^<]*)</div>'


def _run(store: AuditStore, mode: WriteMode, outcomes: list[AnonymizationResult], *, day: int) -> str:
    info = RunInfo(
        run_id=uuid.uuid4().hex,
        started_at=T0 + timedelta(days=day),
        efface_version="0.1.0",
        command="serve" if mode is WriteMode.RESPONSE else "anonymize",
        mode=mode,
        model_name="centerface",
        model_sha256="ab" * 32,
        settings={"method": "fill"},
        hostname="h",
    )
    store.start_run(info)
    store.record_files(info.run_id, outcomes)
    failed = sum(r.outcome is Outcome.ERROR for r in outcomes)
    status = RunStatus.FAILED if failed else RunStatus.COMPLETED
    store.finish_run(info.run_id, RunSummary(status, info.started_at, len(outcomes), failed, 0, 0, 1.0))
    return info.run_id


def _done(path: str, mode: WriteMode, *, faces: int, day: int) -> AnonymizationResult:
    found = tuple(Face(BBox(0.0, 0.0, 20.0, 20.0), 0.9) for _ in range(faces))
    outcome = Outcome.of_processing(mode, faces_anonymized=faces)
    return AnonymizationResult(
        Path(path),
        outcome,
        mode,
        T0 + timedelta(days=day),
        0.1,
        output_path=None if mode is WriteMode.DRY_RUN else Path(path),
        faces=found,
        faces_anonymized=0 if mode is WriteMode.DRY_RUN else faces,
        image_format="JPEG",
        resolution_wh=(64, 64),
    )


def _failed(path: str | None, error: BaseException, mode: WriteMode, *, day: int) -> AnonymizationResult:
    return results.failed(
        Path(path) if path else None,
        error,
        mode=mode,
        started_at=T0 + timedelta(days=day),
        request_id=None if path else uuid.uuid4().hex,
    )


def _answered(day: int) -> AnonymizationResult:
    return results.answered(
        uuid.uuid4().hex,
        mode=WriteMode.RESPONSE,
        started_at=T0 + timedelta(days=day),
        duration_s=0.1,
        faces=(Face(BBox(0.0, 0.0, 20.0, 20.0), 0.9),),
        faces_anonymized=1,
        output_sha256="cd" * 32,
        image_format="JPEG",
        resolution_wh=(64, 64),
        details={},
    )


def record_mixed_history(store: AuditStore) -> None:
    """Three files over two in-place runs (one failed, then anonymized on the retry), a typo, the same files in
    two dry runs, and a server that refused three requests, answered one and failed one."""
    in_place, dry = WriteMode.IN_PLACE, WriteMode.DRY_RUN
    _run(
        store,
        in_place,
        [
            _failed("/p/a.jpg", CorruptImageError("truncated"), in_place, day=0),
            _done("/p/b.jpg", in_place, faces=2, day=0),
            _failed("/p/c.heic", UnsupportedFormatError("HEIC is not supported"), in_place, day=0),
            _failed("/nonexistent.jpg", InputNotFoundError("no such file or folder"), in_place, day=0),
        ],
        day=0,
    )
    _run(
        store,
        in_place,
        [
            _done("/p/a.jpg", in_place, faces=1, day=1),
            results.skipped(
                Path("/p/b.jpg"), mode=in_place, output_path=Path("/p/b.jpg"), started_at=T0, duration_s=0.0
            ),
            _failed("/nonexistent.jpg", InputNotFoundError("no such file or folder"), in_place, day=1),
        ],
        day=1,
    )
    for day in (2, 3):
        _run(store, dry, [_done("/p/a.jpg", dry, faces=1, day=day), _done("/p/d.jpg", dry, faces=0, day=day)], day=day)
    served = WriteMode.RESPONSE
    _run(
        store,
        served,
        [
            _failed(None, InvalidApiKeyError("invalid API key"), served, day=4),
            _failed(None, UnsupportedFormatError("not an image"), served, day=4),
            _failed(None, InvalidOptionError("strength out of range"), served, day=4),
            _answered(day=4),
            _failed(None, ProcessingTimeoutError("no answer within 60 s"), served, day=4),
        ],
        day=4,
    )


def test_files_are_counted_once_by_their_latest_state(store: AuditStore) -> None:
    record_mixed_history(store)
    activity = store.summarize(ReportScope())
    files, dry, requests = activity.files, activity.dry_run_files, activity.requests
    # a.jpg failed, then was anonymized; b.jpg anonymized, then skipped; c.heic failed; a typo refused twice.
    assert files.by_outcome == {"anonymized": 1, "skipped": 1}
    assert [(c.error_class, c.files, c.example_path) for c in files.failed] == [
        ("UnsupportedFormatError", 1, "/p/c.heic")
    ]
    assert [(c.error_class, c.files) for c in files.refused] == [("InputNotFoundError", 1)]
    assert (files.total, files.taken, files.failed_total, files.refused_total) == (4, 3, 1, 1)
    # Two dry runs of two files: two files analysed, none of them counted among the files above.
    assert (dry.by_outcome, dry.total) == ({"dry_run": 2}, 2)
    assert requests.by_outcome == {"anonymized": 1}
    assert sorted((c.error_class, c.files) for c in requests.refused) == [
        ("InvalidApiKeyError", 1),
        ("InvalidOptionError", 1),
        ("UnsupportedFormatError", 1),
    ]
    assert [(c.error_class, c.example_path[:8]) for c in requests.failed] == [("ProcessingTimeoutError", "request ")]
    assert (activity.files_total, activity.files_failed) == (3, 1)
    # Distinct inputs per write mode, not rows.
    assert activity.files_by_mode == {WriteMode.IN_PLACE: 3, WriteMode.DRY_RUN: 2, WriteMode.RESPONSE: 2}

    one_run = store.summarize(ReportScope(since=T0 + timedelta(days=1)))
    assert one_run.files.by_outcome == {"anonymized": 1, "skipped": 1} and not one_run.files.failed


def test_a_typo_and_refused_requests_are_not_failed_files(db_url: str) -> None:
    with AuditStore(db_url) as store:
        in_place, served = WriteMode.IN_PLACE, WriteMode.RESPONSE
        typo = InputNotFoundError("no such file or folder")
        _run(store, in_place, [_failed("/nonexistent.jpg", typo, in_place, day=0)], day=0)
        _run(store, in_place, [_done("/p/a.jpg", in_place, faces=1, day=1)], day=1)
        for day in (2, 3):
            _run(store, WriteMode.DRY_RUN, [_done("/p/a.jpg", WriteMode.DRY_RUN, faces=1, day=day)], day=day)
        refused = [InvalidApiKeyError("invalid API key"), UnsupportedFormatError("not an image")]
        _run(store, served, [_failed(None, e, served, day=4) for e in refused] + [_answered(day=4)], day=4)
        report = build_report(store, ReportScope(), efface_version="9.9.9")
    errors_item = report.checklist[-1]
    assert errors_item.status is CheckStatus.MET, errors_item.evidence
    assert "1 file, none failed" in errors_item.evidence
    assert "1 path refused (InputNotFoundError x1)" in errors_item.evidence
    assert "3 requests to the HTTP service: 1 answered, 2 refused" in errors_item.evidence
    page = render_html(report)
    cards = {label: value for value, label in re.findall(CARD, page)}
    assert cards["files"] == "1" and cards["files failed"] == "0"
    assert cards["refused"] == "3" and cards["requests"] == "3" and cards["files in dry runs"] == "1"


def test_a_failed_request_fails_the_item_without_counting_as_a_file(store: AuditStore) -> None:
    record_mixed_history(store)
    report = build_report(store, ReportScope(), efface_version="9.9.9")
    errors_item = report.checklist[-1]
    assert errors_item.status is CheckStatus.NOT_MET
    assert "1 of 3 files failed and were left as they were (UnsupportedFormatError x1)" in errors_item.evidence
    assert "1 request failed (ProcessingTimeoutError x1)" in errors_item.evidence


def test_an_outcome_the_report_does_not_know_is_shown_under_its_own_name(
    store: AuditStore, raw_engine: sa.Engine
) -> None:
    run_id = _run(store, WriteMode.IN_PLACE, [_done("/p/a.jpg", WriteMode.IN_PLACE, faces=1, day=0)], day=0)
    with raw_engine.begin() as connection:  # as a later efface version may write it
        connection.execute(
            sa.text(
                "INSERT INTO files (run_id, path, mode, outcome, started_at, duration_s, faces_detected, "
                "faces_anonymized, faces, details) VALUES (:run, '/p/b.jpg', 'in_place', 'quarantined', :at, 0, 0, 0, "
                "'[]', '{}')"
            ),
            {"run": run_id, "at": T0},
        )
    activity = store.summarize(ReportScope())
    assert activity.files.by_outcome == {"anonymized": 1, "quarantined": 1}
    assert activity.files.unaccounted == {"quarantined": 1}
    assert activity.files_by_outcome == {Outcome.ANONYMIZED: 1, "quarantined": 1}
    report = build_report(store, ReportScope(), efface_version="9.9.9")
    errors_item = report.checklist[-1]
    assert errors_item.status is CheckStatus.REVIEW and "quarantined x1" in errors_item.evidence
    assert "<td>quarantined</td>" in render_html(report)


def _pending(path: str, *, day: int) -> AnonymizationResult:
    """The row a run writes right before it replaces a file (``pipeline/run.py``)."""
    done = _done(path, WriteMode.IN_PLACE, faces=1, day=day)
    details = {"intended_outcome": done.outcome.value, "source_sha256": "00" * 32}
    return dataclasses.replace(done, outcome=Outcome.PENDING, output_sha256="11" * 32, details=details)


def test_a_pending_row_is_no_state_of_its_file_and_its_settlement_counts_once(store: AuditStore) -> None:
    # Run A: a.jpg replaced and confirmed; b.jpg's replace never confirmed and not yet settled; c.jpg's found done
    # by a later run (settled as anonymized); d.jpg's found not done (settled as an error) and then anonymized by run B.
    rows = [_pending("/p/a.jpg", day=0), _done("/p/a.jpg", WriteMode.IN_PLACE, faces=1, day=0)]
    rows += [_pending(f"/p/{name}.jpg", day=0) for name in "bcd"]
    run_a = _run(store, WriteMode.IN_PLACE, rows, day=0)
    (c_pending,) = store.unsettled_pending(Path("/p/c.jpg"))
    store.record_settlement(c_pending, outcome=Outcome.ANONYMIZED, details={"settled_by_run": "b"})
    (d_pending,) = store.unsettled_pending(Path("/p/d.jpg"))
    store.record_settlement(
        d_pending, outcome=Outcome.ERROR, details={}, error_class="OutputError", error_message="left as it was"
    )
    _run(store, WriteMode.IN_PLACE, [_done("/p/d.jpg", WriteMode.IN_PLACE, faces=1, day=1)], day=1)

    activity = store.summarize(ReportScope())
    assert activity.files.by_outcome == {"anonymized": 3}  # a, c (settled), d (run B): b has no state yet
    assert activity.files.failed == () and activity.files.unaccounted == {}
    assert Outcome.PENDING not in activity.files_by_outcome
    only_a = store.summarize(ReportScope(run_id=run_a))
    assert only_a.files.by_outcome == {"anonymized": 2}  # a, c
    assert [(c.example_path, c.files) for c in only_a.files.failed] == [("/p/d.jpg", 1)]


def _error_classes() -> list[type[EffaceError]]:
    found: list[type[EffaceError]] = []
    pending: list[type[EffaceError]] = [EffaceError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending += cls.__subclasses__()
    return [cls for cls in found if cls.__module__ in (errors.__name__, service_errors.__name__)]


def test_request_refusals_are_what_the_service_answers_as_the_clients_doing() -> None:
    """A request answered 4xx (or refused as busy before it was taken) is a refusal; a 5xx is a failure."""
    # Raised only by in-place file runs (a request's content is held in memory: no links, no rewrite mid-run).
    file_only = {errors.HardLinkError, errors.SourceChangedError}
    classes = [cls for cls in _error_classes() if cls not in file_only]
    assert len(classes) > 15
    for cls in classes:
        status = service_errors.http_status(cls("x"))
        is_refusal = status < 500 or cls is service_errors.ServerBusyError
        assert (cls.__name__ in REQUEST_REFUSALS) is is_refusal, (cls.__name__, status)
    assert {cls.__name__ for cls in classes} >= REQUEST_REFUSALS
    assert {InputNotFoundError.__name__} == FILE_REFUSALS
