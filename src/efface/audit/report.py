"""The accountability report for a data-protection officer: one self-contained HTML page (styles inline, plots
drawn as inline SVG, no script, no external resource) that says what was processed, when, with which model
and settings, with what result, how anonymization was validated, whether the audit log is intact, and which
items of the usual face-anonymization checklist have evidence.

``build_report`` gathers (reads the store and verifies the chain), ``evaluate_checklist`` judges (pure),
``render_html`` writes (pure; the plots come from ``plots.bar_chart``, so the base install renders it).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from efface.audit.plots import Bar, bar_chart
from efface.audit.summary import FACES_HISTOGRAM_CAP, ActivitySummary, ErrorCause, ReportScope, Tally
from efface.audit.verifier import ChainReport
from efface.records import Outcome, ValidationKind, ValidationRecord, WriteMode

if TYPE_CHECKING:
    from efface.audit.store import AuditStore

__all__ = ["CheckStatus", "ChecklistItem", "ReportData", "build_report", "evaluate_checklist", "render_html"]

# Settings that decide the transform: a strength validation speaks for runs only when these agree.
_TRANSFORM_SETTINGS = ("method", "mask_shape", "box_scale", "blur_kernel_fraction", "pixelate_blocks")


class CheckStatus(StrEnum):
    """How a checklist item stands."""

    MET = "met"
    NOT_MET = "not met"
    REVIEW = "review"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    """One item of the checklist, with its evidence (or what is missing)."""

    title: str
    status: CheckStatus
    evidence: str


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the report shows.

    Attributes:
        generated_at: UTC time of the report.
        efface_version: the version that wrote it.
        database: the audit database URL, password hidden.
        scope: which runs.
        activity: totals and aggregates of the runs in scope.
        coverage / strength / identity: the latest validation of each kind in the whole log, or None.
        chain: the verification of the whole chain, made for this report.
        checklist: the judged checklist.
    """

    generated_at: datetime
    efface_version: str
    database: str
    scope: ReportScope
    activity: ActivitySummary
    coverage: ValidationRecord | None
    strength: ValidationRecord | None
    chain: ChainReport
    checklist: tuple[ChecklistItem, ...]
    identity: ValidationRecord | None = None


