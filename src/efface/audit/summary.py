"""What the audit log says about a set of runs, aggregated in SQL (for the report): totals, models and settings,
error causes, faces per file and files over time. Works the same on SQLite and PostgreSQL.

The accounting (``Tally``) counts inputs, not audit rows: each file once, by its path and the state its latest row
gives it (a file that failed and was anonymized on a retry is anonymized), with dry runs apart (they change
nothing) and requests to the HTTP service apart (they are no file). An error is a refusal when the input was never
something efface could take (``FILE_REFUSALS``, ``REQUEST_REFUSALS``), else a failure: a file efface tried and
could not anonymize. An outcome the accounting does not know is kept under its own name, never dropped.
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

__all__ = [
    "FILE_REFUSALS",
    "REQUEST_REFUSALS",
    "SETTLED_OUTCOMES",
    "ActivitySummary",
    "ErrorCause",
    "ModelUse",
    "ReportScope",
    "Tally",
    "TimeUnit",
    "summarize",
]

# Runs listed one by one in a report; the totals count them all.
MAX_LISTED_RUNS = 200
# Distinct model and settings combinations shown.
MAX_MODEL_USES = 20
# Faces per file at or above this share one histogram bar.
FACES_HISTOGRAM_CAP = 20

# Errors, by the class name the rows hold, that mean the input was never a file efface could take.
# A path that names nothing (a typo, a dangling link, a folder without a picture or video).
FILE_REFUSALS = frozenset({"InputNotFoundError"})
# A request the service answered 4xx (the client's to fix: its key, its upload, its options) or refused as busy
# before taking it; the uploader keeps its image and nothing is stored. A 5xx is a failure. (A test holds this
# to ``efface.service.errors.http_status``.)
REQUEST_REFUSALS = frozenset(
    {
        "ConfigurationError",
        "CorruptImageError",
        "ImageTooLargeError",
        "InputError",
        "InputNotFoundError",
        "InvalidApiKeyError",
        "InvalidOptionError",
        "MalformedRequestError",
        "RateLimitExceededError",
        "RequestRejectedError",
        "ServerBusyError",
        "UnreadableFileError",
        "UnsupportedFormatError",
        "UploadTimeoutError",
        "UploadTooLargeError",
        "WeakTransformError",
    }
)
# Outcomes of an input that went through without error and whose meaning the report knows; any other outcome but
# an error is shown under its own name and judged for review.
SETTLED_OUTCOMES = frozenset({Outcome.ANONYMIZED, Outcome.NO_FACES, Outcome.SKIPPED, Outcome.DRY_RUN})


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
    """Inputs (files, requests) that ended with one error class: how many, and one example (its path, or
    ``request <id>`` for a request to the HTTP service)."""

    error_class: str
    files: int
    example_message: str
    example_path: str


@dataclass(frozen=True, slots=True)
class Tally:
    """Inputs of one kind (files, files in dry runs, requests), each counted once, by its latest state.

    Attributes:
        by_outcome: inputs per latest outcome, errors apart; keyed by the outcome's value, so an outcome this
            version does not know is kept under its own name.
        failed: inputs whose latest row is a failure, per error class, most frequent first.
        refused: inputs whose latest row is a refusal (never something efface could take), per error class.
    """

    by_outcome: dict[str, int] = field(default_factory=dict)
    failed: tuple[ErrorCause, ...] = ()
    refused: tuple[ErrorCause, ...] = ()

    @property
    def failed_total(self) -> int:
        return sum(cause.files for cause in self.failed)

    @property
    def refused_total(self) -> int:
        return sum(cause.files for cause in self.refused)

    @property
    def taken(self) -> int:
        """Inputs efface took: every one but the refused."""
        return sum(self.by_outcome.values()) + self.failed_total

    @property
    def total(self) -> int:
        return self.taken + self.refused_total

    @property
    def unaccounted(self) -> dict[str, int]:
        """Inputs in a state whose meaning the report does not know (a newer outcome), by that state's name."""
        return {name: n for name, n in self.by_outcome.items() if name not in SETTLED_OUTCOMES}


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
        files_by_outcome: audit rows of files in scope per outcome (an unknown outcome under its own name).
        files_by_mode: distinct inputs efface took (files by path, requests) per write mode, leftovers and
            refusals apart.
        files / dry_run_files / requests: the accounting of files written or tried, files in dry runs, and
            requests to the HTTP service: each input once, by its latest state.
        faces_detected / faces_anonymized: summed over the file rows in scope.
        first_file_at / last_file_at: the time range of the files.
        errors: error causes, most frequent first.
        models: detector and settings combinations, most used first.
        faces_per_file: ``(faces, files)``, files that were examined (not errors or leftovers); the last bucket
            holds files with ``FACES_HISTOGRAM_CAP`` faces or more.
        activity_unit: the bucket width of ``activity``.
        activity: ``(bucket start, {outcome: files})`` in time order.
        uncertain_files: files (by path, their latest row) with something the detector was unsure of: faint
            candidates it did not anonymize, video frames its tracker bridged.
        uncertainty_recorded: files (by path, their latest row) for which that was recorded at all.
        selective_rows: file and request rows anonymized selectively (``--keep-person``, ``--only-person``).
        faces_kept_by_identity: faces (a video's tracks) those rows left visible on purpose, by identity.
    """

    runs: tuple[dict[str, Any], ...]
    runs_total: int
    runs_by_mode: dict[WriteMode, int]
    runs_by_status: dict[RunStatus, int]
    files_by_outcome: dict[Outcome | str, int]
    files_by_mode: dict[WriteMode, int]
    faces_detected: int
    faces_anonymized: int
    first_file_at: datetime | None
    last_file_at: datetime | None
    errors: tuple[ErrorCause, ...]
    models: tuple[ModelUse, ...]
    faces_per_file: tuple[tuple[int, int], ...]
    activity_unit: TimeUnit
    activity: tuple[tuple[datetime, dict[Outcome | str, int]], ...] = field(default=())
    files: Tally = field(default_factory=Tally)
    dry_run_files: Tally = field(default_factory=Tally)
    requests: Tally = field(default_factory=Tally)
    uncertain_files: int = 0
    uncertainty_recorded: int = 0
    selective_rows: int = 0
    faces_kept_by_identity: int = 0

    @property
    def files_total(self) -> int:
        """Distinct files efface took (refused paths, dry runs, requests and files that are not media apart)."""
        return self.files.taken

    @property
    def files_failed(self) -> int:
        """Distinct files whose latest state is a failure: left as they were, not anonymized."""
        return self.files.failed_total


def _outcome(value: str) -> Outcome | str:
    """The outcome of a row; one this version does not know stays its name."""
    try:
        return Outcome(value)
    except ValueError:
        return value


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
    # A pending row is the intent before a replace, never a file's state: the row that settles it (the file's own
    # row, or the next run's settlement) is the one counted.
    scoped_files = sa.and_(
        files.c.run_id.in_(sa.select(runs.c.run_id).where(in_scope)), files.c.outcome != Outcome.PENDING.value
    )
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

    files_by_outcome: dict[Outcome | str, int] = {}
    files_by_mode: dict[WriteMode, int] = {}
    faces_detected = faces_anonymized = 0
    totals = sa.select(
        files.c.outcome,
        count,
        sa.func.coalesce(sa.func.sum(files.c.faces_detected), 0),
        sa.func.coalesce(sa.func.sum(files.c.faces_anonymized), 0),
    ).where(scoped_files)
    for outcome, n, detected, anonymized in connection.execute(totals.group_by(files.c.outcome)):
        files_by_outcome[_outcome(outcome)] = n
        faces_detected += int(detected)
        faces_anonymized += int(anonymized)
    # Leftovers removed and files that are not pictures or videos are rows of a run, not inputs it took.
    taken = sa.and_(scoped_files, files.c.outcome.not_in([Outcome.LEFTOVER_REMOVED.value, Outcome.NOT_MEDIA.value]))
    is_file, is_dry_run = files.c.path.is_not(None), files.c.mode == WriteMode.DRY_RUN.value
    is_refused = sa.or_(
        sa.and_(is_file, files.c.error_class.in_(sorted(FILE_REFUSALS))),
        sa.and_(~is_file, files.c.error_class.in_(sorted(REQUEST_REFUSALS))),
    )
    # A request has no path: each is its own input.
    identity = sa.func.coalesce(files.c.path, files.c.request_id, sa.cast(files.c.id, sa.String()))
    for mode, n in connection.execute(
        sa.select(files.c.mode, sa.func.count(sa.distinct(identity)))
        .where(taken, sa.or_(files.c.error_class.is_(None), ~is_refused))
        .group_by(files.c.mode)
    ):
        files_by_mode[WriteMode(mode)] = n
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

    latest = files.c.id.in_(sa.select(sa.func.max(files.c.id)).where(scoped_files, is_file).group_by(files.c.path))
    uncertain_files, uncertainty_recorded = connection.execute(
        sa.select(
            sa.func.count().filter(files.c.uncertain > 0), sa.func.count().filter(files.c.uncertain.is_not(None))
        ).where(latest)
    ).one()

    selective_rows, kept_by_identity = _kept_by_identity(connection, scoped_files)

    unit = _unit_for(first_at, last_at)
    bucket = _bucket(connection, unit).label("bucket")
    per_bucket: dict[datetime, dict[Outcome | str, int]] = {}
    for text, outcome, n in connection.execute(
        sa.select(bucket, files.c.outcome, count).where(scoped_files).group_by(bucket, files.c.outcome).order_by(bucket)
    ):
        start = datetime.strptime(text, _BUCKET_PARSE[unit]).replace(tzinfo=UTC)
        per_bucket.setdefault(start, {})[_outcome(outcome)] = n

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
        files=_tally(connection, sa.and_(taken, is_file, ~is_dry_run), per_path=True, refusals=FILE_REFUSALS),
        dry_run_files=_tally(connection, sa.and_(taken, is_file, is_dry_run), per_path=True, refusals=FILE_REFUSALS),
        requests=_tally(connection, sa.and_(taken, ~is_file), per_path=False, refusals=REQUEST_REFUSALS),
        uncertain_files=int(uncertain_files),
        uncertainty_recorded=int(uncertainty_recorded),
        selective_rows=selective_rows,
        faces_kept_by_identity=kept_by_identity,
    )


def _kept_by_identity(connection: Connection, rows: sa.ColumnElement[bool]) -> tuple[int, int]:
    """The rows anonymized selectively and the faces they kept by identity (their details' ``identity`` counts).

    Details are JSON, which SQLite and PostgreSQL query differently: the rows whose text names ``identity`` are
    picked out in the database, and only their details are read here.
    """
    named = sa.cast(files.c.details, sa.String()).like('%"identity"%')
    selective = kept = 0
    for (details,) in connection.execute(sa.select(files.c.details).where(rows, named)):
        identity = details.get("identity") if isinstance(details, dict) else None
        if isinstance(identity, dict):
            selective += 1
            kept += int(identity.get("kept", 0))
    return selective, kept


def _tally(connection: Connection, rows: sa.ColumnElement[bool], *, per_path: bool, refusals: frozenset[str]) -> Tally:
    """The inputs of ``rows``: per path by its latest row (the highest id: rows are written in order), or each
    row by itself."""
    if per_path:
        rows = files.c.id.in_(sa.select(sa.func.max(files.c.id)).where(rows).group_by(files.c.path))
    count = sa.func.count()
    example = sa.func.coalesce(files.c.path, sa.literal("request ") + files.c.request_id)
    query = (
        sa.select(files.c.outcome, files.c.error_class, count, sa.func.min(files.c.error_message), sa.func.min(example))
        .where(rows)
        .group_by(files.c.outcome, files.c.error_class)
        .order_by(count.desc(), files.c.outcome, files.c.error_class)
    )
    by_outcome: dict[str, int] = {}
    failed: list[ErrorCause] = []
    refused: list[ErrorCause] = []
    for outcome, error_class, n, message, path in connection.execute(query):
        if outcome != Outcome.ERROR.value:
            by_outcome[outcome] = by_outcome.get(outcome, 0) + n
            continue
        cause = ErrorCause(error_class or "unknown", n, message or "", path or "")
        (refused if cause.error_class in refusals else failed).append(cause)
    return Tally(by_outcome=by_outcome, failed=tuple(failed), refused=tuple(refused))


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
