"""Filters over the audit log for ``audit list``, ``export`` and ``report``: what to select, and the parsing
of the times and ages given on the command line.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from efface.audit.chain import FieldType
from efface.audit.tables import chain, field_type, files, runs, validations
from efface.records import Outcome

__all__ = [
    "AuditTable",
    "RecordFilter",
    "column_types",
    "matches_path",
    "parse_age",
    "parse_time",
    "select_records",
    "time_ago",
]

_AGE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")
_AGE_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_age(text: str) -> timedelta:
    """An age such as ``365d``, ``12w`` or ``36h``.

    Raises:
        ValueError: not a whole number followed by h, d or w.
    """
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"expected an age such as 365d, 12w or 36h, got {text!r}")
    try:
        return int(match[1]) * _AGE_UNITS[match[2]]
    except OverflowError:
        raise ValueError(f"the age {text.strip()} is too large: it reaches before the year 1") from None


def time_ago(age: timedelta, *, now: datetime | None = None) -> datetime:
    """The time ``age`` before ``now`` (default: the current UTC time).

    Raises:
        ValueError: the age reaches before the year 1.
    """
    try:
        return (now or datetime.now(UTC)) - age
    except OverflowError:
        raise ValueError(f"the age of {age.days:,} days is too large: it reaches before the year 1") from None


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time: an ISO 8601 date or date-time (UTC unless it carries an offset), or an age such as
    ``30d`` meaning that long before ``now``.

    Raises:
        ValueError: neither form.
    """
    if _AGE.match(text):
        return time_ago(parse_age(text), now=now)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a date (2025-01-31), a date-time (2025-01-31T12:00Z) or an age (30d), got {text!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class AuditTable(StrEnum):
    """A table of the audit log that can be listed and exported."""

    FILES = "files"
    RUNS = "runs"
    VALIDATIONS = "validations"
    CHAIN = "chain"


_TABLES: dict[AuditTable, sa.Table] = {
    AuditTable.FILES: files,
    AuditTable.RUNS: runs,
    AuditTable.VALIDATIONS: validations,
    AuditTable.CHAIN: chain,
}
# The time a filter's --since/--until compares, per table.
_TIME_COLUMNS = {
    AuditTable.FILES: files.c.started_at,
    AuditTable.RUNS: runs.c.started_at,
    AuditTable.VALIDATIONS: validations.c.created_at,
    AuditTable.CHAIN: chain.c.recorded_at,
}
# Rows in the order they were written.
_ORDER = {
    AuditTable.FILES: (files.c.id,),
    AuditTable.RUNS: (runs.c.started_at, runs.c.run_id),
    AuditTable.VALIDATIONS: (validations.c.created_at, validations.c.validation_id),
    AuditTable.CHAIN: (chain.c.seq,),
}


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records to select. Empty fields select everything.

    Attributes:
        run_id: a run's id (files and runs).
        since / until: a time range, ``since <= t < until`` on the table's own time (files and runs: started;
            validations: created; chain: recorded).
        outcomes: file outcomes to keep (files only).
        path_glob: a shell pattern the file path must match as a whole (``*``, ``?``, ``[...]``; ``*`` also
            matches ``/``); files only.
        is_uncertain: only files with something the detector was unsure of (faint candidates, a video's bridged
            frames: ``files.uncertain`` above 0); files only.
    """

    run_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcomes: tuple[Outcome, ...] = ()
    path_glob: str | None = None
    is_uncertain: bool = False

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")
        object.__setattr__(self, "outcomes", tuple(Outcome(o) for o in self.outcomes))

    @property
    def has_file_filters(self) -> bool:
        return bool(self.outcomes) or self.path_glob is not None or self.is_uncertain


def _glob_to_like(pattern: str) -> str:
    """A LIKE pattern matching at least what the glob matches (``[...]`` widens to one character)."""
    like = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            like.append("%")
        elif char == "?":
            like.append("_")
        elif char == "[" and "]" in pattern[index + 2 :]:
            like.append("_")
            index = pattern.index("]", index + 2)
        else:
            like.append("\\" + char if char in "%_\\" else char)
        index += 1
    return "".join(like)


def matches_path(path: str, pattern: str) -> bool:
    """Whether a path matches a shell pattern, case-sensitively, as a whole."""
    return fnmatch.fnmatchcase(path, pattern)


def select_records(table: AuditTable, record_filter: RecordFilter, *, newest_first: bool = False) -> sa.Select[Any]:
    """The query for a table's records under a filter.

    A path glob is applied in SQL as LIKE, which may match more than the glob (SQLite's LIKE ignores ASCII
    case; ``[...]`` becomes any one character): keep only rows for which ``matches_path`` holds.

    Raises:
        ValueError: outcome, path or uncertainty filters on a table other than files.
    """
    sql_table = _TABLES[table]
    query = sa.select(sql_table)
    if record_filter.run_id:
        run_column = sql_table.c.get("run_id")
        if run_column is None or table is AuditTable.CHAIN:
            raise ValueError(f"--run does not apply to {table.value}")
        query = query.where(run_column == record_filter.run_id)
    time_column = _TIME_COLUMNS[table]
    if record_filter.since is not None:
        query = query.where(time_column >= record_filter.since)
    if record_filter.until is not None:
        query = query.where(time_column < record_filter.until)
    if record_filter.has_file_filters and table is not AuditTable.FILES:
        raise ValueError(f"--outcome, --path and --uncertain apply to files, not {table.value}")
    if record_filter.outcomes:
        query = query.where(files.c.outcome.in_([o.value for o in record_filter.outcomes]))
    if record_filter.path_glob is not None:
        query = query.where(files.c.path.like(_glob_to_like(record_filter.path_glob), escape="\\"))
    if record_filter.is_uncertain:  # a pending row is an intent, the file's own row follows it
        query = query.where(files.c.uncertain > 0, files.c.outcome != Outcome.PENDING.value)
    order = _ORDER[table]
    return query.order_by(*(column.desc() for column in order) if newest_first else order)


def column_types(table: AuditTable) -> dict[str, FieldType]:
    """Each column of a table and the kind of value it holds, in table order."""
    return {column.name: field_type(column) for column in _TABLES[table].columns}