def _date(value: datetime | None) -> str:
    return "-" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _share(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _dig(mapping: object, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def coverage_figures(record: ValidationRecord) -> str:
    """One line of a coverage validation's key figures."""
    figures = record.figures
    small = _share(_dig(figures, "recall_by_height", "<20", "share"))
    return (
        f"recall {_share(figures.get('recall'))} on {figures.get('images', '?')} images "
        f"({figures.get('faces', '?')} faces; faces under 20 px {small}), "
        f"faces covered by the anonymized region {_share(_dig(figures, 'coverage', 'covered_share'))}, "
        f"false positives per image {_share(figures.get('fp_per_image'))}"
    )


def _configured_rows(record: ValidationRecord) -> list[Mapping[str, Any]]:
    rows = record.figures.get("rows")
    return (
        [row for row in rows if isinstance(row, Mapping) and row.get("is_configured")] if isinstance(rows, list) else []
    )


def strength_figures(record: ValidationRecord) -> str:
    """One line of a strength validation's key figures: the configured setting's rank-1 per attacker."""
    figures = record.figures
    parts = [
        f"{row.get('recognizer')} {row.get('attacker') or ''}: rank-1 {_share(row.get('rank1'))}".replace("  ", " ")
        for row in _configured_rows(record)
    ]
    chance = f"chance {_share(figures.get('chance'))}"
    people = f"{figures.get('identities', '?')} people, {figures.get('probes', '?')} probes"
    return f"{'; '.join(parts) or 'no configured row'} ({chance}; {people})"


def identity_figures(record: ValidationRecord) -> str:
    """One line of a matcher validation's key figures: the leak rate and the subject-kept rate."""
    figures = record.figures
    keep = _dig(figures, "thresholds", "keep")
    thresholds = ", ".join(f"{name} {value:.4f}" for name, value in keep.items()) if isinstance(keep, dict) else "?"
    return (
        f"third parties kept (leak rate) {_dig(figures, 'rates', 'leak_rate')} of "
        f"{_dig(figures, 'rates', 'third_party_faces')} faces (target {figures.get('target_leak_rate', '?')}); "
        f"data subject kept {_share(_dig(figures, 'rates', 'subject_kept_rate'))} of "
        f"{_dig(figures, 'rates', 'subject_faces')}; missed under --only-person "
        f"{_share(_dig(figures, 'rates', 'only_missed_rate'))}; {figures.get('people', '?')} people; keep "
        f"thresholds (cosine) {thresholds}"
    )


def _settings_disagree(record: ValidationRecord, activity: ActivitySummary, names: Iterable[str]) -> list[str]:
    notes = []
    for name in names:
        validated = record.settings.get(name)
        used = {json.dumps(use.settings.get(name)) for use in activity.models} - {json.dumps(validated)}
        if validated is not None and used:
            notes.append(f"{name} {json.dumps(validated)} validated, {', '.join(sorted(used))} used")
    return notes


def _model_disagrees(record: ValidationRecord, activity: ActivitySummary) -> list[str]:
    used = {use.model_sha256 for use in activity.models} - {record.model_sha256}
    return [f"runs used other weights (sha256 {', '.join(s[:12] for s in sorted(used))})"] if used else []


def _coverage_item(record: ValidationRecord | None, activity: ActivitySummary) -> ChecklistItem:
    title = "Detection coverage validated on a representative sample"
    if record is None:
        return ChecklistItem(
            title,
            CheckStatus.MISSING,
            "no `efface verify coverage` result in the audit log: run it on a sample annotated from your own material",
        )
    dataset = record.dataset.get("images_root") or record.dataset.get("annotations") or "?"
    evidence = (
        f"validation {record.validation_id[:12]} on {_date(record.created_at)}, {record.model_name} "
        f"(sha256 {record.model_sha256[:12]}), sample {dataset}: {coverage_figures(record)}"
    )
    mismatches = _model_disagrees(record, activity) + _settings_disagree(
        record, activity, ("preset", "score_threshold", "box_scale")
    )
    if record.passed is False:
        return ChecklistItem(title, CheckStatus.NOT_MET, f"{evidence}; below its --fail-under criterion")
    if mismatches:
        return ChecklistItem(title, CheckStatus.REVIEW, f"{evidence}; but {'; '.join(mismatches)}")
    if record.passed is None:
        return ChecklistItem(title, CheckStatus.REVIEW, f"{evidence}; recorded without a pass criterion (--fail-under)")
    return ChecklistItem(title, CheckStatus.MET, f"{evidence}; passed its --fail-under criterion")


def _strength_item(record: ValidationRecord | None, activity: ActivitySummary) -> ChecklistItem:
    title = "Anonymization strength tested against face recognition"
    if record is None:
        return ChecklistItem(
            title,
            CheckStatus.MISSING,
            "no `efface verify strength` result in the audit log: run it on a set of identities",
        )
    evidence = (
        f"validation {record.validation_id[:12]} on {_date(record.created_at)}, "
        f"{record.settings.get('method', '?')} treatment: {strength_figures(record)}"
    )
    if record.passed is False:
        reasons = record.figures.get("reasons")
        why = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) and reasons else "not verified"
        return ChecklistItem(title, CheckStatus.NOT_MET, f"{evidence}; NOT VERIFIED: {why}")
    mismatches = _settings_disagree(record, activity, _TRANSFORM_SETTINGS)
    if mismatches:
        return ChecklistItem(title, CheckStatus.REVIEW, f"{evidence}; but {'; '.join(mismatches)}")
    return ChecklistItem(title, CheckStatus.MET, f"{evidence}; verified: no more identity leaks than a solid fill")


def _originals_item(activity: ActivitySummary) -> ChecklistItem:
    title = "Originals not retained"
    if not activity.runs_total:
        return ChecklistItem(title, CheckStatus.MISSING, "no run in scope")
    in_place = activity.files_by_mode.get(WriteMode.IN_PLACE, 0)
    served = activity.files_by_mode.get(WriteMode.RESPONSE, 0)
    leftovers = activity.files_by_outcome.get(Outcome.LEFTOVER_REMOVED, 0)
    evidence = (
        f"{in_place} files processed in place: each anonymized file replaced its original atomically, no backup "
        f"or copy written; {leftovers} temporary files left by interrupted runs found and deleted"
    )
    if served:
        evidence += f"; {served} uploads taken by the HTTP service, held in memory only and never stored"
    output_runs = activity.runs_by_mode.get(WriteMode.OUTPUT_DIR, 0)
    if output_runs:
        return ChecklistItem(
            title,
            CheckStatus.REVIEW,
            f"{evidence}; {output_runs} runs wrote anonymized copies to an output folder and left the originals "
            "where they were: delete them, or record why they are kept",
        )
    if not in_place and not served:
        return ChecklistItem(title, CheckStatus.REVIEW, "only dry runs in scope: nothing was anonymized")
    return ChecklistItem(title, CheckStatus.MET, evidence)


def _uncertain_item(activity: ActivitySummary) -> ChecklistItem:
    title = "Faces the detector was unsure of looked at"
    if not activity.uncertainty_recorded:
        return ChecklistItem(title, CheckStatus.MISSING, "no file in scope records what the detector was unsure of")
    uncertain = activity.uncertain_files
    if not uncertain:
        return ChecklistItem(
            title,
            CheckStatus.MET,
            f"none of {_plural(activity.uncertainty_recorded, 'file')} has a faint candidate left or a bridged "
            "video frame",
        )
    files_have = "1 file has" if uncertain == 1 else f"{uncertain:,} files have"
    return ChecklistItem(
        title,
        CheckStatus.REVIEW,
        f"{files_have} faint candidates worth a look (of {_plural(activity.uncertainty_recorded, 'file')}): boxes "
        "below the operating threshold that were not anonymized, or video frames the tracker bridged; list them "
        "with efface audit list --uncertain",
    )


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun if n == 1 else noun + 's'}"


