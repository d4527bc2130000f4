"""What the commands print: the two consoles, the progress bar, the tables and the JSON of results.

Rich reads ``[...]`` as markup, in messages and table cells alike; so every value that comes from the user, the
file system, an error message or the audit database goes through ``shown``: ``escape`` (a file named
``[red]x[/red].jpg`` is shown as named, not as a red ``x.jpg``) after ``printable`` (a newline in a name would
split its line, an ESC would drive the terminal). Paths are shown as ``path_text``, the form the audit log stores.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from efface.records import AnonymizationResult, Outcome, RunSummary
from efface.text import iso_time, path_text, printable

# Every command imports this module: the records it prints are named for the type checker only, and the
# verify enums are imported by the functions that print them, so ``efface anonymize`` loads no verify code.
if TYPE_CHECKING:
    from efface.audit import StoredFile, StoredRun
    from efface.audit.keys import ApiKey
    from efface.audit.verifier import ChainReport
    from efface.config import Settings
    from efface.recognition.recognizers import FaceRecognizer
    from efface.verify.annotations import WiderSubset
    from efface.verify.coverage import CoverageRun
    from efface.verify.strength import StrengthReport

__all__ = [
    "configure_logging",
    "key_json",
    "print_chain",
    "print_coverage",
    "print_error",
    "print_files",
    "print_keys",
    "print_run",
    "print_runs",
    "print_strength",
    "print_summary",
    "print_video",
    "progress_bar",
    "result_json",
    "shown",
    "stderr",
    "stdout",
    "stored_json",
]

stdout = Console()
stderr = Console(stderr=True)
for _console in (stdout, stderr):
    if not _console.is_terminal:  # piped or captured: don't squeeze tables into 80 columns
        _console.width = 160


def shown(value: object) -> str:
    """Text from outside (a name, a message, an audit row) as one line of plain text in Rich markup."""
    return escape(printable(str(value)))


class _PrintableMessages(logging.Filter):
    """Log messages interpolate paths: their control characters are escaped like every other line's."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = printable(record.getMessage()), None
        return True


