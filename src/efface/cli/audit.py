"""``efface audit``: list, show, export, verify, prune and report on the audit log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from efface import __version__
from efface.audit import AuditStore, StoredFile, StoredRun
from efface.audit.export import ExportFormat, export_records
from efface.audit.query import AuditTable, RecordFilter, column_types, parse_age, parse_time, time_ago
from efface.cli._options import (
    EXIT_FILES_FAILED,
    ConfigOption,
    DbOption,
    fail_setup,
    load,
    open_store,
    or_exit,
    with_default,
)
from efface.cli._render import (
    print_chain,
    print_files,
    print_run,
    print_runs,
    shown,
    stderr,
    stdout,
    stored_json,
)
from efface.errors import AuditError, EffaceError, OutputError
from efface.records import Outcome
from efface.text import path_text

__all__ = ["audit_app"]

audit_app = typer.Typer(help="Read, verify, export, report on and prune the audit log.", no_args_is_help=True)

RunFilterOption = Annotated[
    str | None,
    typer.Option("--run", metavar="RUN_ID", help="Only this run: an id, a unique prefix of one, or 'latest'."),
]
SinceOption = Annotated[
    datetime | None,
    typer.Option(
        parser=parse_time,
        metavar="WHEN",
        help="From this time on: a date, a date-time (UTC unless it has an offset) or an age such as 30d.",
    ),
]
UntilOption = Annotated[
    datetime | None, typer.Option(parser=parse_time, metavar="WHEN", help="Before this time (same forms as --since).")
]
OutcomeOption = Annotated[
    list[Outcome] | None, typer.Option("--outcome", help="Only files with this outcome (repeatable).")
]
PathGlobOption = Annotated[
    str | None, typer.Option("--path", metavar="GLOB", help="Only files whose whole path matches: * ? [...].")
]
UncertainOption = Annotated[
    bool,
    typer.Option(
        "--uncertain",
        help="Only files the detector was unsure of (faint candidates it did not anonymize, video frames its "
        "tracker bridged): the ones worth a look.",
    ),
]


def _find_run(store: AuditStore, run_id: str) -> StoredRun:
    if run_id != "latest":
        return store.get_run(run_id)
    runs = store.list_runs(limit=1)
    if not runs:
        raise AuditError("the audit log holds no run yet")
    return runs[0]


def _record_filter(
    store: AuditStore,
    *,
    run: str | None,
    since: datetime | None,
    until: datetime | None,
    outcomes: list[Outcome] | None,
    path_glob: str | None,
    is_uncertain: bool = False,
) -> RecordFilter:
    run_id = or_exit(lambda: _find_run(store, run).run_id) if run else None
    return RecordFilter(
        run_id=run_id,
        since=since,
        until=until,
        outcomes=tuple(outcomes or ()),
        path_glob=path_glob,
        is_uncertain=is_uncertain,
    )


@audit_app.command("list")
def audit_list(
    db: DbOption = None,
    limit: Annotated[int, typer.Option(min=1, help="How many rows, newest first.")] = 20,
    show_files: Annotated[bool, typer.Option("--files", help="List files instead of runs.")] = False,
    run: RunFilterOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    outcome: OutcomeOption = None,
    path: PathGlobOption = None,
    uncertain: UncertainOption = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """List recent runs; with --files, --run, --outcome, --path or --uncertain, the files they recorded."""
    settings = load(config, db_url=db)
    is_files = show_files or bool(run or outcome or path or uncertain)
    with open_store(settings) as store:
        record_filter = _record_filter(
            store, run=run, since=since, until=until, outcomes=outcome, path_glob=path, is_uncertain=uncertain
        )
        files: list[StoredFile] = []
        runs: list[StoredRun] = []
        if is_files:
            files = or_exit(lambda: store.find_files(record_filter, limit=limit))
        else:
            runs = or_exit(lambda: store.list_runs(limit=limit, record_filter=record_filter))
    if json_output:
        records: list[StoredRun] | list[StoredFile] = files if is_files else runs
        typer.echo(json.dumps([stored_json(record) for record in records], default=str, indent=2))
    elif is_files:
        print_files(files, title="efface files")
    else:
        print_runs(runs)


@audit_app.command("show")
def audit_show(
    run_id: Annotated[str, typer.Argument(help="A run id, a unique prefix of one, or 'latest'.")],
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show one run and every file it touched."""
    settings = load(config, db_url=db)
    with open_store(settings) as store:
        run = or_exit(lambda: _find_run(store, run_id))
        files = or_exit(lambda: store.list_files(run.run_id))
    if json_output:
        document = {"run": stored_json(run), "files": [stored_json(f) for f in files]}
        typer.echo(json.dumps(document, default=str, indent=2))
        return
    print_run(run, files)


