"""What the pending row costs per file: N small PNGs anonymized in place through ``run_plan`` (this process,
a static detector, an SQLite audit log), once as efface does it (a pending row, the replace, the file's row) and
once with the file's row alone (the staged output swapped in, then recorded: the order before the pending row).
It prints milliseconds per file, the commits per file (counted on the store's engine) and the time of the
per-file look-up for unsettled pending rows that every run now makes.

    .venv/bin/python bench/audit_intent.py                 # 4 rounds of 300 files, SQLite in a temporary folder
    .venv/bin/python bench/audit_intent.py --files 1000 --db-dir /var/tmp
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from PIL import Image

from efface.audit import AuditStore
from efface.detection import StaticModels
from efface.media.atomic import claim
from efface.pipeline import Policy, plan_jobs
from efface.pipeline.core import StagedResult
from efface.pipeline.pool import InProcess
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import BBox, Face, WriteMode

MODELS = StaticModels(faces=(Face(BBox(8, 8, 40, 40), 0.9),))


class _RecordOnly(InProcess):
    """Swaps every output in before the run records it: no pending row (what efface did before)."""

    def results(self, jobs: object) -> Iterator[StagedResult]:
        for done in super().results(jobs):  # type: ignore[arg-type]
            if done.staged is not None:
                claim(done.staged).commit()
            yield StagedResult(done.result)


def _photos(folder: Path, count: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"{index:05d}.png")


def _timed(folder: Path, db: Path, executor: InProcess) -> tuple[float, int]:
    url = f"sqlite:///{db}"
    commits = 0
    with AuditStore(url) as store:
        engine: sa.Engine = store._engine  # the bench counts commits on the store's own connections

        def count(_connection: object) -> None:
            nonlocal commits
            commits += 1

        sa.event.listen(engine, "commit", count)
        run = AuditedRun.begin(store, command="bench", mode=WriteMode.IN_PLACE, models=MODELS, settings={})
        t0 = time.perf_counter()
        with run:
            run_plan(plan_jobs([folder]).items(), executor=executor, run=run)
        elapsed = time.perf_counter() - t0
        t1 = time.perf_counter()
        for path in sorted(folder.iterdir()):
            store.unsettled_pending(path)
        lookup_s = (time.perf_counter() - t1) / args_files(folder)
    print(f"  (the look-up for unsettled pending rows, also in both: {lookup_s * 1e6:.0f} us/file)")
    return elapsed, commits


def args_files(folder: Path) -> int:
    return sum(1 for _ in folder.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--db-dir", type=Path, default=None, help="where the SQLite files go (default: a temp dir)")
    args = parser.parse_args()
    policy = Policy()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack():
        root = Path(tmp)
        db_dir = args.db_dir or root
        figures: dict[str, list[float]] = {"pending + confirm": [], "record only": []}
        executors = {"pending + confirm": InProcess(MODELS, policy), "record only": _RecordOnly(MODELS, policy)}
        for round_index in range(args.rounds):  # alternating, so neither always runs first
            names = list(executors) if round_index % 2 == 0 else list(reversed(executors))
            for name in names:
                folder = root / f"{name.replace(' ', '_').replace('+', 'and')}_{round_index}"
                _photos(folder, args.files)
                elapsed, commits = _timed(folder, db_dir / f"{folder.name}.sqlite3", executors[name])
                figures[name].append(elapsed / args.files)
                print(f"{name:18s} {elapsed / args.files * 1000:7.2f} ms/file  {commits / args.files:.2f} commits/file")
        mean = {name: sum(values) / len(values) for name, values in figures.items()}
        extra = mean["pending + confirm"] - mean["record only"]
        print(f"the pending row costs {extra * 1000:+.2f} ms per file")


if __name__ == "__main__":
    main()
