"""The hash chain of the audit log: canonical content, link hashes and the verifier. Pure: no database here.

Every audit record is appended through one sequence, the ``chain`` table: one chain row per run start, file,
run finish, validation and prune, numbered ``seq`` = 1, 2, 3, ... without gaps (row 1 is the ``genesis``
event written by migration 0004). A chain row holds

- ``content_sha256``: sha256 of the record's canonical content: a JSON object of the record's fields (which
  fields, and how each is written, is a ``ContentSchema``: the tables declare it, ``tables.CONTENT_SCHEMA``; the
  payload itself for genesis and prune events) with sorted keys, no whitespace, times as UTC ISO 8601 with
  microseconds and ``Z``, floats as Python's ``repr``. SQLite and PostgreSQL give the same bytes.
- ``content_version``: the version of the field lists the content was hashed with. Rows written before it
  existed (migration 0006) hold NULL, which is version 1, the field lists of migration 0004.
- ``row_hash``: sha256 (or HMAC-SHA256 with the audit key, ``hash_alg`` says which) of the canonical JSON of
  the chain row's own fields, ``prev_hash`` (the previous row's ``row_hash``) included, and ``content_version``
  when it is not NULL (so the hash of every row written before it existed is unchanged).

A new audited column makes a new content version: rows keep verifying with the fields of the version they
were hashed with, and a field that a row's version does not hash must still be NULL there, as the migration
that added the column left it (so it cannot be set later unnoticed).

A run row is the one record the store updates: ``finish_run`` writes its status and totals. The run's start
fields are hashed by its ``run_started`` row, its finish fields by a ``run_finished`` row appended by
``finish_run``; a run without one must still hold the initial state (``running``, zero totals).

``pruned_by`` is the one chain column written after the append and left out of the hash: ``prune`` marks the
chain rows of the records it deletes with its own ``seq``, and its payload holds how many rows it marked and
a digest of their ``seq`` numbers, so a record deleted later and marked as pruned is still found.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "GENESIS_PREV_HASH",
    "HASH_ALG_KEYED",
    "HASH_ALG_PLAIN",
    "RECORD_KINDS",
    "UNVERSIONED",
    "BreakKind",
    "ChainBreak",
    "ChainReport",
    "ChainRow",
    "ChainVerifier",
    "ContentSchema",
    "Event",
    "EventKind",
    "FieldType",
    "Fields",
    "SeqDigest",
    "canonical_json",
    "content_sha256",
    "link",
    "payload_sha256",
]

GENESIS_PREV_HASH = "0" * 64
HASH_ALG_PLAIN = "sha256"
HASH_ALG_KEYED = "hmac-sha256"
# Breaks kept in a report; the total is still counted.
MAX_BREAKS = 100
# The content version of a chain row whose content_version is NULL: written before versions were recorded.
UNVERSIONED = 1


class EventKind(StrEnum):
    """What a chain row records."""

    GENESIS = "genesis"
    RUN_STARTED = "run_started"
    FILE = "file"
    RUN_FINISHED = "run_finished"
    VALIDATION = "validation"
    PRUNE = "prune"


class FieldType(StrEnum):
    """How a field is written into canonical content."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TIME = "time"
    JSON = "json"


Fields = Mapping[str, FieldType]
"""The fields of a record that its canonical content holds, and how each is written."""

# The kinds of chain row that stand for a record (genesis and prune events hash their own payload).
RECORD_KINDS = (EventKind.RUN_STARTED, EventKind.RUN_FINISHED, EventKind.FILE, EventKind.VALIDATION)