@audit_app.command("export")
def audit_export(
    export_format: Annotated[ExportFormat, typer.Option("--format", help="csv, jsonl or parquet.")],
    out: Annotated[
        Path | None, typer.Option("--out", help=with_default("The file to write.", "standard output"))
    ] = None,
    table: Annotated[AuditTable, typer.Option("--table", help="What to export.")] = AuditTable.FILES,
    run: RunFilterOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    outcome: OutcomeOption = None,
    path: PathGlobOption = None,
    uncertain: UncertainOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Export audit rows, streamed (memory stays constant for millions of rows), oldest first."""
    settings = load(config, db_url=db)
    with open_store(settings) as store:
        record_filter = _record_filter(
            store, run=run, since=since, until=until, outcomes=outcome, path_glob=path, is_uncertain=uncertain
        )
        try:
            records = store.iter_records(table, record_filter)
            rows = export_records(records, column_types(table), export_format, out=out)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        except EffaceError as exc:
            raise fail_setup(exc) from exc
    destination = f" to {shown(path_text(out))}" if out else ""
    stderr.print(f"exported {rows:,} {table.value} rows{destination}", highlight=False)


@audit_app.command("verify")
def audit_verify(
    expect: Annotated[
        list[str] | None,
        typer.Option("--expect", metavar="HASH", help="A head hash noted earlier that must still be in the chain."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Walk the hash chain: exit 0 when every row is intact, 1 naming the first altered, deleted or inserted row.

    Set EFFACE_AUDIT_KEY to the key the log was written with to check keyed rows.
    """
    settings = load(config, db_url=db)
    with open_store(settings) as store:
        report = or_exit(lambda: store.verify(expected_hashes=expect or ()))
    if json_output:
        document = {name: getattr(report, name) for name in report.__dataclass_fields__}
        document["is_intact"] = report.is_intact
        document["breaks"] = [{n: getattr(b, n) for n in b.__dataclass_fields__} for b in report.breaks]
        typer.echo(json.dumps(document, default=str, indent=2))
    else:
        print_chain(report)
    if not report.is_intact:
        raise typer.Exit(EXIT_FILES_FAILED)


@audit_app.command("prune")
def audit_prune(
    older_than: Annotated[
        timedelta, typer.Option("--older-than", parser=parse_age, metavar="AGE", help="e.g. 365d, 52w or 48h.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be removed; remove nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    even_if_broken: Annotated[
        bool, typer.Option("--even-if-broken", help="Prune even when the chain does not verify.")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove finished runs (with their files) and validations older than AGE; the prune is itself a chain event."""
    settings = load(config, db_url=db)
    try:
        cutoff = time_ago(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--older-than'") from exc
    with open_store(settings) as store:
        if not even_if_broken:
            report = or_exit(store.verify)
            if not report.is_intact:
                print_chain(report)
                stderr.print("refusing to prune a log that does not verify (--even-if-broken overrides)")
                raise typer.Exit(EXIT_FILES_FAILED)
        planned = or_exit(lambda: store.prune(older_than=cutoff, is_dry_run=True))
        what = (
            f"{planned.runs:,} runs, {planned.files:,} files and {planned.validations:,} validations "
            f"older than {cutoff:%Y-%m-%d %H:%M} UTC"
        )
        if dry_run:
            stdout.print(f"would remove {what}", highlight=False)
            return
        if not yes and not typer.confirm(f"Remove {what}?"):
            raise typer.Exit(EXIT_FILES_FAILED)
        done = or_exit(lambda: store.prune(older_than=cutoff))
    stdout.print(
        f"removed {done.runs:,} runs, {done.files:,} files and {done.validations:,} validations; recorded as chain "
        f"row {done.seq} ({done.chain_rows:,} chain rows marked pruned)",
        highlight=False,
    )


@audit_app.command("report")
def audit_report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    run: Annotated[
        str | None,
        typer.Option("--run", metavar="RUN_ID", help="Report on this run only (an id, a prefix, or 'latest')."),
    ] = None,
    since: SinceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a self-contained HTML report for a data-protection officer: what was processed, settings and model,
    totals and errors, the latest validations, plots, the chain's status and the checklist with its evidence.
    """
    # The report's code (and the plotting it draws with) is loaded by this command alone.
    from efface.audit.report import build_report, render_html
    from efface.audit.summary import ReportScope

    if run and since:
        raise typer.BadParameter("give --run or --since, not both")
    settings = load(config, db_url=db)
    with open_store(settings) as store:
        scope = ReportScope(run_id=or_exit(lambda: _find_run(store, run).run_id) if run else None, since=since)
        data = or_exit(lambda: build_report(store, scope, efface_version=__version__))
    page = or_exit(lambda: render_html(data))
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise fail_setup(OutputError(f"cannot write the report: {exc.strerror or exc}", path=out)) from exc
    stdout.print(f"report written to {shown(path_text(out))}", highlight=False)
    files, requests = data.activity.files, data.activity.requests
    stdout.print(
        f"  {files.taken:,} file(s) ({files.failed_total:,} failed), {files.refused_total:,} path(s) refused, "
        f"{data.activity.dry_run_files.total:,} file(s) in dry runs, {requests.total:,} request(s) "
        f"({requests.failed_total:,} failed, {requests.refused_total:,} refused); each counted once",
        highlight=False,
    )
    for item in data.checklist:
        stdout.print(f"  {item.status.value:>8}  {shown(item.title)}", highlight=False)
