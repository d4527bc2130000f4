"""Planning a run over a large tree: time to the first file, time to walk everything, and memory held.

Run by hand (not a test):

    .venv/bin/python bench/listing.py --files 100000 --per-folder 1000

It makes a tree of empty ``.jpg`` files in a temporary folder (the planner only lists and stats; no image is
read), then walks it with ``plan_jobs(...).items()`` the way ``efface anonymize`` does, in a fresh process
so that the peak resident memory is the walk's own. The held-memory figure counts the ``FileJob`` objects
still alive half way through, which is what a list-based plan would grow by.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PROBE = r"""
import gc, json, resource, sys, time
from pathlib import Path
from efface.pipeline.jobs import plan_jobs
from efface.pipeline.core import FileJob

root = Path(sys.argv[1])
t0 = time.perf_counter()
items = plan_jobs([root]).items()
first = next(items)
first_s = time.perf_counter() - t0
count, alive_half = 1, None
total = int(sys.argv[2])
for _ in items:
    count += 1
    if count == total // 2:
        gc.collect()
        alive_half = sum(isinstance(o, FileJob) for o in gc.get_objects())
print(json.dumps({
    "items": count,
    "first_item_s": first_s,
    "walk_s": time.perf_counter() - t0,
    "jobs_alive_half_way": alive_half,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""

_BASELINE = r"""
import resource, json
from efface.pipeline import jobs
print(json.dumps({"import_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--per-folder", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="efface-listing-") as tmp:
        root = Path(tmp) / "dataset"
        for index in range(args.files):
            folder = root / f"{index // args.per_folder:05d}"
            if index % args.per_folder == 0:
                folder.mkdir(parents=True)
            (folder / f"{index:07d}.jpg").touch()
        baseline = json.loads(subprocess.run([sys.executable, "-c", _BASELINE], capture_output=True, check=True).stdout)
        t0 = time.perf_counter()
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, str(root), str(args.files)], capture_output=True, text=True, check=True
        )
        figures = json.loads(probe.stdout)
        figures["process_s"] = time.perf_counter() - t0
    figures.update(baseline)
    print(
        f"{figures['items']:,} files in {args.files // args.per_folder:,} folders: first file planned after "
        f"{figures['first_item_s'] * 1000:.1f} ms, whole walk {figures['walk_s']:.2f} s; "
        f"FileJobs alive half way: {figures['jobs_alive_half_way']}; peak RSS {figures['peak_rss_mib']:.1f} MiB "
        f"(imports alone {figures['import_rss_mib']:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
