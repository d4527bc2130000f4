"""The hash chain of the audit log: canonical content and link hashes (the verifier is ``verifier.py``). Pure: no
database here.

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
from collections.abc import Callable, Mapping
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
    "ChainRow",
    "ContentSchema",
    "Event",
    "EventKind",
    "FieldType",
    "Fields",
    "SeqDigest",
    "canonical_json",
    "content_sha256",
    "link",
    "link_hash",
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


def link_hash(row: Any, key: bytes | None) -> str:
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
    row["row_hash"] = link_hash(row, key)
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
