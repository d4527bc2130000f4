"""The verifier of the audit log's hash chain: walks chain rows in order and the records outside the chain, and
reports every break (see ``chain.py`` for what a chain row holds). Pure: no database here; ``AuditStore.verify``
feeds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from efface.audit.chain import (
    GENESIS_PREV_HASH,
    HASH_ALG_KEYED,
    HASH_ALG_PLAIN,
    MAX_BREAKS,
    UNVERSIONED,
    ChainRow,
    ContentSchema,
    EventKind,
    SeqDigest,
    content_sha256,
    link_hash,
    payload_sha256,
)

__all__ = ["BreakKind", "ChainBreak", "ChainReport", "ChainVerifier"]


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
        if link_hash(row, key) != row.row_hash:
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
