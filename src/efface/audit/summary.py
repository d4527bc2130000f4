"""What the audit log says about a set of runs, aggregated in SQL (for the report): totals, models and settings,
error causes, faces per file and files over time. Works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from efface.audit.chain import canonical_json
from efface.audit.tables import files, runs
from efface.records import Outcome, RunStatus, WriteMode

__all__ = ["ActivitySummary", "ErrorCause", "ModelUse", "ReportScope", "TimeUnit", "summarize"]

# Runs listed one by one in a report; the totals count them all.
MAX_LISTED_RUNS = 200
# Distinct model and settings combinations shown.
MAX_MODEL_USES = 20
# Faces per file at or above this share one histogram bar.
FACES_HISTOGRAM_CAP = 20


@dataclass(frozen=True, slots=True)
class ReportScope:
    """Which runs a report covers: one run, the runs started since a time, or every run.

    Attributes:
        run_id: one run's full id.
        since: runs started at or after this time (UTC).
    """

    run_id: str | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        if self.run_id is not None and self.since is not None:
            raise ValueError("a report covers one run or the runs since a date, not both")
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError(f"since must be timezone-aware, got {self.since.isoformat()}")

    def describe(self) -> str:
        if self.run_id is not None:
            return f"run {self.run_id}"
        if self.since is not None:
            return f"runs started since {self.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        return "every run in the audit log"

    def where(self) -> sa.ColumnElement[bool]:
        if self.run_id is not None:
            return runs.c.run_id == self.run_id
        if self.since is not None:
            return runs.c.started_at >= self.since
        return sa.true()


@dataclass(frozen=True, slots=True)
class ModelUse:
    """One detector and settings combination used by runs in scope.

    Attributes:
        model_name / model_sha256: the detector and the sha256 of its weights.
        efface_versions: the versions that ran it.
        settings: the audited settings.
        runs: how many runs used it.
        first_started_at / last_started_at: when it was first and last used.
    """

    model_name: str
    model_sha256: str
    efface_versions: tuple[str, ...]
    settings: dict[str, Any]
    runs: int
    first_started_at: datetime
    last_started_at: datetime


@dataclass(frozen=True, slots=True)
class ErrorCause:
    """Files that failed with one error class: how many, and one example (its path, or ``request <id>`` for a
    request to the HTTP service)."""

    error_class: str
    files: int
    example_message: str
    example_path: str


class TimeUnit(StrEnum):
    """The width of one bar of the activity plot."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class ActivitySummary:
    """The aggregates of a report.

    Attributes:
        runs: the newest runs in scope (at most ``MAX_LISTED_RUNS``), each as its row.
        runs_total: runs in scope.
        runs_by_mode / runs_by_status: runs in scope per write mode and final status.
        files_by_outcome / files_by_mode: files in scope per outcome and per write mode.
        faces_detected / faces_anonymized: summed over files in scope.
        first_file_at / last_file_at: the time range of the files.
        errors: error causes, most frequent first.
        models: detector and settings combinations, most used first.
        faces_per_file: ``(faces, files)``, files that were examined (not errors or leftovers); the last bucket
            holds files with ``FACES_HISTOGRAM_CAP`` faces or more.
        activity_unit: the bucket width of ``activity``.
        activity: ``(bucket start, {outcome: files})`` in time order.
    """

    runs: tuple[dict[str, Any], ...]
    runs_total: int
    runs_by_mode: dict[WriteMode, int]
    runs_by_status: dict[RunStatus, int]
    files_by_outcome: dict[Outcome, int]
    files_by_mode: dict[WriteMode, int]
    faces_detected: int
    faces_anonymized: int
    first_file_at: datetime | None
    last_file_at: datetime | None
    errors: tuple[ErrorCause, ...]
    models: tuple[ModelUse, ...]
    faces_per_file: tuple[tuple[int, int], ...]
    activity_unit: TimeUnit
    activity: tuple[tuple[datetime, dict[Outcome, int]], ...] = field(default=())

    @property
    def files_total(self) -> int:
        return sum(count for outcome, count in self.files_by_outcome.items() if outcome.is_counted)

    @property
    def files_failed(self) -> int:
        return self.files_by_outcome.get(Outcome.ERROR, 0)


def _unit_for(first: datetime | None, last: datetime | None) -> TimeUnit:
    if first is None or last is None or last - first <= timedelta(days=3):
        return TimeUnit.HOUR
    if last - first <= timedelta(days=180):
        return TimeUnit.DAY
    return TimeUnit.MONTH


_BUCKET_LENGTH = {TimeUnit.HOUR: 13, TimeUnit.DAY: 10, TimeUnit.MONTH: 7}
_BUCKET_PG_FORMAT = {TimeUnit.HOUR: "YYYY-MM-DD HH24", TimeUnit.DAY: "YYYY-MM-DD", TimeUnit.MONTH: "YYYY-MM"}
_BUCKET_PARSE = {TimeUnit.HOUR: "%Y-%m-%d %H", TimeUnit.DAY: "%Y-%m-%d", TimeUnit.MONTH: "%Y-%m"}


def _bucket(connection: Connection, unit: TimeUnit) -> sa.ColumnElement[str]:
    """The start of a file's time bucket as text, in UTC."""
    if connection.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", files.c.started_at), _BUCKET_PG_FORMAT[unit])
    # SQLite stores UTC times as 'YYYY-MM-DD HH:MM:SS.ffffff': a bucket is a prefix.
    return sa.func.substr(sa.type_coerce(files.c.started_at, sa.String()), 1, _BUCKET_LENGTH[unit])