@dataclass(frozen=True, slots=True)
class ContentSchema:
    """What the canonical content of each kind of record holds, in every content version.

    Attributes:
        versions: content version (1, 2, ... without gaps) -> record kind (each of ``RECORD_KINDS``) -> its
            hashed fields.
        run_finish_defaults: the finish fields (run id aside) of a run that has not finished.

    Raises:
        ValueError: versions with gaps, or a version without every record kind.
    """

    versions: Mapping[int, Mapping[EventKind, Fields]]
    run_finish_defaults: Mapping[str, Any]
    # Per kind, every field any version hashes; per (kind, version), those of them the version does not.
    _names: dict[EventKind, frozenset[str]] = field(init=False, repr=False, compare=False)
    _unhashed: dict[tuple[EventKind, int], frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expected = list(range(1, len(self.versions) + 1))
        if sorted(self.versions) != expected:
            raise ValueError(f"content versions must be {expected}, got {sorted(self.versions)}")
        for version, kinds in self.versions.items():
            if set(kinds) != set(RECORD_KINDS):
                raise ValueError(
                    f"content version {version} must list {sorted(RECORD_KINDS)}, got {sorted(map(str, kinds))}"
                )
        # Computed once: the verifier asks for every row.
        names = {kind: frozenset(n for kinds in self.versions.values() for n in kinds[kind]) for kind in RECORD_KINDS}
        unhashed = {
            (kind, version): names[kind] - kinds[kind].keys()
            for version, kinds in self.versions.items()
            for kind in RECORD_KINDS
        }
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_unhashed", unhashed)

    @property
    def current_version(self) -> int:
        """The version new chain rows are hashed with: the newest."""
        return len(self.versions)

    def fields(self, kind: EventKind, version: int) -> Fields:
        """The fields a record of ``kind`` hashes in ``version``.

        Raises:
            KeyError: no such version, or ``kind`` is no record kind.
        """
        return self.versions[version][EventKind(kind)]

    def names(self, kind: EventKind) -> frozenset[str]:
        """Every field a record of ``kind`` hashes in any version: what to read of it to verify it."""
        return self._names[EventKind(kind)]

    def unhashed(self, kind: EventKind, version: int) -> frozenset[str]:
        """The fields of other versions that ``version`` does not hash: NULL in a record hashed with it."""
        return self._unhashed[EventKind(kind), version]

    def initial_run_finish(self, run_id: str) -> dict[str, Any]:
        """The finish fields of a run that has not finished."""
        return {**self.run_finish_defaults, "run_id": run_id}


def _json_value(value: Any) -> Any:
    # The store serialises JSON columns with default=str (paths, enums); read back they are these values.
    return json.loads(json.dumps(value, default=str))


def _time(value: datetime) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_NORMALIZERS: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.STR: str,
    FieldType.INT: int,
    FieldType.FLOAT: float,
    FieldType.BOOL: bool,
    FieldType.TIME: _time,
    FieldType.JSON: _json_value,
}


