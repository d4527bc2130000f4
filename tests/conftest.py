"""Shared fixtures: a real face picture, audit stores, paths to ../shared data."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from skimage import data

SHARED = Path(__file__).resolve().parents[2] / "shared"
PG_BASE_URL = os.environ.get("EFFACE_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real face: scikit-image's public-domain portrait of Eileen Collins, RGB uint8 512x512."""
    return data.astronaut()


@pytest.fixture
def unprivileged() -> Callable[[list[str]], list[str]]:
    """Wraps a command so that file permissions bind it even when the tests run as root (CI does): setpriv
    drops the capabilities that let root read and list anything, for a real permission denial."""

    def wrap(command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        if shutil.which("setpriv") is None:
            pytest.fail("running as root needs util-linux setpriv to drop CAP_DAC_OVERRIDE for this test")
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]

    return wrap


@pytest.fixture
def count_av_opens(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[tuple[str, str]]]:
    """Call to record, from then on, each ``av.open`` as (file name, mode): how often a video is opened."""

    def start() -> list[tuple[str, str]]:
        import av

        opened: list[tuple[str, str]] = []
        real_open = av.open

        def counting_open(file: object, mode: str | None = None, *args: object, **kwargs: object) -> object:
            opened.append((Path(str(file)).name, mode or "r"))
            return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(av, "open", counting_open)
        return opened

    return start


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit' / 'audit.sqlite3'}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """An engine on the real PostgreSQL server; unreachable fails under CI and skips elsewhere."""
    engine = sa.create_engine(PG_BASE_URL)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = f"PostgreSQL at {PG_BASE_URL} is not reachable: {exc.orig}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL schema, dropped afterwards."""
    schema = f"efface_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"
    finally:
        with pg_admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own config file and EFFACE_* variables out of the tests."""
    for name in list(os.environ):
        if name.startswith("EFFACE_") and name != "EFFACE_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("EFFACE_CONFIG", str(tmp_path_factory.getbasetemp() / "no-such-config.toml"))
