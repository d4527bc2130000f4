"""Requests per second, p50/p99 latency and the server's peak RSS of ``efface serve`` on a 1024 px photo.

Run by hand (not a test): ``.venv/bin/python bench/serve.py [--requests 200] [--concurrency 1 32] [--workers N]``.

It starts a real ``efface serve`` on a free loopback port (its own audit database and API key in a temporary
folder), then, for each concurrency level, keeps that many clients (``efface.client.AsyncClient``, no retries)
sending ``POST /v1/anonymize`` with the same 1024x576 JPEG holding five faces (the photo of
``bench/image_latency.py``) until ``--requests`` answers are in. Latency is per request as the client sees it
(upload, queueing, processing, base64 answer decoded). The server's RSS is sampled every 20 ms during each
level and its high-water mark (``VmHWM``) read at the end; its CPU time per request is read from /proc (it does
not depend on what else the machine runs). Load generator and server share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from make_sample import group_photo  # noqa: E402

from efface.audit import AuditStore  # noqa: E402
from efface.audit.keys import ApiKeyStore  # noqa: E402
from efface.client import AsyncClient, ServiceError  # noqa: E402

_SAMPLE_EVERY_S = 0.02


@dataclass(frozen=True)
class Level:
    concurrency: int
    requests: int
    errors: int
    elapsed_s: float
    latencies_s: list[float]
    peak_rss_bytes: int
    server_cpu_s: float

    @property
    def requests_per_s(self) -> float:
        return (self.requests - self.errors) / self.elapsed_s

    def percentile_ms(self, q: int) -> float:
        return statistics.quantiles(self.latencies_s, n=100, method="inclusive")[q - 1] * 1000.0


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def _cpu_s(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(work: Path, workers: int | None, *options: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """Starts ``efface serve`` (``--workers`` left at its default for None); returns it, its URL and a key."""
    db_url = f"sqlite:///{work / 'audit.sqlite3'}"
    with AuditStore(db_url) as store:
        key = ApiKeyStore(store).create("bench", rate_limit_per_min=10_000_000).value
    port = _free_port()
    env = {**os.environ, "EFFACE_DB_URL": db_url}
    command = [sys.executable, "-m", "efface", "serve", "--port", str(port)]
    command += [] if workers is None else ["--workers", str(workers)]
    command += options
    log = (work / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"efface serve exited:\n{(work / 'server.log').read_text()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return process, base_url, key
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("efface serve did not become ready")


async def _load(base_url: str, key: str, photo: bytes, *, concurrency: int, requests: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    remaining = iter(range(requests))
    # One kept-alive connection per client, as independent clients would have.
    pool = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport = httpx.AsyncHTTPTransport(limits=pool)
    async with AsyncClient(base_url, api_key=key, max_retries=0, timeout_s=300, transport=transport) as client:

        async def one_client() -> None:
            nonlocal errors
            for _ in remaining:
                t0 = time.perf_counter()
                try:
                    result = await client.anonymize(photo, filename="group.jpg")
                except ServiceError as exc:
                    errors += 1
                    print(f"  error: {exc}", file=sys.stderr)
                    continue
                latencies.append(time.perf_counter() - t0)
                if result.faces_anonymized < 1:
                    raise SystemExit("the server anonymized no face")

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return latencies, errors


def run_level(pid: int, base_url: str, key: str, photo: bytes, *, concurrency: int, requests: int) -> Level:
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status_bytes(pid, "VmRSS"))
            time.sleep(_SAMPLE_EVERY_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before_s, t0 = _cpu_s(pid), time.perf_counter()
    latencies, errors = asyncio.run(_load(base_url, key, photo, concurrency=concurrency, requests=requests))
    elapsed_s, cpu_s = time.perf_counter() - t0, _cpu_s(pid) - cpu_before_s
    done.set()
    sampler.join()
    return Level(concurrency, requests, errors, elapsed_s, latencies, peak[0], cpu_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="answers per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], help="clients at once, per level")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="the server's --workers")
    parser.add_argument("--warmup", type=int, default=8, help="requests before measuring")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="efface-bench-serve-") as folder:
        work = Path(folder)
        photo_path = work / "group.jpg"
        group_photo().resize((1024, 576), Image.Resampling.LANCZOS).save(photo_path, quality=92)
        photo = photo_path.read_bytes()
        process, base_url, key = start_server(work, args.workers)
        try:
            asyncio.run(_load(base_url, key, photo, concurrency=2, requests=args.warmup))
            levels = [
                run_level(process.pid, base_url, key, photo, concurrency=c, requests=args.requests)
                for c in args.concurrency
            ]
            high_water = _status_bytes(process.pid, "VmHWM")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    print(
        f"efface serve --workers {args.workers} on {platform.machine()} with {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; 1024x576 JPEG ({len(photo):,} bytes, 5 faces), "
        f"server and load generator on loopback"
    )
    print(
        f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'server CPU ms/req':>17} {'peak RSS MiB':>13}"
    )
    for level in levels:
        print(
            f"{level.concurrency:>7} {level.requests:>8} {level.errors:>6} {level.requests_per_s:>7.2f} "
            f"{level.percentile_ms(50):>8.1f} {level.percentile_ms(99):>8.1f} "
            f"{level.server_cpu_s / level.requests * 1000:>17.1f} {level.peak_rss_bytes / 2**20:>13.1f}"
        )
    print(f"server peak RSS over its whole life (VmHWM): {high_water / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