def canonical_json(value: Any) -> str:
    """The one serialisation every hash is taken over: sorted keys, no whitespace, UTF-8, floats by ``repr``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Read back from the database, JSON values are JSON already: the round trip through text is skipped.
_READ_BACK_NORMALIZERS: dict[FieldType, Callable[[Any], Any]] = {**_NORMALIZERS, FieldType.JSON: lambda value: value}


def _normalized(fields: Mapping[str, FieldType], row: Mapping[str, Any], *, is_read_back: bool) -> dict[str, Any]:
    normalizers = _READ_BACK_NORMALIZERS if is_read_back else _NORMALIZERS
    return {name: None if row[name] is None else normalizers[kind](row[name]) for name, kind in fields.items()}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def content_sha256(fields: Mapping[str, FieldType], row: Mapping[str, Any], *, is_read_back: bool = False) -> str:
    """sha256 of a record's canonical content.

    Args:
        fields: which fields are hashed and how (``ContentSchema.fields``).
        row: the record, as written or as read back (either gives the same hash).
        is_read_back: ``row`` was read from the database, so its JSON values are plain JSON already.

    Raises:
        KeyError: ``row`` lacks one of ``fields``.
    """
    return _sha256(canonical_json(_normalized(fields, row, is_read_back=is_read_back)))


def payload_sha256(payload: Mapping[str, Any]) -> str:
    """sha256 of the canonical content of a genesis or prune event: its payload."""
    return _sha256(canonical_json(_json_value(payload)))


@dataclass(frozen=True, slots=True)
class Event:
    """A record to append to the chain.

    Attributes:
        kind: what it records.
        content_sha256: the record's canonical content hash (see ``content_sha256``).
        run_id / file_id / validation_id: the record it stands for (run events, file, validation).
        payload: the event's own content, for genesis and prune events.
        content_version: the version of the field lists ``content_sha256`` was taken with; None for version 1
            as written before versions were recorded.
    """

    kind: EventKind
    content_sha256: str
    run_id: str | None = None
    file_id: int | None = None
    validation_id: str | None = None
    payload: dict[str, Any] | None = None
    content_version: int | None = None


def _link_hash(row: Any, key: bytes | None) -> str:
    """The row hash over a chain row's own fields; ``row`` is a mapping or has them as attributes."""
    get = row.__getitem__ if isinstance(row, Mapping) else row.__getattribute__
    file_id = get("file_id")
    content_version = get("content_version")
    fields: dict[str, Any] = {
        "seq": int(get("seq")),
        "kind": str(get("kind")),
        "recorded_at": _time(get("recorded_at")),
        "run_id": get("run_id"),
        "file_id": None if file_id is None else int(file_id),
        "validation_id": get("validation_id"),
        "content_sha256": get("content_sha256"),
        "prev_hash": get("prev_hash"),
        "hash_alg": get("hash_alg"),
    }
    if content_version is not None:
        fields["content_version"] = int(content_version)
    message = canonical_json(fields).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def link(event: Event, *, seq: int, prev_hash: str, recorded_at: datetime, key: bytes | None) -> dict[str, Any]:
    """The chain row that appends ``event`` after the row whose hash is ``prev_hash``.

    Args:
        event: what to append.
        seq: its position, the previous row's plus one.
        prev_hash: the previous row's ``row_hash`` (``GENESIS_PREV_HASH`` for the first row).
        recorded_at: the time of the append (timezone-aware).
        key: the HMAC key, or None for plain sha256.

    Returns:
        The values of the ``chain`` table's columns.
    """
    row: dict[str, Any] = {
        "seq": seq,
        "kind": EventKind(event.kind).value,
        "recorded_at": recorded_at,
        "run_id": event.run_id,
        "file_id": event.file_id,
        "validation_id": event.validation_id,
        "payload": event.payload,
        "content_sha256": event.content_sha256,
        "prev_hash": prev_hash,
        "hash_alg": HASH_ALG_PLAIN if key is None else HASH_ALG_KEYED,
        "pruned_by": None,
        "content_version": event.content_version,
    }
    row["row_hash"] = _link_hash(row, key)
    return row


class SeqDigest:
    """How many chain rows, and which: a running sha256 over their ``seq`` numbers in increasing order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, seq: int) -> None:
        self._hash.update(f"{seq}\n".encode())
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class BreakKind(StrEnum):
    """How the chain is broken."""

    # A record, or a chain row, no longer matches the hash taken when it was appended.
    ALTERED = "altered"
    # A record, or a chain row, is missing.
    DELETED = "deleted"
    # A record, or a chain row, that was not appended through the chain.
    INSERTED = "inserted"
    # Rows that cannot be checked: keyed rows without the key, or no keyed row where a key is given.
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """One finding of ``verify``.

    Attributes:
        kind: altered, deleted, inserted or unverifiable.
        table: the table of the row concerned: ``runs``, ``files``, ``validations`` or ``chain``.
        row_id: that row's id (run id, file id, validation id, or the chain ``seq``).
        seq: the chain row concerned, or None for a record that has none.
        message: one line for a person.
    """

    kind: BreakKind
    table: str
    row_id: str
    seq: int | None
    message: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of walking the whole chain.

    Attributes:
        rows: chain rows walked.
        keyed_rows: rows hashed with HMAC-SHA256.
        is_key_given: whether the walk had the HMAC key.
        head_seq / head_hash: the newest chain row: note them to detect a later truncation (``--expect``).
        first_recorded_at / last_recorded_at: times of the oldest and newest chain rows.
        prunes: prune events in the chain.
        records_checked: runs, files and validations whose content was compared with their hash.
        breaks: the findings, in chain order (at most ``MAX_BREAKS``).
        breaks_total: every finding, counted.
        checked_at: when the walk ended (UTC).
    """

    rows: int
    keyed_rows: int
    is_key_given: bool
    head_seq: int | None
    head_hash: str | None
    first_recorded_at: datetime | None
    last_recorded_at: datetime | None
    prunes: int
    records_checked: int
    breaks: tuple[ChainBreak, ...]
    breaks_total: int
    checked_at: datetime

    @property
    def is_intact(self) -> bool:
        return self.breaks_total == 0

    @property
    def first_break(self) -> ChainBreak | None:
        return self.breaks[0] if self.breaks else None


