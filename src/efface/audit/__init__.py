"""The audit log: one row per run, per file and per validation, in SQLite or PostgreSQL, never any image
content, every row appended through a hash chain (``chain.py``, ``ledger.py``; checked by ``verifier.py``);
filters and exports (``query.py``, ``export.py``) and the report for a data-protection officer (``summary.py``,
``report.py``).

Only this package imports SQLAlchemy and Alembic; their errors leave it as ``AuditError``.
"""

from efface.audit.store import AuditStore, StoredFile, StoredRun

__all__ = ["AuditStore", "StoredFile", "StoredRun"]
