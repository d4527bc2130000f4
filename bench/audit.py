"""Audit log throughput: rows appended per second through the hash chain with 1 and 8 writer processes on SQLite
and PostgreSQL, then the export rate (and peak memory) of ``efface audit export`` and the verify rate on a log of
a million file rows.

    .venv/bin/python bench/audit.py                       # SQLite and the PostgreSQL at 127.0.0.1:5432
    .venv/bin/python bench/audit.py --backends sqlite --export-rows 100000

Appends go through ``AuditStore.record_file``: one transaction per file, the chain lock, the record and its chain
row, committed (fsync) as ``efface anonymize`` does. The export log is filled with ``record_files`` in batches of
10,000 (also chained), then exported by the CLI in a child process whose peak RSS is read with ``wait4``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from efface.audit import AuditStore
from efface.records import AnonymizationResult, BBox, Face, Outcome, RunInfo, RunStatus, RunSummary, WriteMode

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://root@127.0.0.1:5432/test"

WRITER = textwrap.dedent(
    """
    import sys, time, uuid
    from datetime import UTC, datetime
    from pathlib import Path
    from efface.audit import AuditStore
    from efface.records import AnonymizationResult, BBox, Face, Outcome, RunInfo, RunStatus, RunSummary, WriteMode

    url, count, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    faces = (Face(BBox(10.0, 20.0, 60.0, 80.0), 0.93),)
    with AuditStore(url) as store:
        while not go.exists():
            time.sleep(0.005)
        t0 = time.time()
        run_id = uuid.uuid4().hex
        store.start_run(RunInfo(run_id, datetime.now(UTC), "bench", "anonymize", WriteMode.IN_PLACE,
                                "centerface", "0" * 64, {"method": "fill"}, "bench"))
        for i in range(count):
            store.record_file(run_id, AnonymizationResult(
                Path(f"/photos/{run_id[:8]}/IMG_{i:06d}.jpg"), Outcome.ANONYMIZED, WriteMode.IN_PLACE,
                datetime.now(UTC), 0.05, output_path=Path(f"/photos/{run_id[:8]}/IMG_{i:06d}.jpg"), faces=faces,
                faces_anonymized=1, output_sha256="ab" * 32, image_format="JPEG", resolution_wh=(1024, 768)))
        store.finish_run(run_id, RunSummary(RunStatus.COMPLETED, datetime.now(UTC), count, 0, count, count, 1.0))
        print(t0, time.time())
    """
)


class Database:
    """A fresh SQLite file or a fresh PostgreSQL schema, removed afterwards."""

    def __init__(self, backend: str, *, workdir: Path, pg_url: str) -> None:
        self.backend = backend
        if backend == "sqlite":
            self.url = f"sqlite:///{workdir / f'{uuid.uuid4().hex[:8]}.db'}"
            self._schema = None
        else:
            self._schema = f"efface_bench_{uuid.uuid4().hex[:8]}"
            self._admin = sa.create_engine(pg_url)
            with self._admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{self._schema}"'))
            self.url = f"{pg_url}?options=-csearch_path%3D{self._schema}"

    def drop(self) -> None:
        if self._schema is not None:
            with self._admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{self._schema}" CASCADE'))
            self._admin.dispose()


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }


def append_rate(url: str, *, writers: int, rows_each: int, workdir: Path) -> float:
    """Rows (files) per second appended by ``writers`` processes at once, each ``rows_each`` files."""
    AuditStore(url).close()  # migrate first: the measured part is appending only
    go = workdir / f"go-{uuid.uuid4().hex[:8]}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(rows_each), str(go)],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]
    time.sleep(2.0 + 0.5 * writers)  # let every writer import and open the store
    go.touch()
    spans = []
    for process in processes:
        out, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise RuntimeError(err)
        start, end = map(float, out.split())
        spans.append((start, end))
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    with AuditStore(url) as store:
        report = store.verify()
    if not report.is_intact or report.rows != 1 + writers * (rows_each + 2):
        raise RuntimeError(f"chain not intact after the writers: {report.rows} rows, {report.breaks[:3]}")
    return writers * rows_each / elapsed


def fill(url: str, rows: int) -> float:
    """Appends ``rows`` file rows in batches of 10,000; returns rows per second."""
    batch = 10_000
    faces = (Face(BBox(10.0, 20.0, 60.0, 80.0), 0.93), Face(BBox(100.0, 20.0, 150.0, 80.0), 0.71))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    start = time.perf_counter()
    with AuditStore(url) as store:
        run = RunInfo(uuid.uuid4().hex, t0, "bench", "anonymize", WriteMode.IN_PLACE, "centerface", "0" * 64, {}, "b")
        store.start_run(run)
        for first in range(0, rows, batch):
            store.record_files(
                run.run_id,
                [
                    AnonymizationResult(
                        Path(f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg"),
                        Outcome.ANONYMIZED,
                        WriteMode.IN_PLACE,
                        t0 + timedelta(seconds=i),
                        0.05,
                        output_path=Path(f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg"),
                        faces=faces,
                        faces_anonymized=2,
                        output_sha256=f"{i:064x}",
                        image_format="JPEG",
                        resolution_wh=(1024, 768),
                        details={"exif_removed": True},
                    )
                    for i in range(first, min(first + batch, rows))
                ],
            )
        store.finish_run(run.run_id, RunSummary(RunStatus.COMPLETED, t0, rows, 0, 2 * rows, 2 * rows, 1.0))
    return rows / (time.perf_counter() - start)


def timed_child(command: list[str]) -> tuple[float, float]:
    """Runs a command; returns its wall time (s) and peak RSS (MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(process.stderr.read().decode() if process.stderr else "failed")
    return elapsed, usage.ru_maxrss / 1024


def export_rates(url: str, rows: int, *, workdir: Path) -> list[tuple[str, float, float, float]]:
    """(format, rows/s, peak RSS MiB, file MiB) of ``efface audit export`` over the whole files table."""
    results = []
    for export_format in ("csv", "jsonl", "parquet"):
        out = workdir / f"export.{export_format}"
        command = [sys.executable, "-m", "efface", "audit", "export", "--db", url, "--format", export_format]
        elapsed, rss = timed_child([*command, "--out", str(out)])
        results.append((export_format, rows / elapsed, rss, out.stat().st_size / 2**20))
        out.unlink()
    return results


def verify_rate(url: str) -> tuple[float, float, int]:
    command = [sys.executable, "-m", "efface", "audit", "verify", "--db", url]
    elapsed, rss = timed_child(command)
    with AuditStore(url) as store:
        rows = store.verify().rows
    return rows / elapsed, rss, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--pg", default=os.environ.get("EFFACE_TEST_PG_URL", DEFAULT_PG), help="PostgreSQL URL")
    parser.add_argument("--rows-per-writer", type=int, default=500)
    parser.add_argument("--writers", default="1,8", help="comma-separated writer counts; empty skips appending")
    parser.add_argument("--export-rows", type=int, default=1_000_000, help="0 skips the export benchmark")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder [default: a temp folder]")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="efface-bench-audit-"))
    workdir.mkdir(parents=True, exist_ok=True)
    backends = args.backends.split(",")
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}, scratch {workdir}")

    writer_counts = [int(n) for n in args.writers.split(",") if n]
    if writer_counts:
        print("\nappend (one transaction per file, through the chain lock)")
        print(f"{'backend':<11} {'writers':>7} {'rows':>7} {'rows/s':>9}")
    for backend in backends:
        for writers in writer_counts:
            database = Database(backend, workdir=workdir, pg_url=args.pg)
            try:
                rate = append_rate(database.url, writers=writers, rows_each=args.rows_per_writer, workdir=workdir)
            finally:
                database.drop()
            print(f"{backend:<11} {writers:>7} {writers * args.rows_per_writer:>7} {rate:>9.0f}", flush=True)

    if not args.export_rows:
        return
    print(f"\nexport and verify of {args.export_rows:,} file rows (efface audit export / verify, one process)")
    print(f"{'backend':<11} {'what':<14} {'rows/s':>9} {'peak RSS MiB':>13} {'file MiB':>9}")
    for backend in backends:
        database = Database(backend, workdir=workdir, pg_url=args.pg)
        try:
            fill_rate = fill(database.url, args.export_rows)
            print(f"{backend:<11} {'fill (batched)':<14} {fill_rate:>9.0f}", flush=True)
            for export_format, rate, rss, size in export_rates(database.url, args.export_rows, workdir=workdir):
                print(
                    f"{backend:<11} {'export ' + export_format:<14} {rate:>9.0f} {rss:>13.0f} {size:>9.0f}", flush=True
                )
            rate, rss, rows = verify_rate(database.url)
            print(f"{backend:<11} {'verify':<14} {rate:>9.0f} {rss:>13.0f}   ({rows:,} chain rows)", flush=True)
        finally:
            database.drop()


if __name__ == "__main__":
    main()
