"""A real ``efface serve`` process on a loopback port: the client against it, malformed uploads, keys managed
while it runs, no file written while serving, a bounded load test and a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from efface.audit import AuditStore
from efface.client import AsyncClient, AuthenticationError, Client, RequestRejectedError, ServiceError
from efface.records import Outcome, RunStatus

from .conftest import CLEAN_EXITS, Served, jpeg, start_server, stop_server

pytestmark = pytest.mark.slow


def test_client_against_the_server(served: Served, tmp_path: Path, astronaut_jpeg: bytes) -> None:
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    with Client(served.base_url, api_key=served.api_key) as client:
        result = client.anonymize(photo, method="pixelate", strength=8)
        assert result.faces == result.faces_anonymized == 1 and result.media_type == "image/jpeg"
        assert result.image[:2] == b"\xff\xd8" and result.image != astronaut_jpeg
        (face,) = result.boxes
        assert 150 < face.box.x1 < face.box.x2 < 300 and face.score > 0.8
        assert client.detect(astronaut_jpeg).boxes == result.boxes
        with pytest.raises(RequestRejectedError) as caught:
            client.anonymize(astronaut_jpeg[:1000], filename="cut.jpg")
        assert caught.value.status_code == 422 and caught.value.error_type == "CorruptImageError"
    with Client(served.base_url, api_key=served.api_key[:-4] + "AAAA") as client, pytest.raises(AuthenticationError):
        client.detect(astronaut_jpeg)

    async def run() -> list[int]:
        async with AsyncClient(served.base_url, api_key=served.api_key) as client:
            results = await asyncio.gather(*(client.anonymize(astronaut_jpeg, return_boxes=False) for _ in range(4)))
        return [r.faces for r in results if not r.boxes]

    assert asyncio.run(run()) == [1, 1, 1, 1]


def test_malformed_uploads_never_get_a_500(served: Served, malformed_uploads: dict) -> None:
    with httpx.Client(base_url=served.base_url, headers=served.auth) as http:
        for label, (name, content, status, error_type) in malformed_uploads.items():
            response = http.post("/v1/anonymize", files={"file": (name, content)})
            assert (response.status_code, response.json()["error"]["type"]) == (status, error_type), label
        body = httpx.Request("POST", served.base_url, files={"file": ("a.jpg", b"x" * 5000)}).read()
        headers = {"Content-Type": "multipart/form-data; boundary=" + body[2:34].decode()}
        for broken in (body[:2500], body.replace(b"Content-Disposition", b"Content-Dispositio"), b"\x00" * 100):
            response = http.post("/v1/anonymize", content=broken, headers=headers)
            assert response.status_code == 400 and response.json()["error"]["type"] == "MalformedRequestError"


def _efface(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "efface", *args, "--db", db_url], capture_output=True, text=True, check=True
    )


def test_keys_created_and_revoked_while_the_server_runs(served: Served, astronaut_jpeg: bytes) -> None:
    key = _efface("keys", "create", "late client", db_url=served.db_url).stdout.strip()
    files = {"file": ("a.jpg", astronaut_jpeg)}
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{served.base_url}/v1/detect", files=files, headers=auth).status_code == 200
    _efface("keys", "revoke", key.split("_")[1], db_url=served.db_url)
    response = httpx.post(f"{served.base_url}/v1/detect", files=files, headers=auth)
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def open_paths(pid: int) -> set[str]:
    """What the process's file descriptors point at (an unlinked temporary file ends in '(deleted)')."""
    targets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            targets.add(os.readlink(fd))
        except FileNotFoundError:  # closed meanwhile
            continue
    return targets


def written_paths(pid: int, *, allowed: tuple[Path, ...]) -> set[str]:
    """Open regular files that are neither read-only program files nor under ``allowed``."""
    program = tuple(str(p) for p in {Path(sys.prefix), Path(sys.base_prefix), Path("/usr"), Path("/lib")})
    suspects = set()
    for target in open_paths(pid):
        if not target.startswith("/") or target.startswith(("/dev/", "/proc/", "/sys/")):
            continue  # sockets, pipes, anon inodes, devices
        if "(deleted)" in target or not target.startswith((*program, *(str(p) for p in allowed))):
            suspects.add(target)
    return suspects


def test_the_fd_check_sees_an_unlinked_temporary_file() -> None:
    """The check below has teeth: Starlette's spooled upload files are unlinked at once (O_TMPFILE)."""
    with tempfile.TemporaryFile() as spool:
        spool.write(b"pixels")
        target = os.readlink(f"/proc/self/fd/{spool.fileno()}")
        assert target in written_paths(os.getpid(), allowed=(Path(tempfile.gettempdir()),))


def _slow_upload(content: bytes, boundary: str) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    for start in range(0, len(content), 256 * 1024):
        time.sleep(0.02)  # the upload takes a while, so the files it opens are open while we look
        yield content[start : start + 256 * 1024]
    yield f"\r\n--{boundary}--\r\n".encode()


