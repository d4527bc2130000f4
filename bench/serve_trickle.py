"""A normal client's ``/v1/detect`` latency while hundreds of connections trickle their headers (slowloris).

Run by hand (not a test): ``.venv/bin/python bench/serve_trickle.py [--connections 400] [--duration-s 30]``.

It starts a real ``efface serve`` at its default settings (``--workers`` = cores, ``--queue 64``) on a free
loopback port, opens ``--connections`` connections that each send a request line and then one header line
every ``--interval-s`` without ever ending the headers (a connection the server closes is opened again, as an
attacker would), and meanwhile sends ``POST /v1/detect`` with the 1024x576 five-face photo of
``bench/serve.py``, one request after another, for ``--duration-s``. It reports the answers by status, the
latency median and p95 of the 200s, and how many trickling connections the server closed. Without a header
timeout and with admission counted per connection, every answer was a bare 503.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "bench"))

from make_sample import group_photo  # noqa: E402
from serve import start_server  # noqa: E402

_REQUEST_LINE = b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"


class Trickle:
    """``connections`` sockets trickling header lines; reopened when the server closes them."""

    def __init__(self, host: str, port: int, *, connections: int, interval_s: float) -> None:
        self.address = (host, port)
        self.interval_s = interval_s
        self.closed_by_server = 0
        self._sockets = [self._open() for _ in range(connections)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=5)
        sock.sendall(_REQUEST_LINE)
        return sock

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for index, sock in enumerate(self._sockets):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    sock.close()
                    self.closed_by_server += 1
                    try:
                        self._sockets[index] = self._open()
                    except OSError:
                        continue

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self._sockets:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=400, help="trickling connections")
    parser.add_argument("--interval-s", type=float, default=1.0, help="seconds between header lines")
    parser.add_argument("--duration-s", type=float, default=30.0, help="how long the normal client runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="efface-bench-trickle-") as folder:
        work = Path(folder)
        photo_path = work / "group.jpg"
        group_photo().resize((1024, 576), Image.Resampling.LANCZOS).save(photo_path, quality=92)
        photo = photo_path.read_bytes()
        process, base_url, key = start_server(work, None)
        address = urlsplit(base_url)
        statuses: Counter[int | str] = Counter()
        latencies_s: list[float] = []
        try:
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
                http.post("/v1/detect", files={"file": ("group.jpg", photo)})  # warm-up
                with Trickle(
                    address.hostname or "127.0.0.1",
                    address.port or 80,
                    connections=args.connections,
                    interval_s=args.interval_s,
                ) as trickle:
                    end_s = time.monotonic() + args.duration_s
                    while time.monotonic() < end_s:
                        t0 = time.perf_counter()
                        try:
                            status: int | str = http.post(
                                "/v1/detect", files={"file": ("group.jpg", photo)}
                            ).status_code
                        except httpx.TransportError as exc:
                            status = type(exc).__name__
                        statuses[status] += 1
                        if status == 200:
                            latencies_s.append(time.perf_counter() - t0)
                        else:
                            time.sleep(0.1)
                    closed = trickle.closed_by_server
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    print(
        f"efface serve (defaults: --workers {os.cpu_count()}, --queue 64) on {platform.machine()}, "
        f"Python {platform.python_version()}; {args.connections} connections trickling a header line every "
        f"{args.interval_s:g} s for {args.duration_s:g} s; /v1/detect of a 1024x576 JPEG ({len(photo):,} bytes)"
    )
    print(f"answers: {dict(statuses)}; trickling connections closed by the server: {closed}")
    if len(latencies_s) >= 2:
        p95_s = statistics.quantiles(latencies_s, n=100, method="inclusive")[94]
        print(
            f"normal client's latency over {len(latencies_s)} answers of 200: "
            f"median {statistics.median(latencies_s) * 1000:.1f} ms, p95 {p95_s * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