def summarize(connection: Connection, scope: ReportScope) -> ActivitySummary:
    """Aggregates the runs in scope and their files."""
    in_scope = scope.where()
    scoped_files = files.c.run_id.in_(sa.select(runs.c.run_id).where(in_scope))
    count = sa.func.count()

    listed = connection.execute(
        sa.select(runs).where(in_scope).order_by(runs.c.started_at.desc(), runs.c.run_id).limit(MAX_LISTED_RUNS)
    )
    run_rows = tuple(dict(row) for row in listed.mappings())
    runs_by_mode: dict[WriteMode, int] = {}
    runs_by_status: dict[RunStatus, int] = {}
    for mode, status, n in connection.execute(
        sa.select(runs.c.mode, runs.c.status, count).where(in_scope).group_by(runs.c.mode, runs.c.status)
    ):
        runs_by_mode[WriteMode(mode)] = runs_by_mode.get(WriteMode(mode), 0) + n
        runs_by_status[RunStatus(status)] = runs_by_status.get(RunStatus(status), 0) + n

    files_by_outcome: dict[Outcome, int] = {}
    files_by_mode: dict[WriteMode, int] = {}
    faces_detected = faces_anonymized = 0
    totals = sa.select(
        files.c.outcome,
        files.c.mode,
        count,
        sa.func.coalesce(sa.func.sum(files.c.faces_detected), 0),
        sa.func.coalesce(sa.func.sum(files.c.faces_anonymized), 0),
    ).where(scoped_files)
    for outcome, mode, n, detected, anonymized in connection.execute(totals.group_by(files.c.outcome, files.c.mode)):
        files_by_outcome[Outcome(outcome)] = files_by_outcome.get(Outcome(outcome), 0) + n
        files_by_mode[WriteMode(mode)] = files_by_mode.get(WriteMode(mode), 0) + n
        faces_detected += int(detected)
        faces_anonymized += int(anonymized)
    first_at, last_at = connection.execute(
        sa.select(sa.func.min(files.c.started_at), sa.func.max(files.c.started_at)).where(scoped_files)
    ).one()

    # A request to the HTTP service has no path: it is named by its request id.
    example = sa.func.coalesce(files.c.path, sa.literal("request ") + files.c.request_id)
    errors = tuple(
        ErrorCause(error_class or "unknown", n, message or "", path or "")
        for error_class, n, message, path in connection.execute(
            sa.select(files.c.error_class, count, sa.func.min(files.c.error_message), sa.func.min(example))
            .where(scoped_files, files.c.outcome == Outcome.ERROR.value)
            .group_by(files.c.error_class)
            .order_by(count.desc(), files.c.error_class)
        )
    )

    examined = (Outcome.ANONYMIZED.value, Outcome.NO_FACES.value, Outcome.DRY_RUN.value)
    capped = sa.case((files.c.faces_detected >= FACES_HISTOGRAM_CAP, FACES_HISTOGRAM_CAP), else_=files.c.faces_detected)
    histogram = tuple(
        (int(faces), int(n))
        for faces, n in connection.execute(
            sa.select(capped.label("faces"), count)
            .where(scoped_files, files.c.outcome.in_(examined))
            .group_by(capped)
            .order_by(capped)
        )
    )

    unit = _unit_for(first_at, last_at)
    bucket = _bucket(connection, unit).label("bucket")
    per_bucket: dict[datetime, dict[Outcome, int]] = {}
    for text, outcome, n in connection.execute(
        sa.select(bucket, files.c.outcome, count).where(scoped_files).group_by(bucket, files.c.outcome).order_by(bucket)
    ):
        start = datetime.strptime(text, _BUCKET_PARSE[unit]).replace(tzinfo=UTC)
        per_bucket.setdefault(start, {})[Outcome(outcome)] = n

    return ActivitySummary(
        runs=run_rows,
        runs_total=sum(runs_by_mode.values()),
        runs_by_mode=runs_by_mode,
        runs_by_status=runs_by_status,
        files_by_outcome=files_by_outcome,
        files_by_mode=files_by_mode,
        faces_detected=faces_detected,
        faces_anonymized=faces_anonymized,
        first_file_at=first_at,
        last_file_at=last_at,
        errors=errors,
        models=_model_uses(connection, in_scope),
        faces_per_file=histogram,
        activity_unit=unit,
        activity=tuple(sorted(per_bucket.items())),
    )


def _model_uses(connection: Connection, in_scope: sa.ColumnElement[bool]) -> tuple[ModelUse, ...]:
    # Settings are JSON, which PostgreSQL cannot group by: the runs are grouped here, streamed.
    query = sa.select(
        runs.c.model_name, runs.c.model_sha256, runs.c.efface_version, runs.c.settings, runs.c.started_at
    ).where(in_scope)
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in connection.execute(query, execution_options={"yield_per": 1_000}).mappings():
        key = (row["model_name"], row["model_sha256"], canonical_json(row["settings"]))
        group = groups.setdefault(
            key, {"settings": row["settings"], "versions": set(), "runs": 0, "first": row["started_at"]}
        )
        group["versions"].add(row["efface_version"])
        group["runs"] += 1
        group["first"] = min(group["first"], row["started_at"])
        group["last"] = max(group.get("last", row["started_at"]), row["started_at"])
    uses = [
        ModelUse(
            model_name=name,
            model_sha256=sha256,
            efface_versions=tuple(sorted(group["versions"])),
            settings=group["settings"],
            runs=group["runs"],
            first_started_at=group["first"],
            last_started_at=group["last"],
        )
        for (name, sha256, _), group in groups.items()
    ]
    uses.sort(key=lambda use: (-use.runs, use.last_started_at))
    return tuple(uses[:MAX_MODEL_USES])
