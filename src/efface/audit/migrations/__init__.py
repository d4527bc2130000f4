"""Alembic migrations of the audit database, run by ``AuditStore`` on open (never ``create_all``)."""
