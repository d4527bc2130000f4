"""A new audit database is created at the head in one step (the declared tables, migration 0004's genesis row,
the head stamped) instead of being migrated revision by revision; both ways must give the same database: the
same schema, as SQLAlchemy inspects it, and the same first chain row. Real SQLite and real PostgreSQL.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import efface.audit
from efface.audit import AuditStore
from efface.audit.store import SCHEMA_HEAD, schema_head
from efface.audit.tables import metadata

MIGRATIONS_DIR = Path(efface.audit.__file__).parent / "migrations"
KEY = b"k" * 32


@pytest.fixture
def other_url(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second empty database on the same server as ``db_url``: an SQLite file, or a PostgreSQL schema."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'migrated' / 'audit.db'}"
        return
    admin: sa.Engine = request.getfixturevalue("pg_admin")
    schema = f"efface_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{db_url.split('?')[0]}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


def migrate_with_alembic(url: str, *, key: bytes | None) -> None:
    """Every migration from an empty database to the head, as a store before this change ran them."""
    engine = sa.create_engine(url)
    if engine.url.get_backend_name() == "sqlite" and engine.url.database:
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.set_main_option("path_separator", "os")
            config.attributes["connection"] = connection
            config.attributes["chain_key"] = key
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def schema_of(url: str) -> dict[str, dict[str, Any]]:
    """Every table's columns (in order, with type, nullability, default), primary key, foreign keys, indexes,
    unique and check constraints, as SQLAlchemy's inspector reads them back from the database."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        schema: dict[str, dict[str, Any]] = {}
        for table in sorted(inspector.get_table_names()):
            schema[table] = {
                "columns": [
                    {key: str(value) for key, value in column.items()} for column in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table),
                "foreign_keys": sorted(map(repr, inspector.get_foreign_keys(table))),
                "indexes": sorted(map(repr, inspector.get_indexes(table))),
                "unique": sorted(map(repr, inspector.get_unique_constraints(table))),
                "checks": sorted(map(repr, inspector.get_check_constraints(table))),
            }
        return schema
    finally:
        engine.dispose()


def chain_rows(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(sa.text("SELECT * FROM chain ORDER BY seq")).mappings()]
    finally:
        engine.dispose()


def test_the_known_head_is_alembics() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD == schema_head()


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "keyed"])
def test_a_created_database_is_a_migrated_one(db_url: str, other_url: str, key: bytes | None) -> None:
    AuditStore(db_url, key=key).close()
    migrate_with_alembic(other_url, key=key)

    created, migrated = schema_of(db_url), schema_of(other_url)
    assert set(created) == {*metadata.tables, "alembic_version"}
    assert created == migrated
    # The one row the migrations write besides the version: 0004's genesis, the same but for its time and hash.
    (created_genesis,), (migrated_genesis,) = chain_rows(db_url), chain_rows(other_url)
    for row in (created_genesis, migrated_genesis):
        del row["recorded_at"], row["row_hash"]
    assert created_genesis == migrated_genesis
    for url in (db_url, other_url):
        with AuditStore(url, key=key) as store:
            report = store.verify()
            assert report.is_intact, report.breaks
            assert report.rows == 1


def test_a_database_with_tables_of_its_own_is_migrated_not_created(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that is not empty but has no efface schema goes through the migrations (which fail loudly on a
    clash), never through the one-step creation."""
    engine = sa.create_engine(db_url)
    if engine.url.get_backend_name() == "sqlite" and engine.url.database:
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE someone_elses (x INTEGER)"))
    finally:
        engine.dispose()
    caplog.set_level(logging.INFO, logger="alembic")
    with AuditStore(db_url) as store:
        assert store.verify().is_intact
    assert any("Running upgrade 0006 -> 0007" in message for message in caplog.messages)
    assert set(schema_of(db_url)) == {*metadata.tables, "alembic_version", "someone_elses"}
