"""Audit database URLs as users write them, turned into the SQLAlchemy URL of an installed driver.

The audit log runs on SQLite and PostgreSQL. ``postgres://`` (the spelling of Heroku, libpq docs and most
hosting dashboards) means PostgreSQL, and a PostgreSQL URL without a driver gets the installed one, psycopg 3
before psycopg2, rather than SQLAlchemy's fixed default. Any other database, or a driver that is not
installed, is refused here with one line that says what to write.
"""

from __future__ import annotations

import importlib.util

import sqlalchemy as sa

from efface.errors import AuditError

__all__ = ["engine_url"]

# The name a URL may give its backend by -> the SQLAlchemy dialect.
_BACKENDS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
# PostgreSQL drivers, in the order of preference for a URL that names none (module = SQLAlchemy driver name).
_POSTGRESQL_DRIVERS = ("psycopg", "psycopg2")
_WRITE = "write sqlite:///PATH or postgresql://USER@HOST/DATABASE"


def engine_url(url: str) -> sa.URL:
    """The SQLAlchemy URL for an audit database URL.

    Args:
        url: e.g. ``sqlite:////var/lib/efface/audit.db``, ``postgres://user@host/db`` or
            ``postgresql+psycopg://user@host/db``.

    Returns:
        The URL with a supported dialect and an installed driver.

    Raises:
        AuditError: another database, no PostgreSQL driver installed, or the URL's driver is not installed.
        sqlalchemy.exc.ArgumentError: the text is no URL (the store translates it).
    """
    parsed = sa.make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    dialect = _BACKENDS.get(backend)
    if dialect is None:
        raise AuditError(f"the audit database must be SQLite or PostgreSQL, not {backend}: {_WRITE}")
    if dialect == "postgresql" and not driver:
        driver = next((name for name in _POSTGRESQL_DRIVERS if importlib.util.find_spec(name) is not None), "")
        if not driver:
            raise AuditError("no PostgreSQL driver for the audit database is installed: pip install 'psycopg[binary]'")
    parsed = parsed.set(drivername=f"{dialect}+{driver}" if driver else dialect)
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        name = driver or "sqlite3"
        raise AuditError(f"the {dialect} audit database driver {name} is not installed ({exc}); {_WRITE}") from exc
    return parsed
