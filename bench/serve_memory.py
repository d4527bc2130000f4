"""Peak and kept RSS of ``efface serve --workers 2`` answering two concurrent uploads of a 49 MP JPEG.

Run by hand (not a test): ``.venv/bin/python bench/serve_memory.py [--side-px 7000] [--uploads 2]``.

It starts a real ``efface serve --workers 2 --request-timeout 900`` on a free loopback port (its own audit
database and API key in a temporary folder), builds a ``--side-px`` square JPEG (smooth colour blobs with the
astronaut of scikit-image pasted in three times; 7000 px: 49 MP, under the service's 50 MP limit), sends
``--uploads`` ``POST /v1/detect`` of it at once and reports the RSS of the server's process tree (summed over
its processes, sampled from /proc every 20 ms) before, at its peak and after the answers, and how long they took.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "service"))

from _proc import tree_rss_bytes  # noqa: E402
from serve import start_server  # noqa: E402

_SAMPLE_EVERY_S = 0.02


def large_photo_jpeg(side_px: int) -> bytes:
    rng = np.random.default_rng(3)
    coarse = rng.integers(40, 220, (max(2, side_px // 500), max(2, side_px // 500), 3), dtype=np.uint8)
    canvas = cv2.resize(coarse, (side_px, side_px), interpolation=cv2.INTER_CUBIC)
    astronaut = data.astronaut()
    for fy, fx in ((0.07, 0.07), (0.43, 0.57), (0.86, 0.17)):
        y, x = int(fy * side_px), int(fx * side_px)
        canvas[y : y + 512, x : x + 512] = astronaut[: side_px - y, : side_px - x]
    sink = io.BytesIO()
    Image.fromarray(canvas).save(sink, format="JPEG", quality=85)
    return sink.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side-px", type=int, default=7000, help="the square image's side")
    parser.add_argument("--uploads", type=int, default=2, help="uploads sent at once")
    args = parser.parse_args()

    content = large_photo_jpeg(args.side_px)
    with tempfile.TemporaryDirectory(prefix="efface-bench-memory-") as folder:
        work = Path(folder)
        process, base_url, key = start_server(work, 2, "--request-timeout", "900")
        before = tree_rss_bytes(process.pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(_SAMPLE_EVERY_S):
                peak[0] = max(peak[0], tree_rss_bytes(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=900) as http:

                def upload(_: int) -> tuple[int, int]:
                    response = http.post("/v1/detect", files={"file": ("large.jpg", content)})
                    return response.status_code, int(response.json().get("faces", -1))

                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.uploads) as pool:
                    answers = list(pool.map(upload, range(args.uploads)))
                elapsed_s = time.perf_counter() - t0
            time.sleep(1.0)
            after = tree_rss_bytes(process.pid)
        finally:
            done.set()
            sampler.join()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    print(
        f"efface serve --workers 2 on {platform.machine()} with {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {args.uploads} concurrent /v1/detect of a {args.side_px}x{args.side_px} JPEG "
        f"({args.side_px**2 / 1e6:.1f} MP, {len(content):,} bytes)"
    )
    print(f"answers (status, faces): {answers} in {elapsed_s:.1f} s")
    print(
        f"server RSS (process tree): before {before / 2**30:.2f} GiB, peak {peak[0] / 2**30:.2f} GiB, "
        f"kept after {after / 2**30:.2f} GiB"
    )


if __name__ == "__main__":
    main()
