"""The state of reviews (``efface review``), in the ``reviews`` table of the audit database (migration 0009): per
file, the boxes a person kept, added or removed and whether the file was accepted, so that a review can be resumed
after the page or the process was closed. A review is of one content: a file changed since (another sha256) starts
afresh. What Apply does to a file is audited as any run's files are; this table is working state and holds no
pixels, only box coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from efface.audit._errors import translate_errors
from efface.audit.store import AuditStore
from efface.audit.tables import reviews

__all__ = ["ReviewStore", "StoredReview"]


@dataclass(frozen=True, slots=True)
class StoredReview:
    """The saved review of one file.

    Attributes:
        path: the file.
        source_sha256: the content reviewed.
        reviewer: who saved it last.
        updated_at: when (UTC).
        state: the review page's state of the file (its boxes and decision; see ``efface.review``).
        applied_run_id: the run that applied it, or None while it is not applied.
    """

    path: str
    source_sha256: str
    reviewer: str
    updated_at: datetime
    state: dict[str, Any]
    applied_run_id: str | None


class ReviewStore:
    """Saves and reads reviews in an open audit database (it shares the ``AuditStore``'s engine).

    Args:
        store: the open audit store.
    """

    def __init__(self, store: AuditStore) -> None:
        self._engine = store._engine

    def get(self, path: str) -> StoredReview | None:
        """The saved review of a file (``path_text`` of its path), or None.

        Raises:
            AuditError: the database cannot be read.
        """
        query = sa.select(reviews).where(reviews.c.path == path)
        with translate_errors(f"read the review of {path}"), self._engine.connect() as connection:
            row = connection.execute(query).mappings().one_or_none()
        return StoredReview(**row) if row is not None else None

    def save(self, path: str, *, source_sha256: str, reviewer: str, state: dict[str, Any]) -> StoredReview:
        """Saves a file's review (replacing the one saved before, applied or not).

        Raises:
            AuditError: the database cannot be written.
        """
        saved = StoredReview(path, source_sha256, reviewer, datetime.now(UTC), state, None)
        values = {
            "source_sha256": source_sha256,
            "reviewer": reviewer,
            "updated_at": saved.updated_at,
            "state": state,
            "applied_run_id": None,
        }
        with translate_errors(f"save the review of {path}"), self._engine.begin() as connection:
            updated = connection.execute(reviews.update().where(reviews.c.path == path).values(**values))
            if not updated.rowcount:
                connection.execute(reviews.insert().values(path=path, **values))
        return saved

    def mark_applied(self, path: str, *, run_id: str) -> None:
        """Records that a file's review was applied by ``run_id``.

        Raises:
            AuditError: the database cannot be written.
        """
        update = reviews.update().where(reviews.c.path == path).values(applied_run_id=run_id)
        with translate_errors(f"mark the review of {path} applied"), self._engine.begin() as connection:
            connection.execute(update)