def _causes(causes: Iterable[ErrorCause]) -> str:
    return ", ".join(f"{cause.error_class} x{cause.files}" for cause in causes)


def _states(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} x{n}" for name, n in counts.items())


def _errors_item(activity: ActivitySummary) -> ChecklistItem:
    title = "Every file in scope anonymized without error"
    files, requests = activity.files, activity.requests
    notes = []
    if files.refused:
        notes.append(
            f"{_plural(files.refused_total, 'path')} refused ({_causes(files.refused)}): never a file efface could "
            "take, nothing to anonymize"
        )
    if requests.total:
        answered = sum(requests.by_outcome.values())
        notes.append(
            f"{_plural(requests.total, 'request')} to the HTTP service: {answered:,} answered, "
            f"{requests.refused_total:,} refused" + (f" ({_causes(requests.refused)})" if requests.refused else "")
        )
    not_media = activity.files_by_outcome.get(Outcome.NOT_MEDIA, 0)
    if not_media:
        # Looked at too: said, so that none looks skipped.
        notes.append(f"{_plural(not_media, 'further file')} looked at and found not to be pictures or videos")
    if activity.dry_run_files.total:
        notes.append(f"{_plural(activity.dry_run_files.total, 'file')} analysed in dry runs, which change nothing")
    noted = "".join(f"; {note}" for note in notes)
    if files.failed or requests.failed:
        failures = []
        if files.failed:
            failures.append(
                f"{files.failed_total:,} of {_plural(files.taken, 'file')} failed and were left as they were "
                f"({_causes(files.failed)}): they are not anonymized"
            )
        if requests.failed:
            failures.append(
                f"{_plural(requests.failed_total, 'request')} failed ({_causes(requests.failed)}): no anonymized "
                "image was returned"
            )
        return ChecklistItem(title, CheckStatus.NOT_MET, "; ".join(failures) + noted)
    unaccounted = {**files.unaccounted, **{f"request {k}": n for k, n in requests.unaccounted.items()}}
    if unaccounted:
        return ChecklistItem(
            title,
            CheckStatus.REVIEW,
            f"{_plural(sum(unaccounted.values()), 'input')} in a state this report does not know "
            f"({_states(unaccounted)}): check them{noted}",
        )
    if not files.taken and not requests.taken:
        return ChecklistItem(title, CheckStatus.MISSING, f"no file in scope{noted}")
    return ChecklistItem(title, CheckStatus.MET, f"{_plural(files.taken, 'file')}, none failed{noted}")


