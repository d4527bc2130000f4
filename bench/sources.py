"""Datasets where they live: images per second of ``efface anonymize`` on the same photos as loose files, as
objects in a versioned S3 bucket, in WebDataset shards and in Parquet files, each in process (``--jobs 1``) and
on a local Ray cluster of two actors (``--ray local`` on this 2-core machine), and of the Ray Data stage
(``efface.ray_data.AnonymizeImages`` on two actors) over the loose files.

Run by hand (not a test), e.g. on the WIDER FACE sample beside the repository:

    .venv/bin/python bench/sources.py ../shared/data/wider-dev/images --limit 200 --runs 3

Every figure is the median of ``--runs`` runs of a command line, start-up (and Ray's) included, each on fresh
inputs: the files copied again, the bucket filled again. The bucket is on moto's S3 server on loopback (a fresh
server for each measurement; versioning on, so every write also lists the key's versions and deletes the one
read); shards hold 50 photos each, Parquet files 50 rows each in row groups of 10 (a ``datasets``-style image
struct column), and "one Parquet file" is every photo in a single file in row groups of 10 (which Ray spreads
over its actors by row groups). The Ray Data stage reads the loose files with ``read_binary_files`` and writes
Parquet to a scratch folder.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _files import fresh_copies  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
PER_CONTAINER = 50
ROW_GROUP = 10

RAY_DATA_SCRIPT = """
import sys, ray
from efface.ray_data import AnonymizeImages, DatasetRun
folder, out, db = sys.argv[1:4]
ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
with DatasetRun.begin(db_url=db) as run:
    dataset = ray.data.read_binary_files(folder, include_paths=True)
    dataset.map_batches(
        AnonymizeImages,
        fn_constructor_kwargs={"run": run.handle},
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=8,
        batch_format="pyarrow",
    ).write_parquet(out)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _s3_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("moto's S3 server did not start")


def _client(env: dict[str, str]) -> object:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def _fill_bucket(images: list[Path], env: dict[str, str], name: str) -> str:
    client: object = _client(env)
    client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    client.put_bucket_versioning(  # type: ignore[attr-defined]
        Bucket=name, VersioningConfiguration={"Status": "Enabled"}
    )
    for index, path in enumerate(images):
        client.put_object(  # type: ignore[attr-defined]
            Bucket=name, Key=f"photos/{index:05d}{path.suffix.lower()}", Body=path.read_bytes()
        )
    return f"s3://{name}/photos/"


def _write_shards(images: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for start in range(0, len(images), PER_CONTAINER):
        with tarfile.open(folder / f"shard-{start // PER_CONTAINER:06d}.tar", "w") as tar:
            for index, path in enumerate(images[start : start + PER_CONTAINER], start):
                tar.add(path, arcname=f"{index:05d}{path.suffix.lower()}")
    return folder


def _write_tables(images: list[Path], folder: Path, *, per_file: int = PER_CONTAINER) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for start in range(0, len(images), per_file):
        chunk = images[start : start + per_file]
        cells = [{"bytes": path.read_bytes(), "path": path.name} for path in chunk]
        table = pa.table({"image": pa.array(cells, image), "index": list(range(start, start + len(chunk)))})
        pq.write_table(table, folder / f"part-{start // per_file:05d}.parquet", row_group_size=ROW_GROUP)
    return folder


def _timed(command: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    completed = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - t0
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="a folder of photos (walked recursively)")
    parser.add_argument("--limit", type=int, default=200, help="photos to use")
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (the median is reported)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not images:
        raise SystemExit(f"no photos under {args.images}")
    efface = str(Path(sys.executable).parent / "efface")
    # Ray's memory monitor kills workers when the machine passes 95 % of its memory; each cluster this bench starts
    # and stops leaves processes exiting for a while, which it counted against the next (a kill, not a slowdown).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0"}
    servers: list[subprocess.Popen[bytes]] = []

    def fill_bucket(tag: str) -> str:
        # A fresh server for every measurement: moto copies the whole bucket into memory on every version listing
        # (efface lists a key's versions once per object written) and never gives it back.
        servers.append(_s3_server(env))
        return _fill_bucket(images, env, tag.replace("_", "-").lower())

    seconds: dict[tuple[str, str], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="efface-bench-sources-") as scratch:
            work = Path(scratch)
            sources: dict[str, Callable[[str], str]] = {
                "loose files": lambda tag: str(fresh_copies(images, work / tag)[0].parent),
                "S3 bucket": fill_bucket,
                "WebDataset shards": lambda tag: str(_write_shards(images, work / tag)),
                "Parquet": lambda tag: str(_write_tables(images, work / tag)),
                "one Parquet file": lambda tag: str(_write_tables(images, work / tag, per_file=len(images))),
            }
            for run in range(args.runs):
                for source, prepare in sources.items():
                    for mode, options in (("in process", ["--jobs", "1"]), ("Ray, 2 actors", ["--ray", "local"])):
                        tag = f"r{run}-{source.replace(' ', '_')}-{mode.split()[0].strip(',')}"
                        target = prepare(tag)
                        db = f"sqlite:///{work / (tag + '.sqlite3')}"
                        took = _timed([efface, "anonymize", target, "--db", db, *options], env)
                        seconds.setdefault((source, mode), []).append(took)
                        while servers:
                            servers.pop().kill()
                        print(f"run {run + 1}: {source}, {mode}: {len(images) / took:.2f} images/s", flush=True)
                tag = f"r{run}-raydata"
                folder = str(fresh_copies(images, work / tag)[0].parent)
                db = f"sqlite:///{work / (tag + '.sqlite3')}"
                command = [sys.executable, "-c", RAY_DATA_SCRIPT, folder, str(work / (tag + "-out")), db]
                took = _timed(command, env)
                seconds.setdefault(("loose files", "Ray Data stage, 2 actors"), []).append(took)
                print(f"run {run + 1}: Ray Data stage: {len(images) / took:.2f} images/s", flush=True)
    finally:
        for server in servers:
            server.kill()
    rates = {key: len(images) / statistics.median(values) for key, values in seconds.items()}
    print(f"\n{len(images)} photos from {args.images}; images/s, median of {args.runs} runs, start-up included")
    print("source | in process | on Ray (2 actors) | Ray / in process")
    for source in ("loose files", "S3 bucket", "WebDataset shards", "Parquet", "one Parquet file"):
        local, ray = rates[(source, "in process")], rates[(source, "Ray, 2 actors")]
        print(f"{source} | {local:.2f} | {ray:.2f} | {ray / local:.2f}")
    stage = rates[("loose files", "Ray Data stage, 2 actors")]
    local = rates[("loose files", "in process")]
    print(f"Ray Data stage (loose files) | {local:.2f} | {stage:.2f} | {stage / local:.2f}")
    if args.json:
        args.json.write_text(json.dumps({f"{s} / {m}": r for (s, m), r in rates.items()}, indent=2))


if __name__ == "__main__":
    main()
