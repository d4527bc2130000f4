"""Scaling on one machine and on Ray: images per second of ``efface anonymize`` with 1 and 2 processes
(``--jobs``) and on a Ray cluster of this machine (``--ray local``), beside deface in the same run.

Run by hand (not a test), e.g. on the WIDER FACE sample beside the repository:

    .venv/bin/python bench/scale.py ../shared/data/wider-dev/images --limit 120

Each tool gets a fresh copy of the same images and runs from its command line (start-up, decoding,
detection, anonymization, encoding and the atomic replace all included); efface with its default preset
and audit (SQLite), deface 1.5.0 at its defaults in its own virtual environment (``bench/_deface.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _deface import DEFACE_VERSION, deface_executable  # noqa: E402
from _files import fresh_copies  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _images_per_s(command: list[str], count: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="a folder of photos (walked recursively)")
    parser.add_argument("--limit", type=int, default=120, help="photos to use")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not images:
        raise SystemExit(f"no photos under {args.images}")
    efface = str(Path(sys.executable).parent / "efface")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="efface-bench-scale-") as scratch:
        work = Path(scratch)
        copies = fresh_copies(images, work / "deface")
        figures[f"deface {DEFACE_VERSION}"] = _images_per_s([str(deface_executable()), *map(str, copies)], len(copies))
        for label, options in (
            ("efface --jobs 1", ["--jobs", "1"]),
            ("efface --jobs 2", ["--jobs", "2"]),
            ("efface --ray local", ["--ray", "local"]),
        ):
            folder = work / label.replace(" ", "_")
            fresh_copies(images, folder)
            db = f"sqlite:///{work / (folder.name + '.sqlite3')}"
            figures[label] = _images_per_s([efface, "anonymize", str(folder), "--db", db, *options], len(images))
    baseline = figures[f"deface {DEFACE_VERSION}"]
    print(f"{len(images)} photos from {args.images}; images/s from each command line, start-up included")
    print("tool | images/s | x deface")
    for label, rate in figures.items():
        print(f"{label} | {rate:.2f} | {rate / baseline:.2f}")
    print(f"speed-up from 1 to 2 processes: {figures['efface --jobs 2'] / figures['efface --jobs 1']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
