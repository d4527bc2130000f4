"""Peak RSS of ``efface serve`` after requests with nine different option sets (and the server's own).

Run by hand (not a test): ``.venv/bin/python bench/serve_options.py [--workers N] [--rounds 3]``.

It starts a real ``efface serve`` on a free loopback port (``bench/serve.py``'s ``start_server``: its own audit
database and API key in a temporary folder), sends one ``POST /v1/anonymize`` with the server's own settings,
then one with each of nine option sets that differ from them (method, strength, threshold, preset), ``--rounds``
times over, and reads the server's RSS and its high-water mark (``VmHWM``) from /proc after each round. A server
that loads a model per option set grows with the option sets; one that holds one copy of the model does not.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples"))

from make_sample import group_photo  # noqa: E402
from serve import _status_bytes, start_server  # noqa: E402

from efface.client import Client  # noqa: E402

# Nine option sets, each different from the server's defaults (fill, the balanced preset and its threshold).
OPTION_SETS: list[dict[str, object]] = [
    {"method": "blur"},
    {"method": "blur", "strength": 2.0},
    {"method": "pixelate"},
    {"method": "pixelate", "strength": 8},
    {"threshold": 0.5},
    {"preset": "fast"},
    {"preset": "thorough"},
    {"method": "blur", "threshold": 0.4},
    {"method": "pixelate", "preset": "fast"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="the server's --workers")
    parser.add_argument("--rounds", type=int, default=3, help="times the nine option sets are sent")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="efface-bench-options-") as folder:
        work = Path(folder)
        photo_path = work / "group.jpg"
        group_photo().resize((1024, 576), Image.Resampling.LANCZOS).save(photo_path, quality=92)
        photo = photo_path.read_bytes()
        process, base_url, key = start_server(work, args.workers)
        rows: list[tuple[str, int, int]] = []
        try:
            with Client(base_url, api_key=key, max_retries=0, timeout_s=300) as client:
                client.anonymize(photo, filename="group.jpg")
                rows.append(
                    (
                        "the server's own settings",
                        _status_bytes(process.pid, "VmRSS"),
                        _status_bytes(process.pid, "VmHWM"),
                    )
                )
                for round_index in range(args.rounds):
                    for options in OPTION_SETS:
                        result = client.anonymize(photo, filename="group.jpg", **options)  # type: ignore[arg-type]  # the table's values
                        if result.faces < 1:
                            raise SystemExit(f"no face found with {options}")
                    rows.append(
                        (
                            f"after round {round_index + 1} of the 9 option sets",
                            _status_bytes(process.pid, "VmRSS"),
                            _status_bytes(process.pid, "VmHWM"),
                        )
                    )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    print(
        f"efface serve --workers {args.workers} on {platform.machine()} with {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; 1024x576 JPEG, one request per option set"
    )
    print(f"{'after':<40} {'RSS MiB':>9} {'peak RSS (VmHWM) MiB':>21}")
    for label, rss, high_water in rows:
        print(f"{label:<40} {rss / 2**20:>9.1f} {high_water / 2**20:>21.1f}")


if __name__ == "__main__":
    main()