def _audit_item(chain: ChainReport) -> ChecklistItem:
    title = "Audit log kept and intact"
    if not chain.is_intact:
        first = chain.first_break
        return ChecklistItem(
            title,
            CheckStatus.NOT_MET,
            f"hash chain BROKEN on {_date(chain.checked_at)}: {chain.breaks_total} findings, the first: "
            f"{first.message if first else '?'}",
        )
    keyed = (
        "keyed with the audit key (HMAC-SHA256)"
        if chain.is_key_given and chain.keyed_rows
        else "not keyed: anyone who can write the database could recompute it (set EFFACE_AUDIT_KEY)"
    )
    return ChecklistItem(
        title,
        CheckStatus.MET,
        f"hash chain verified on {_date(chain.checked_at)}: {chain.rows} rows since {_date(chain.first_recorded_at)}, "
        f"{chain.records_checked} records checked, {chain.prunes} retention prunes, {keyed}; head row "
        f"{chain.head_seq} hash {chain.head_hash}",
    )


def evaluate_checklist(
    activity: ActivitySummary,
    *,
    coverage: ValidationRecord | None,
    strength: ValidationRecord | None,
    chain: ChainReport,
    identity: ValidationRecord | None = None,
) -> tuple[ChecklistItem, ...]:
    """Judges each checklist item from its evidence (the item on faces kept by identity only where some were)."""
    selective = (_identity_item(activity, identity),) if activity.selective_rows else ()
    return (
        _coverage_item(coverage, activity),
        _strength_item(strength, activity),
        _originals_item(activity),
        _audit_item(chain),
        _uncertain_item(activity),
        *selective,
        _errors_item(activity),
    )


def _identity_item(activity: ActivitySummary, identity: ValidationRecord | None) -> ChecklistItem:
    title = "Faces left visible by identity accounted for"
    evidence = (
        f"{_plural(activity.selective_rows, 'file or request')} anonymized selectively (--keep-person or "
        f"--only-person) left {_plural(activity.faces_kept_by_identity, 'face')} (a video: tracks) visible on "
        "purpose; each run's settings hold the reference photos' sha256 and the thresholds: match them to the "
        "access or erasure requests behind them"
    )
    if identity is None:
        return ChecklistItem(
            title, CheckStatus.MISSING, f"{evidence}; the matcher was never measured (efface verify identity)"
        )
    return ChecklistItem(title, CheckStatus.REVIEW, f"{evidence}; the matcher: {identity_figures(identity)}")


def build_report(store: AuditStore, scope: ReportScope, *, efface_version: str) -> ReportData:
    """Gathers a report: the runs in scope, the latest validations and a fresh verification of the chain.

    Raises:
        AuditError: the database cannot be read.
    """
    activity = store.summarize(scope)
    coverage = next(iter(store.list_validations(limit=1, kind=ValidationKind.COVERAGE)), None)
    strength = next(iter(store.list_validations(limit=1, kind=ValidationKind.STRENGTH)), None)
    identity = next(iter(store.list_validations(limit=1, kind=ValidationKind.IDENTITY)), None)
    chain = store.verify()
    return ReportData(
        generated_at=datetime.now(UTC),
        efface_version=efface_version,
        database=store.shown_url,
        scope=scope,
        activity=activity,
        coverage=coverage,
        strength=strength,
        chain=chain,
        checklist=evaluate_checklist(activity, coverage=coverage, strength=strength, chain=chain, identity=identity),
        identity=identity,
    )


