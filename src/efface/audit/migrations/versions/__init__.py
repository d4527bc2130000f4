"""Alembic revisions, hand-written and portable to SQLite and PostgreSQL."""