@dataclass(frozen=True, slots=True)
class ChainRow:
    """A chain row as read back, with the record it stands for (None when that record is missing, and for a
    row marked pruned: ids may be reused after a prune, so its record is never looked up).
    """

    seq: int
    kind: str
    recorded_at: datetime
    run_id: str | None
    file_id: int | None
    validation_id: str | None
    payload: dict[str, Any] | None
    content_sha256: str
    prev_hash: str
    row_hash: str
    hash_alg: str
    pruned_by: int | None
    content_version: int | None = None
    record: Mapping[str, Any] | None = None


_RECORD_TABLES = {
    EventKind.RUN_STARTED: "runs",
    EventKind.RUN_FINISHED: "runs",
    EventKind.FILE: "files",
    EventKind.VALIDATION: "validations",
}


def _record_id(row: ChainRow) -> str:
    if row.kind == EventKind.FILE:
        return str(row.file_id)
    if row.kind == EventKind.VALIDATION:
        return str(row.validation_id)
    return str(row.run_id)


@dataclass(slots=True)
class _RunState:
    # The run record's finish fields as they are now, checked against its last finish row (or its initial state).
    finish_values: dict[str, Any]
    start_version: int
    start_seq: int
    finish_seq: int | None = None
    finish_sha256: str | None = None
    finish_version: int | None = None