def test_the_server_writes_no_file_while_serving(served: Served, astronaut: np.ndarray) -> None:
    # A 4 MB image: Starlette's form parser would spool anything over 1 MB to a temporary file.
    rng = np.random.default_rng(0)
    big = np.tile(astronaut, (3, 3, 1)).copy()
    big[::7] = rng.integers(0, 255, big[::7].shape, dtype=np.uint8)
    content = jpeg(big, quality=100)
    assert len(content) > 3_000_000
    suspects: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            suspects.update(written_paths(served.pid, allowed=(served.db_dir, served.log)))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with httpx.Client(base_url=served.base_url, headers=served.auth, timeout=60) as http:
            for path in ("/v1/anonymize", "/v1/detect"):
                boundary = "efface-test-boundary"
                response = http.post(
                    path,
                    content=_slow_upload(content, boundary),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
                assert response.status_code == 200, response.text
                assert response.json()["faces"] >= 1
            assert http.post("/v1/anonymize", files={"file": ("bad.jpg", content[:100_000])}).status_code == 422
    finally:
        done.set()
        watcher.join()
    assert suspects == set()
    assert list(served.workdir.iterdir()) == [] and list(served.tmpdir.iterdir()) == []
    assert {p.name for p in served.db_dir.iterdir()} <= {"audit.sqlite3", "audit.sqlite3-wal", "audit.sqlite3-shm"}


def _load_images(astronaut: np.ndarray, count: int) -> list[bytes]:
    """Generated 640x480 photos: noise, shapes and zero to two faces at random places."""
    rng = np.random.default_rng(7)
    images = []
    face = astronaut[30:230, 150:310]
    for index in range(count):
        canvas = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) // 2 + 64
        canvas[rng.integers(0, 400) :, rng.integers(0, 560) :][:80, :80] = rng.integers(0, 255, 3)
        for _ in range(index % 3):
            y, x = rng.integers(0, 480 - 200), rng.integers(0, 640 - 160)
            canvas[y : y + 200, x : x + 160] = face
        images.append(jpeg(canvas))
    return images


def test_load_500_requests_32_concurrent_without_errors_and_with_stable_memory(
    served: Served, astronaut: np.ndarray
) -> None:
    images = _load_images(astronaut, 16)
    total, concurrency, warm_up = 500, 32, 100
    rss: dict[str, int] = {}
    failures: list[str] = []
    faces: list[int] = []

    async def run() -> None:
        counter = iter(range(total))
        async with AsyncClient(served.base_url, api_key=served.api_key, timeout_s=120, max_retries=0) as client:

            async def worker() -> None:
                for index in counter:
                    if index == warm_up:
                        rss["after warm-up"] = served.rss_bytes()
                    try:
                        result = await client.anonymize(images[index % len(images)], filename=f"{index}.jpg")
                        faces.append(result.faces)
                    except ServiceError as exc:  # counted, then asserted on
                        failures.append(f"{index}: {type(exc).__name__}: {exc}")

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    t0 = time.perf_counter()
    asyncio.run(run())
    elapsed_s = time.perf_counter() - t0
    rss["end"] = served.rss_bytes()

    assert failures == []
    assert len(faces) == total and sum(faces) >= total * 2 // 3  # about one face per image
    growth_mib = (rss["end"] - rss["after warm-up"]) / 2**20
    assert growth_mib < 64, f"RSS grew {growth_mib:.1f} MiB after warm-up ({rss}); {total / elapsed_s:.1f} req/s"
    metrics = httpx.get(f"{served.base_url}/metrics").text
    assert 'efface_rejected_requests_total{type="ServerBusyError"}' not in metrics
    assert "efface_requests_in_flight 0.0" in metrics


def test_a_stopped_server_finishes_its_audit_run(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    server = start_server(tmp_path, "--workers", "1")
    try:
        with Client(server.base_url, api_key=server.api_key) as client:
            client.anonymize(astronaut_jpeg)
            with pytest.raises(RequestRejectedError):
                client.anonymize(b"")
    finally:
        assert stop_server(server) in CLEAN_EXITS, server.log.read_text()
    with AuditStore(server.db_url) as store:
        (run,) = store.list_runs()
        rows = store.list_files(run.run_id)
    # A clean stop finishes the run; the refused request is its own row's to tell.
    assert run.command == "serve" and run.status is RunStatus.COMPLETED and run.finished_at is not None
    assert (run.files_total, run.files_failed, run.faces_anonymized) == (2, 1, 1)
    assert [row.outcome for row in rows] == [Outcome.ANONYMIZED, Outcome.ERROR]
    assert all(row.details["client"] == "127.0.0.1" for row in rows)


def test_ctrl_c_is_a_clean_stop_recorded_as_completed(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    server = start_server(tmp_path, "--workers", "1")
    try:
        with Client(server.base_url, api_key=server.api_key) as client:
            client.detect(astronaut_jpeg)
        files = {"file": ("a.jpg", astronaut_jpeg)}
        unauthorised = httpx.post(f"{server.base_url}/v1/anonymize", files=files, headers={"Authorization": "Bearer x"})
        assert unauthorised.status_code == 401
        unsupported = httpx.post(
            f"{server.base_url}/v1/anonymize", files={"file": ("a.gif", b"GIF89a")}, headers=server.auth
        )
        assert unsupported.status_code in (415, 422)
    finally:
        server.process.send_signal(signal.SIGINT)  # Ctrl-C in the terminal that runs ``efface serve``
        try:
            returncode = server.process.wait(timeout=30)
        finally:
            stop_server(server)
    # 130 = 128 + SIGINT: uvicorn hands the Ctrl-C on once it has shut down, as a shell reports it.
    assert returncode in {0, 130, -signal.SIGINT}, server.log.read_text()
    with AuditStore(server.db_url) as store:
        (run,) = store.list_runs()
        rows = store.list_files(run.run_id)
    assert [row.outcome for row in rows] == [Outcome.DRY_RUN, Outcome.ERROR, Outcome.ERROR]
    assert run.status is RunStatus.COMPLETED and run.finished_at is not None, run


def test_a_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db_url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
        result = subprocess.run(
            [sys.executable, "-m", "efface", "serve", "--port", str(port), "--db", db_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "address already in use" in result.stderr.lower()
    with AuditStore(db_url) as store:
        (run,) = store.list_runs()
    assert run.status is RunStatus.COMPLETED and run.files_total == 0  # started, then finished, not left running