def configure_logging(verbose: int) -> None:
    """Logs to stderr through Rich: efface's own INFO lines with ``-v``; the libraries' (Alembic, Ray, onnxruntime,
    ...) only from WARNING up, unless asked with ``-vv``."""
    handler = RichHandler(console=stderr, show_path=False, markup=False)
    handler.addFilter(_PrintableMessages())
    root_level = logging.INFO if verbose >= 2 else logging.WARNING
    logging.basicConfig(level=root_level, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("efface").setLevel(logging.INFO if verbose else logging.WARNING)


class CountColumn(ProgressColumn):
    """``3/10 files`` (``3 files`` while the total is not known yet), ``120/900 frames`` for a video."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        done = int(task.completed)
        counted = f"{done:,}/{int(task.total):,}" if task.total is not None else f"{done:,}"
        return Text(f"{counted} {unit}".rstrip(), style="progress.download")


class RateColumn(ProgressColumn):
    """A video's frames per second; a folder's faces anonymized so far."""

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "frames":
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} fps" if speed else "- fps", style="progress.data.speed")
        faces = task.fields.get("faces")
        return Text(f"{faces:,} faces" if faces is not None else "", style="progress.data.speed")


def progress_bar(*, is_quiet: bool) -> Progress:
    """A progress bar on stderr, shown only on a terminal and not with --json: per task its count (files, or a
    video's frames), its rate (faces so far, or frames per second), the time spent and the time left."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        CountColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=is_quiet or not stderr.is_terminal,
    )


def print_error(message: object) -> None:
    """``error: MESSAGE`` on stderr, one line, the message escaped (it may hold paths, brackets, control characters)."""
    stderr.print(f"[red]error:[/red] {shown(message)}", highlight=False, soft_wrap=True)


def result_json(result: AnonymizationResult) -> dict[str, object]:
    """One file's result as a JSON object (a line of ``anonymize --json``)."""
    return {
        "path": path_text(result.path) if result.path is not None else None,
        "outcome": result.outcome.value,
        "mode": result.mode.value,
        "output_path": path_text(result.output_path) if result.output_path else None,
        "faces_detected": result.faces_detected,
        "faces_anonymized": result.faces_anonymized,
        "faces": [face.as_dict() for face in result.faces],
        "output_sha256": result.output_sha256,
        "video": result.video.as_dict() if result.video is not None else None,
        "uncertainty": result.uncertainty.as_dict() if result.uncertainty is not None else None,
        "identity": result.details.get("identity"),  # under --keep-person / --only-person: faces (tracks) decided
        "duration_s": round(result.duration_s, 4),
        "error_class": result.error_class,
        "error_message": result.error_message,
    }


def print_file(result: AnonymizationResult) -> None:
    """One line per file (``--verbose``): what it is, what happened, the faces."""
    subject = path_text(result.path) if result.path is not None else f"request {result.request_id}"
    if result.outcome is Outcome.ERROR:
        return  # printed as an error line already
    if result.outcome not in (Outcome.ANONYMIZED, Outcome.NO_FACES, Outcome.DRY_RUN):
        stdout.print(f"{shown(subject)}: {result.outcome.value}", highlight=False, soft_wrap=True)
        return
    faces = f"{result.faces_detected} face(s) found, {result.faces_anonymized} anonymized"
    identity = result.details.get("identity")
    kept = f", {identity['kept']} kept by identity" if isinstance(identity, dict) else ""
    stdout.print(
        f"{shown(subject)}: {result.outcome.value}, {faces}{kept} ({result.duration_s:.2f} s)",
        highlight=False,
        soft_wrap=True,
    )


def print_video(result: AnonymizationResult) -> None:
    """One line on what happened to a video's frames; nothing for images and failures."""
    video = result.video
    if video is None or result.outcome is Outcome.ERROR or result.path is None:
        return
    encoded = f", encoded with {shown(video.encoder)} (CRF {video.crf})" if video.encoder else ""
    stdout.print(
        f"video {shown(path_text(result.path.name))}: {video.frames} frames, "
        f"faces covered on {video.frames_with_faces} "
        f"({video.detections} detections, {video.regions - video.detections} boxes carried between frames)"
        f"{encoded}",
        highlight=False,
    )


def print_summary(
    run_id: str,
    summary: RunSummary,
    counts: Counter[Outcome],
    *,
    uncertain: int = 0,
    dry_run_with_faces: int = 0,
) -> None:
    """The totals of an ``anonymize`` run, and how many files are worth a look. Every file taken is in one
    column (anonymized, no faces, skipped, not media, errors; a dry run's: with faces, no faces)."""
    table = Table(title=f"efface run {run_id}", show_header=True, header_style="bold")
    dry = counts[Outcome.DRY_RUN]
    if dry:
        columns = {"with faces (dry run)": dry_run_with_faces, "no faces": dry - dry_run_with_faces}
    else:
        columns = {"anonymized": counts[Outcome.ANONYMIZED], "no faces": counts[Outcome.NO_FACES]}
    columns |= {
        "skipped": counts[Outcome.SKIPPED],
        "not media": counts[Outcome.NOT_MEDIA],
        "errors": summary.files_failed,
    }
    headers = ("files", *columns, "faces found", "faces anonymized", "time")
    for column in headers:
        table.add_column(column, justify="right")
    table.add_row(
        str(summary.files_total + counts[Outcome.NOT_MEDIA]),
        *(str(value) for value in columns.values()),
        str(summary.faces_detected),
        str(summary.faces_anonymized),
        f"{summary.duration_s:.2f} s",
    )
    stdout.print(table)
    if dry:
        stdout.print(f"dry run: {dry} file(s) analysed, nothing written")
    if counts[Outcome.LEFTOVER_REMOVED]:
        stdout.print(f"removed {counts[Outcome.LEFTOVER_REMOVED]} temporary file(s) left by an interrupted run")
    if counts[Outcome.SKIPPED]:
        stdout.print(
            f"skipped {counts[Outcome.SKIPPED]} file(s) already anonymized by an earlier run (--force redoes them)"
        )
    not_media = counts[Outcome.NOT_MEDIA]
    if not_media:
        files_are = "1 file is" if not_media == 1 else f"{not_media} files are"
        stdout.print(f"{files_are} not pictures or videos: looked at, audited as not_media, left as they are")
    if uncertain:
        files_have = "1 file has" if uncertain == 1 else f"{uncertain} files have"
        stdout.print(
            f"{files_have} faint candidates worth a look (boxes the detector was unsure of and did not anonymize, "
            f"or video frames its tracker bridged): efface audit list --run {run_id[:12]} --uncertain",
            highlight=False,
            soft_wrap=True,
        )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_coverage(
    validation_id: str, run: CoverageRun, settings: Settings, *, subset: WiderSubset | None = None
) -> None:
    """Which faces were counted, recall and coverage by face height, then the other figures of a coverage run."""
    from efface.verify.metrics import HeightBin

    report = run.report
    counted = f"the WIDER {subset.value} subset" if subset is not None else "every annotated face"
    title = (
        f"coverage of {counted} ({settings.preset.value} preset, threshold {report.score_threshold:g}), "
        f"validation {validation_id[:12]}"
    )
    if subset is None:
        stdout.print(
            "faces counted: every annotated face, of every difficulty (the README's headline is the WIDER hard "
            "subset: add --subset hard --difficulty FILE)",
            highlight=False,
            soft_wrap=True,
        )
    else:
        stdout.print(f"faces counted: the WIDER {subset.value} subset (--subset {subset.value})", highlight=False)
    table = Table(title=title, header_style="bold")
    for column in ("face height", "faces", "found", "recall", "covered >= 70 %", "mean covered"):
        table.add_column(column, justify="right")
    for height_bin in HeightBin:
        found = report.found_by_height[height_bin]
        covered = report.covered_by_height[height_bin]
        table.add_row(
            height_bin.value,
            str(found.total),
            str(found.found),
            _share(found.share),
            _share(covered.share),
            _share(covered.mean_fraction),
        )
    stdout.print(table)
    stdout.print(
        f"images {report.images}, ignored faces {report.ignored_faces}, false positives per image "
        f"{report.fp_per_image:.2f}, AP (WIDER protocol, IoU 0.5) {_share(report.ap)}, "
        f"{run.images_per_s:.2f} images/s (detection {run.detection_s / max(report.images, 1):.3f} s/image), "
        f"anonymized pixels outside any annotated face {_share(report.over_redaction_share)}"
    )


def print_strength(validation_id: str, report: StrengthReport, recognizers: Sequence[FaceRecognizer]) -> None:
    """Rank-1 identification per treatment and attacker, then the per-identity figures."""
    from efface.verify.strength import Attacker

    table = Table(
        title=f"rank-1 identification ({report.identities} people, {report.probes} probes, gallery "
        f"{report.gallery_size}), validation {validation_id[:12]}",
        header_style="bold",
    )
    table.add_column("treatment")
    columns = [(r.name, attacker) for r in recognizers for attacker in (Attacker.NAIVE, Attacker.INFORMED)]
    for name, attacker in columns:
        table.add_column(f"{name} {attacker.value}", justify="right")
    configured = {row.treatment for row in report.rows if row.is_configured}
    for label in dict.fromkeys(row.treatment for row in report.rows):
        cells = []
        for name, attacker in columns:
            value: float | None
            try:
                value = report.rank1(label, name, attacker)
            except KeyError:
                value = report.rank1(label, name, None) if attacker is Attacker.NAIVE else None
            cells.append("-" if value is None else f"{value:.3f}")
        table.add_row(shown(label + (" (configured)" if label in configured else "")), *cells)
    table.add_row("chance", *[f"{report.chance:.3f}"] * len(columns))
    stdout.print(table)
    for row in report.rows:
        if (row.is_configured or row.treatment == "solid fill") and row.rank1_per_identity is not None:
            stdout.print(
                f"{'configured' if row.is_configured else 'solid fill'}, {row.recognizer} "
                f"{row.attacker.value if row.attacker else ''}: rank-1 averaged per identity "
                f"{row.rank1_per_identity:.3f} (chance {report.chance:.3f})",
                highlight=False,
            )


def stored_json(record: StoredRun | StoredFile) -> dict[str, object]:
    """An audit row as a JSON object, every field; times in ISO 8601 with ``Z``, as ``audit export`` writes them."""
    fields = {name: getattr(record, name) for name in record.__dataclass_fields__}
    return {name: iso_time(value) if isinstance(value, datetime) else value for name, value in fields.items()}


def print_runs(runs: Sequence[StoredRun]) -> None:
    """Runs, one row each."""
    table = Table(title="efface runs", header_style="bold")
    for column in ("run", "started (UTC)", "command", "mode", "status", "files", "errors", "faces", "anonymized"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.run_id[:12],
            run.started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            shown(run.command),
            str(run.mode),
            str(run.status),
            str(run.files_total),
            str(run.files_failed),
            str(run.faces_detected),
            str(run.faces_anonymized),
        )
    stdout.print(table)


_RUN_FIELDS = (
    "started_at",
    "finished_at",
    "status",
    "command",
    "mode",
    "efface_version",
    "hostname",
    "model_name",
    "model_sha256",
    "files_total",
    "files_failed",
    "faces_detected",
    "faces_anonymized",
    "duration_s",
)


def print_run(run: StoredRun, files: Sequence[StoredFile]) -> None:
    """One run's fields and settings, then its files."""
    head = Table(show_header=False, title=f"run {shown(run.run_id)}")
    head.add_column("field", style="bold")
    head.add_column("value")
    for name in _RUN_FIELDS:
        value = getattr(run, name)
        head.add_row(name, shown(iso_time(value) if isinstance(value, datetime) else value))
    for name, value in _flattened(run.settings):
        head.add_row(f"settings.{name}", shown(value))
    stdout.print(head)
    print_files(files, title="files")


def _flattened(settings: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Settings as (dotted name, value) rows: a nested table by its keys, a list or value as compact JSON."""
    for name in sorted(settings):
        value = settings[name]
        if isinstance(value, Mapping) and value:
            yield from _flattened(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def print_files(files: Sequence[StoredFile], *, title: str) -> None:
    """Files, one row each."""
    table = Table(title=title, header_style="bold")
    for column in (
        "run",
        "path",
        "outcome",
        "faces",
        "anonymized",
        "unsure",
        "format",
        "size",
        "time (s)",
        "output sha256",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for row in files:
        table.add_row(
            row.run_id[:12],
            shown(row.path if row.path is not None else f"request {row.request_id}"),
            str(row.outcome),
            str(row.faces_detected),
            str(row.faces_anonymized),
            str(row.uncertain) if row.uncertain is not None else "",
            shown(row.image_format or ""),
            f"{row.width}x{row.height}" if row.width else "",
            f"{row.duration_s:.3f}",
            (row.output_sha256 or "")[:16],
            shown(f"{row.error_class}: {row.error_message}") if row.error_class else "",
        )
    stdout.print(table)


def print_chain(report: ChainReport) -> None:
    """``chain intact`` with the totals on stdout, or the first finding on stderr and a table of them."""
    keyed = f"{report.keyed_rows:,} keyed" if report.keyed_rows else "not keyed"
    summary = (
        f"{report.rows:,} chain rows ({keyed}), {report.records_checked:,} records checked, {report.prunes} prunes; "
        f"head {report.head_seq} {report.head_hash}"
    )
    if report.is_intact:
        stdout.print(f"[green]chain intact:[/green] {shown(summary)}", highlight=False, soft_wrap=True)
        return
    first = report.first_break
    stderr.print(
        f"[bold red]chain BROKEN:[/bold red] {report.breaks_total:,} findings; the first: "
        f"{shown(first.message if first else '?')}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title=shown(summary), header_style="bold")
    for column in ("finding", "table", "row", "chain row", "what"):
        table.add_column(column, overflow="fold")
    for found in report.breaks[:20]:
        # The rows of a tampered log hold whatever was written into them.
        table.add_row(
            found.kind.value, shown(found.table), shown(found.row_id), str(found.seq or "-"), shown(found.message)
        )
    stdout.print(table)


def key_json(key: ApiKey) -> dict[str, object]:
    """An API key's record (never the key itself) as a JSON object."""
    return {
        "key_id": key.key_id,
        "name": key.name,
        "created_at": iso_time(key.created_at),
        "revoked_at": iso_time(key.revoked_at) if key.revoked_at else None,
        "rate_limit_per_min": key.rate_limit_per_min,
    }


def print_keys(keys: Sequence[ApiKey]) -> None:
    """API keys, one row each."""
    table = Table(title="API keys", header_style="bold")
    for column in ("key id", "name", "created (UTC)", "revoked (UTC)", "requests/min"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            shown(key.key_id),
            shown(key.name),
            key.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else "",
            str(key.rate_limit_per_min) if key.rate_limit_per_min else "server default",
        )
    stdout.print(table)