@dataclass(slots=True)
class ChainVerifier:
    """Walks chain rows in ``seq`` order, then the records no chain row stands for, and reports every break.

    Feed every chain row with ``feed`` (in increasing ``seq``), then call ``finish``.

    Args:
        content: the fields each content version hashes (``tables.CONTENT_SCHEMA``).
        key: the HMAC key the chain was written with, or None.
        expected_hashes: row hashes noted earlier (e.g. a previous report's head) that must still be there.
    """

    content: ContentSchema
    key: bytes | None = None
    expected_hashes: frozenset[str] = frozenset()
    _breaks: list[ChainBreak] = field(default_factory=list)
    _breaks_total: int = 0
    _rows: int = 0
    _keyed: int = 0
    _unverifiable: int = 0
    _keyed_failed: int = 0
    _records: int = 0
    _prunes: int = 0
    _prev_seq: int = 0
    _prev_hash: str = GENESIS_PREV_HASH
    _is_prev_intact: bool = True
    _first_at: datetime | None = None
    _last_at: datetime | None = None
    _pruned: dict[int, SeqDigest] = field(default_factory=dict)
    _runs: dict[str, _RunState] = field(default_factory=dict)
    _found_hashes: set[str] = field(default_factory=set)

    def _break(self, kind: BreakKind, table: str, row_id: object, seq: int | None, message: str) -> None:
        self._breaks_total += 1
        if len(self._breaks) < MAX_BREAKS:
            self._breaks.append(ChainBreak(kind, table, str(row_id), seq, message))

    def feed(self, row: ChainRow) -> None:
        """Checks one chain row: its place in the sequence, its own hash and its record."""
        self._rows += 1
        self._first_at = self._first_at or row.recorded_at
        self._last_at = row.recorded_at
        if row.row_hash in self.expected_hashes:
            self._found_hashes.add(row.row_hash)
        self._check_link(row)
        is_intact = self._check_own_hash(row)
        self._prev_seq, self._prev_hash, self._is_prev_intact = row.seq, row.row_hash, is_intact
        if row.kind in (EventKind.GENESIS, EventKind.PRUNE):
            self._check_event(row)
        elif row.kind in _RECORD_TABLES:
            self._check_record(row)
        else:
            self._break(
                BreakKind.ALTERED, "chain", row.seq, row.seq, f"chain row {row.seq} has unknown kind {row.kind!r}"
            )

    def _check_link(self, row: ChainRow) -> None:
        expected_seq = self._prev_seq + 1
        if row.seq > expected_seq:
            missing = f"{expected_seq}" if row.seq == expected_seq + 1 else f"{expected_seq} to {row.seq - 1}"
            self._break(BreakKind.DELETED, "chain", expected_seq, expected_seq, f"chain rows {missing} were deleted")
        elif row.prev_hash != self._prev_hash and self._is_prev_intact:
            before = f"chain row {self._prev_seq}" if self._prev_seq else "the start of the chain"
            self._break(
                BreakKind.INSERTED,
                "chain",
                row.seq,
                row.seq,
                f"chain row {row.seq} does not follow {before}: a chain row was inserted or rewritten there",
            )

    def _check_own_hash(self, row: ChainRow) -> bool:
        if row.hash_alg == HASH_ALG_KEYED:
            self._keyed += 1
            if self.key is None:
                self._unverifiable += 1
                return True
            key: bytes | None = self.key
        elif row.hash_alg == HASH_ALG_PLAIN:
            if self.key is not None and self._keyed:
                self._break(
                    BreakKind.INSERTED,
                    "chain",
                    row.seq,
                    row.seq,
                    f"chain row {row.seq} is not keyed but follows keyed rows: written without the audit key",
                )
                return False
            key = None
        else:
            self._break(BreakKind.ALTERED, "chain", row.seq, row.seq, f"chain row {row.seq} has unknown hash_alg")
            return False
        if _link_hash(row, key) != row.row_hash:
            self._keyed_failed += key is not None
            self._break(
                BreakKind.ALTERED,
                "chain",
                row.seq,
                row.seq,
                f"chain row {row.seq} was altered: its hash does not match its fields",
            )
            return False
        return True

    def _check_event(self, row: ChainRow) -> None:
        if row.payload is None or payload_sha256(row.payload) != row.content_sha256:
            self._break(
                BreakKind.ALTERED,
                "chain",
                row.seq,
                row.seq,
                f"the {row.kind} payload of chain row {row.seq} was altered",
            )
            return
        if row.kind != EventKind.PRUNE:
            return
        self._prunes += 1
        digest = self._pruned.pop(row.seq, SeqDigest())
        recorded = (row.payload.get("chain_rows"), row.payload.get("chain_rows_sha256"))
        if recorded != (digest.count, digest.hexdigest()):
            self._break(
                BreakKind.DELETED,
                "chain",
                row.seq,
                row.seq,
                f"the prune at chain row {row.seq} removed the records of {recorded[0]} chain rows, but "
                f"{digest.count} are marked as pruned by it: records were deleted and marked, or marks removed",
            )

    def _check_record(self, row: ChainRow) -> None:
        kind = EventKind(row.kind)
        table = _RECORD_TABLES[kind]
        record_id = _record_id(row)
        name = f"{table} row {record_id} (chain row {row.seq})"
        if row.pruned_by is not None:
            if row.pruned_by <= row.seq:
                self._break(BreakKind.ALTERED, "chain", row.seq, row.seq, f"{name} is marked pruned by an earlier row")
            else:
                # Counted against the prune's digest: its record is gone, or no longer vouched for.
                self._pruned.setdefault(row.pruned_by, SeqDigest()).add(row.seq)
            return
        if row.record is None:
            self._break(BreakKind.DELETED, table, record_id, row.seq, f"{name} was deleted")
            return
        self._records += 1
        version = UNVERSIONED if row.content_version is None else row.content_version
        if version not in self.content.versions:
            self._break(BreakKind.ALTERED, "chain", row.seq, row.seq, f"{name} has unknown content version {version}")
            return
        if kind is EventKind.RUN_FINISHED:
            state = self._runs.get(record_id)
            if state is None:
                self._break(BreakKind.INSERTED, "chain", row.seq, row.seq, f"{name} finishes a run that never started")
                return
            state.finish_seq, state.finish_sha256, state.finish_version = row.seq, row.content_sha256, version
            return
        if content_sha256(self.content.fields(kind, version), row.record, is_read_back=True) != row.content_sha256:
            self._break(BreakKind.ALTERED, table, record_id, row.seq, f"{name} was altered")
        elif set_later := self._set_unhashed(kind, version, row.record):
            self._break(BreakKind.ALTERED, table, record_id, row.seq, f"{name} was altered: {set_later}")
        if kind is EventKind.RUN_STARTED:
            finish_values = {key: row.record[key] for key in self.content.names(EventKind.RUN_FINISHED)}
            self._runs[record_id] = _RunState(finish_values, start_version=version, start_seq=row.seq)

    def _set_unhashed(self, kind: EventKind, version: int, record: Mapping[str, Any]) -> str:
        """Names the fields that ``version`` does not hash but ``record`` sets (they must be NULL); "" if none."""
        fields = sorted(key for key in self.content.unhashed(kind, version) if record[key] is not None)
        if not fields:
            return ""
        return f"{', '.join(fields)} must be NULL in a row hashed with content version {version}"

    def finish(self, unchained: Iterable[tuple[str, str]] = ()) -> ChainReport:
        """Ends the walk.

        Args:
            unchained: ``(table, row id)`` of every run, file and validation no chain row stands for.

        Returns:
            The report, breaks in chain order (records without a chain row last).
        """
        for run_id, state in self._runs.items():
            version = state.finish_version or state.start_version
            fields = self.content.fields(EventKind.RUN_FINISHED, version)
            expected = state.finish_sha256 or content_sha256(fields, self.content.initial_run_finish(run_id))
            current = content_sha256(fields, state.finish_values, is_read_back=True)
            if current != expected or self._set_unhashed(EventKind.RUN_FINISHED, version, state.finish_values):
                seq = state.finish_seq or state.start_seq
                self._break(
                    BreakKind.ALTERED,
                    "runs",
                    run_id,
                    seq,
                    f"runs row {run_id} (chain row {seq}) was altered: its status or totals differ from the chain",
                )
        for prune_seq, digest in self._pruned.items():
            self._break(
                BreakKind.DELETED,
                "chain",
                prune_seq,
                prune_seq,
                f"{digest.count} chain rows are marked as pruned by row {prune_seq}, which is no prune: "
                "their records were deleted",
            )
        if self._unverifiable:
            self._break(
                BreakKind.UNVERIFIABLE,
                "chain",
                "-",
                None,
                f"{self._unverifiable} chain rows are keyed: set EFFACE_AUDIT_KEY to verify them",
            )
        if self.key is not None and self._rows and not self._keyed:
            self._break(
                BreakKind.UNVERIFIABLE,
                "chain",
                "-",
                None,
                "EFFACE_AUDIT_KEY is set but no chain row is keyed: anyone who can write the database could have "
                "recomputed the chain (rows appended from now on are keyed)",
            )
        if not self._rows:
            self._break(BreakKind.DELETED, "chain", 1, 1, "the chain is empty: its rows were deleted")
        for missing in sorted(self.expected_hashes - self._found_hashes):
            self._break(BreakKind.DELETED, "chain", missing[:16], None, f"no chain row has the expected hash {missing}")
        for table, row_id in unchained:
            self._break(
                BreakKind.INSERTED, table, row_id, None, f"{table} row {row_id} is not in the chain: it was inserted"
            )
        breaks = sorted(self._breaks, key=lambda b: (b.seq is None, b.seq or 0))
        if self._keyed > 1 and self._keyed_failed == self._keyed:
            # Every keyed row fails: a wrong key, not a rewritten log, is the likely cause; say so first.
            self._breaks_total += 1
            message = "no keyed chain row matches EFFACE_AUDIT_KEY: is it the key the chain was written with?"
            breaks.insert(0, ChainBreak(BreakKind.UNVERIFIABLE, "chain", "-", None, message))
        return ChainReport(
            rows=self._rows,
            keyed_rows=self._keyed,
            is_key_given=self.key is not None,
            head_seq=self._prev_seq or None,
            head_hash=self._prev_hash if self._rows else None,
            first_recorded_at=self._first_at,
            last_recorded_at=self._last_at,
            prunes=self._prunes,
            records_checked=self._records,
            breaks=tuple(breaks),
            breaks_total=self._breaks_total,
            checked_at=datetime.now(UTC),
        )
