"""Audit fixtures: each test runs on a new SQLite file and on a new schema of the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from efface.audit import AuditStore


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        # The folder does not exist yet: the store creates it.
        return f"sqlite:///{tmp_path / 'audit' / 'audit.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def raw_engine(db_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the same database, to look under the store."""
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[AuditStore]:
    with AuditStore(db_url) as opened:
        yield opened
