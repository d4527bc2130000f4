"""Service fixtures: images good and malformed, API keys in a real audit database, the app in process
(``TestClient``) and a real ``efface serve`` process on a free loopback port."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.exceptions import StarletteDeprecationWarning

from efface.audit import AuditStore
from efface.audit.keys import ApiKeyStore
from efface.config import Settings
from efface.detection.base import FaceDetector
from efface.detection.models import DetectionModels
from efface.detection.static import StaticModels
from efface.records import BBox, Face
from efface.service import ServiceLimits, create_app
from efface.service.runtime import ModelLoader

with warnings.catch_warnings():
    # Starlette 1.x asks for the httpx2 fork behind its TestClient and warns when it finds httpx instead.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SERVER_START_TIMEOUT_S = 60.0


def jpeg(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **{"quality": 90, **options})
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width_px: int = 30_000, height_px: int = 30_000) -> bytes:
    """A valid PNG header claiming ``width x height`` RGB pixels, in a few hundred bytes."""
    header = struct.pack(">IIBBBBB", width_px, height_px, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut: np.ndarray) -> bytes:
    return jpeg(astronaut)


@pytest.fixture(scope="session")
def malformed_uploads(astronaut_jpeg: bytes) -> dict[str, tuple[str, bytes, int, str]]:
    """Name -> (file name, content, status, error type) of uploads the service must refuse, never with a 500."""
    return {
        "truncated jpeg": ("truncated.jpg", astronaut_jpeg[: len(astronaut_jpeg) // 2], 422, "CorruptImageError"),
        "text file": ("notes.txt", b"meeting notes, not an image\n", 415, "UnsupportedFormatError"),
        "text named jpg": ("notes.jpg", b"meeting notes, not an image\n", 422, "CorruptImageError"),
        "zero bytes": ("empty.jpg", b"", 422, "CorruptImageError"),
        "png bomb": ("bomb.png", png_bomb(), 413, "ImageTooLargeError"),
        "gif": ("anim.gif", _gif(), 415, "UnsupportedFormatError"),
    }


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, "GIF")
    return buffer.getvalue()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit' / 'audit.sqlite3'}"


def create_key(db_url: str, name: str = "tests", *, rate_limit_per_min: int | None = None) -> str:
    with AuditStore(db_url) as store:
        return ApiKeyStore(store).create(name, rate_limit_per_min=rate_limit_per_min).value


@pytest.fixture
def api_key(db_url: str) -> str:
    return create_key(db_url)


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def static_load(*faces: Face, detector: FaceDetector | None = None) -> ModelLoader:
    """A ``load_models`` stand-in: models that give a fake detector (the settings' policy still applies)."""

    def load(settings: Settings, inference_threads: int) -> DetectionModels:
        return StaticModels(detector, faces=faces)

    return load


FACE = Face(box=BBox(180.0, 60.0, 270.0, 180.0), score=0.99)


@pytest.fixture
def make_client(db_url: str) -> Iterator[Callable[..., TestClient]]:
    """Starts the app in process (lifespan included) with the given limits and worker builder."""
    clients: list[TestClient] = []

    def make(*, limits: ServiceLimits | None = None, load: ModelLoader | None = None) -> TestClient:
        settings = Settings(db_url=db_url)
        client = TestClient(create_app(settings, limits=limits or ServiceLimits(workers=2), load=load))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Served:
    """A real ``efface serve`` process.

    Attributes:
        base_url: where it listens (loopback).
        process: the child process.
        api_key: a key with a high rate limit.
        db_url: its audit database (in ``db_dir``).
        db_dir: the only folder it may write to.
        workdir: its working directory (must stay empty).
        tmpdir: its ``TMPDIR`` (must stay empty).
        log: its stdout and stderr.
    """

    base_url: str
    process: subprocess.Popen[bytes]
    api_key: str
    db_url: str
    db_dir: Path
    workdir: Path
    tmpdir: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def rss_bytes(self) -> int:
        return _status_kib(self.pid, "VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        return _status_kib(self.pid, "VmHWM") * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def start_server(root: Path, *args: str) -> Served:
    """Starts ``python -m efface serve`` on a free loopback port and waits until it is ready."""
    db_dir, workdir, tmpdir = root / "db", root / "cwd", root / "tmp"
    for folder in (db_dir, workdir, tmpdir):
        folder.mkdir(parents=True)
    db_url = f"sqlite:///{db_dir / 'audit.sqlite3'}"
    api_key = create_key(db_url, "served", rate_limit_per_min=1_000_000)
    port = free_port()
    # No ORT_* either: efface itself must switch onnxruntime's telemetry file off (the no-file test checks).
    env = {name: value for name, value in os.environ.items() if not name.startswith(("EFFACE_", "ORT_"))}
    env |= {"EFFACE_DB_URL": db_url, "EFFACE_CONFIG": str(root / "no-config.toml"), "TMPDIR": str(tmpdir)}
    log = root / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "efface", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    served = Served(f"http://127.0.0.1:{port}", process, api_key, db_url, db_dir, workdir, tmpdir, log)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"efface serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{served.base_url}/readyz", timeout=1.0).status_code == 200:
                return served
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(served)
    raise RuntimeError(f"efface serve did not become ready in {SERVER_START_TIMEOUT_S} s:\n{log.read_text()}")


# uvicorn re-raises SIGTERM once it has shut down gracefully, so a clean stop may end by that signal.
CLEAN_EXITS = frozenset({0, -signal.SIGTERM})


def stop_server(served: Served) -> int:
    """Stops the server as an operator would (SIGTERM) and returns its exit status."""
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()
    return served.process.returncode


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One real server for the slow tests of this folder, stopped (and its audit run finished) at the end."""
    server = start_server(tmp_path_factory.mktemp("served"), "--workers", "2")
    yield server
    assert stop_server(server) in CLEAN_EXITS, server.log.read_text()