# --- rendering -------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2rem auto;max-width:1100px;
color:#1b1b1b;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:2px solid #ddd}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d0d0d0;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}code,.hash{font-family:ui-monospace,monospace;
font-size:.85rem;word-break:break-all}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}.card{border:1px solid #d0d0d0;border-radius:6px;
padding:.6rem 1rem;min-width:10rem}.card .value{font-size:1.6rem;font-weight:600}.card .label{color:#555}
.status{font-weight:700;padding:.1rem .45rem;border-radius:4px;white-space:nowrap}
.met{background:#d9f2dd;color:#14591f}.not-met{background:#f8d7d7;color:#8a1010}
.review{background:#fff0c2;color:#6b4e00}.missing{background:#e6e6e6;color:#333}
.intact{color:#14591f}.broken{color:#8a1010}img{max-width:100%}.muted{color:#666;font-size:.85rem}
@media print{body{margin:0}h2{break-after:avoid}table,img{break-inside:avoid}}
"""


class _Markup(str):
    """HTML built here, inserted as is."""

    __slots__ = ()


def _e(value: object) -> str:
    return value if isinstance(value, _Markup) else html.escape(str(value), quote=True)


def _table(headers: Iterable[str], rows: Iterable[Iterable[object]], *, numeric: Iterable[int] = ()) -> str:
    numeric_columns = set(numeric)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(cell)}</td>' if index in numeric_columns else f"<td>{_e(cell)}</td>"
            for index, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    flat: list[tuple[str, str]] = []
    for key in sorted(settings):
        value = settings[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat += _flatten(value, f"{name}.")
        else:
            flat.append((name, _plain(value)))
    return flat


def _plain(value: object) -> str:
    """A value as a person reads it: strings bare, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_OUTCOME_COLOURS: dict[str, str] = {
    Outcome.ANONYMIZED: "#2e7d32",
    Outcome.NO_FACES: "#90a4ae",
    Outcome.DRY_RUN: "#1565c0",
    Outcome.ERROR: "#c62828",
    Outcome.LEFTOVER_REMOVED: "#ffb300",
    Outcome.SKIPPED: "#cfd8dc",
    Outcome.NOT_MEDIA: "#eceff1",
    Outcome.PENDING: "#6d4c41",
}
# An outcome without a colour of its own (one added later) still gets a bar.
_OTHER_COLOUR = "#7e57c2"


def _plots(activity: ActivitySummary) -> tuple[str, str]:
    """The faces-per-file histogram and the files-over-time bars, as inline SVG (``plots.bar_chart``)."""
    faces = bar_chart(
        title="Faces per file",
        bars=[
            Bar(f"{count}+" if count == FACES_HISTOGRAM_CAP else str(count), {"files": files})
            for count, files in activity.faces_per_file
        ],
        colours={"files": "#2e7d32"},
        x_label="faces detected in the file",
        y_label="files",
        empty="no file examined",
    )
    over_time = bar_chart(
        title="Processing over time (UTC)",
        bars=[
            Bar(_bucket_label(start, activity.activity_unit.value), {str(k): n for k, n in counts.items()})
            for start, counts in activity.activity
        ],
        colours={str(outcome): colour for outcome, colour in _OUTCOME_COLOURS.items()},
        x_label=f"one bar per {activity.activity_unit.value} (UTC)",
        y_label=f"files per {activity.activity_unit.value}",
        empty="no file processed",
        legend=True,
        other_colour=_OTHER_COLOUR,
    )
    return faces, over_time


# How the accounting table names a latest state; one not listed (a newer outcome) shows as its own name.
_STATE_LABELS: dict[str, str] = {
    Outcome.ANONYMIZED: "anonymized",
    Outcome.NO_FACES: "no face found: nothing to anonymize",
    Outcome.SKIPPED: "already anonymized by an earlier run (skipped)",
    Outcome.DRY_RUN: "analysed, nothing written",
}


def _cause_cells(cause: ErrorCause) -> tuple[str, str, str, str]:
    return cause.error_class, f"{cause.files:,}", cause.example_message, cause.example_path


def _every_outcome(counts: Mapping[Outcome | str, int]) -> dict[Outcome | str, int]:
    """Every known outcome (zero included), then any other under its own name."""
    every: dict[Outcome | str, int] = {outcome: counts.get(outcome, 0) for outcome in Outcome}
    every.update((outcome, n) for outcome, n in counts.items() if outcome not in every)
    return every


def _tally_rows(kind: str, tally: Tally, *, failed: str) -> list[tuple[str, str, str]]:
    rows = [(kind, _STATE_LABELS.get(name, name), f"{n:,}") for name, n in tally.by_outcome.items()]
    if tally.failed:
        rows.append((kind, f"{failed} ({_causes(tally.failed)})", f"{tally.failed_total:,}"))
    if tally.refused:
        rows.append((kind, f"refused ({_causes(tally.refused)})", f"{tally.refused_total:,}"))
    return rows


def _accounting_table(activity: ActivitySummary) -> str:
    """Each input once, by its latest state: files, files in dry runs, requests; leftovers apart."""
    leftovers = activity.files_by_outcome.get(Outcome.LEFTOVER_REMOVED, 0)
    rows = (
        _tally_rows("files", activity.files, failed="failed, left as they were: not anonymized")
        + _tally_rows("files in dry runs", activity.dry_run_files, failed="failed")
        + _tally_rows("requests", activity.requests, failed="failed: no anonymized image returned")
        + ([("temporary files", "left by interrupted runs, deleted", f"{leftovers:,}")] if leftovers else [])
    )
    return _table(["inputs, each counted once by its latest state", "state", "count"], rows, numeric=[2]) + (
        f'<p class="muted">{_plural(activity.files.total, "distinct path")} written or tried, '
        f"{_plural(activity.dry_run_files.total, 'distinct path')} in dry runs, "
        f"{_plural(activity.requests.total, 'request')} to the HTTP service.</p>"
    )


def _bucket_label(start: datetime, unit: str) -> str:
    return {"hour": f"{start:%Y-%m-%d %H}h", "day": f"{start:%Y-%m-%d}", "month": f"{start:%Y-%m}"}[unit]


def _status(status: CheckStatus) -> _Markup:
    return _Markup(f'<span class="status {status.value.replace(" ", "-")}">{_e(status.value.upper())}</span>')


def _validation_section(title: str, record: ValidationRecord | None, figures_line: str, command: str) -> str:
    if record is None:
        return f"<h3>{_e(title)}</h3><p><strong>Missing:</strong> no <code>{_e(command)}</code> result is recorded.</p>"
    passed = {True: "passed", False: "FAILED", None: "no pass criterion"}[record.passed]
    dataset = _table(
        ["dataset", "value"],
        [(key, _plain(value)) for key, value in sorted(record.dataset.items())],
    )
    return (
        f"<h3>{_e(title)}</h3>"
        f"<p>Validation <code>{_e(record.validation_id)}</code> on {_e(_date(record.created_at))} by efface "
        f"{_e(record.efface_version)} on {_e(record.hostname)}: <strong>{_e(passed)}</strong>. Model "
        f'{_e(record.model_name)}, weights sha256 <span class="hash">{_e(record.model_sha256)}</span>.</p>'
        f"<p>{_e(figures_line)}</p>{dataset}"
        f'<details><summary>all figures (JSON)</summary><pre class="hash">'
        f"{_e(json.dumps(record.figures, indent=1, ensure_ascii=False))}</pre></details>"
    )


def render_html(report: ReportData) -> str:
    """The report as one self-contained HTML page."""
    activity, chain = report.activity, report.chain
    faces_svg, time_svg = _plots(activity)
    chain_state = '<span class="intact">INTACT</span>' if chain.is_intact else '<span class="broken">BROKEN</span>'
    files, requests = activity.files, activity.requests
    counted = [
        (_e(f"{activity.runs_total:,}"), "runs"),
        (_e(f"{files.taken:,}"), "files"),
        (_e(f"{activity.faces_anonymized:,}"), "faces anonymized"),
        (_e(f"{files.failed_total:,}"), "files failed"),
        (_e(f"{files.refused_total + requests.refused_total:,}"), "refused"),
    ]
    if requests.total:
        counted.append((_e(f"{requests.total:,}"), "requests"))
    if activity.dry_run_files.total:
        counted.append((_e(f"{activity.dry_run_files.total:,}"), "files in dry runs"))
    if activity.uncertain_files:
        counted.append((_e(f"{activity.uncertain_files:,}"), "files worth a look"))
    if activity.selective_rows:
        counted.append((_e(f"{activity.faces_kept_by_identity:,}"), "faces kept visible by identity"))
    cards = "".join(
        f'<div class="card"><div class="value">{value}</div><div class="label">{_e(label)}</div></div>'
        for value, label in (*counted, (chain_state, "audit chain"))
    )
    checklist = _table(
        ["item", "status", "evidence"], [(item.title, _status(item.status), item.evidence) for item in report.checklist]
    )

    outcomes = _accounting_table(activity) + _table(
        ["audit rows of files and requests, by outcome", "rows"],
        [(str(outcome), f"{n:,}") for outcome, n in _every_outcome(activity.files_by_outcome).items()]
        + [("faces detected", f"{activity.faces_detected:,}"), ("faces anonymized", f"{activity.faces_anonymized:,}")],
        numeric=[1],
    )
    run_rows = [
        (
            run["run_id"][:12],
            _date(run["started_at"]),
            _date(run["finished_at"]),
            run["command"],
            run["mode"],
            run["status"],
            run["hostname"],
            f"{run['files_total']:,}",
            f"{run['files_failed']:,}",
            f"{run['faces_anonymized']:,}",
        )
        for run in activity.runs
    ]
    runs_table = _table(
        ["run", "started", "finished", "command", "mode", "status", "host", "files", "errors", "faces anonymized"],
        run_rows,
        numeric=[7, 8, 9],
    )
    more_runs = (
        f'<p class="muted">The {len(activity.runs)} newest of {activity.runs_total:,} runs; '
        "<code>efface audit export --table runs</code> lists all.</p>"
        if activity.runs_total > len(activity.runs)
        else ""
    )
    models = (
        "".join(
            f"<h3>{_e(use.model_name)}, used by {use.runs:,} runs from {_e(_date(use.first_started_at))} to "
            f'{_e(_date(use.last_started_at))}</h3><p>Weights sha256 <span class="hash">{_e(use.model_sha256)}</span>; '
            f"efface {_e(', '.join(use.efface_versions))}.</p>" + _table(["setting", "value"], _flatten(use.settings))
            for use in activity.models
        )
        or "<p>No run in scope.</p>"
    )
    failures = [("file", c) for c in files.failed] + [("request", c) for c in requests.failed]
    refusals = [("path", c) for c in files.refused] + [("request", c) for c in requests.refused]
    error_headers = ["", "error", "inputs", "example message", "example"]
    errors = (
        "<h3>Failures: tried and not anonymized (the latest state of each)</h3>"
        + (
            _table(error_headers, [(kind, *_cause_cells(c)) for kind, c in failures], numeric=[2])
            if failures
            else "<p>No file or request failed.</p>"
        )
        + "<h3>Refusals: never a file efface could take (no such path; a request refused as the client's doing)</h3>"
        + (
            _table(error_headers, [(kind, *_cause_cells(c)) for kind, c in refusals], numeric=[2])
            if refusals
            else "<p>Nothing was refused.</p>"
        )
    )
    breaks = (
        _table(
            ["finding", "table", "row", "chain row", "what"],
            [(b.kind.value, b.table, b.row_id, b.seq or "-", b.message) for b in chain.breaks[:50]],
        )
        if chain.breaks
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>efface accountability report - {_e(report.scope.describe())}</title>
<style>{_CSS}</style></head>
<body>
<h1>Face anonymization: accountability report</h1>
<p class="muted">GDPR Art. 5(2). Generated {_e(_date(report.generated_at))} by efface {_e(report.efface_version)}
from the audit database <code>{_e(report.database)}</code>. Scope: {_e(report.scope.describe())};
files from {_e(_date(activity.first_file_at))} to {_e(_date(activity.last_file_at))}.</p>
<div class="cards">{cards}</div>

<h2>Checklist</h2>
{checklist}

<h2>What was processed</h2>
{outcomes}
{runs_table}
{more_runs}

<h2>Model and settings</h2>
{models}

<h2>Errors and their causes</h2>
{errors}

<h2>Validation</h2>
{
        _validation_section(
            "Detection coverage (latest efface verify coverage)",
            report.coverage,
            coverage_figures(report.coverage) if report.coverage else "",
            "efface verify coverage",
        )
    }
{
        _validation_section(
            "Strength against face recognition (latest efface verify strength)",
            report.strength,
            strength_figures(report.strength) if report.strength else "",
            "efface verify strength",
        )
    }
{
        _validation_section(
            "Selective anonymization: telling the data subject apart (latest efface verify identity)",
            report.identity,
            identity_figures(report.identity) if report.identity else "",
            "efface verify identity",
        )
    }

<h2>Plots</h2>
<figure>{faces_svg}</figure>
<figure>{time_svg}</figure>

<h2>Audit chain</h2>
<p>Chain status: <strong>{chain_state}</strong>, verified {_e(_date(chain.checked_at))}: {chain.rows:,} chain rows
({chain.keyed_rows:,} keyed), {chain.records_checked:,} records checked against their hashes, {chain.prunes} retention
prunes, {chain.breaks_total:,} findings. Head: row {_e(chain.head_seq)}, hash
<span class="hash">{_e(chain.head_hash)}</span>.</p>
<p class="muted">Keep this hash: <code>efface audit verify --expect {_e(chain.head_hash)}</code> later proves that
no row recorded up to now was removed from the end of the log.</p>
{breaks}
</body></html>
"""
