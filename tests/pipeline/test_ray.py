"""The same pipeline on a real Ray cluster of this machine (2 worker processes), one of them killed mid-run."""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.cli import app
from efface.config import load_settings
from efface.pipeline import plan_jobs
from efface.pipeline.build import build_policy, load_models
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import Outcome, RunStatus

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'efface[ray]')")


def _photos(folder: Path, astronaut: np.ndarray, count: int) -> dict[str, bytes]:
    folder.mkdir()
    for index in range(count):
        canvas = np.full((300, 400, 3), 120 + index, np.uint8)
        canvas[20:276, 40 + index * 5 : 296 + index * 5] = astronaut[::2, ::2]
        Image.fromarray(canvas).save(folder / f"{index:02d}.jpg", quality=92)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.slow
def test_a_killed_ray_worker_loses_nothing(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    from efface.pipeline.ray import RayPool

    folder = tmp_path / "photos"
    originals = _photos(folder, astronaut, 12)
    settings = load_settings(db_url=sqlite_url)
    plan = plan_jobs([folder])
    make_models = functools.partial(load_models, settings, inference_threads=1)
    pool = RayPool(make_models, build_policy(settings), address="local", actors=2)
    try:
        pids = ray.get([actor.pid.remote() for actor in pool.actors])
        killed: list[int] = []

        def kill_one_worker(_result: object) -> None:
            if not killed:  # a file is in flight on every actor now: one of them dies under it
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        with AuditStore(sqlite_url) as store:
            run = AuditedRun.begin(
                store, command="anonymize", mode=plan.mode, models=make_models(), settings={}, on_result=kill_one_worker
            )
            with run:
                run_plan(plan.items(), executor=pool, run=run)
            summary = run.summary
            rows = store.list_files(run.run_id)
        assert killed and ray.get([actor.pid.remote() for actor in pool.actors])[0] != pids[0]  # restarted
    finally:
        pool.close()

    assert summary is not None
    assert summary.status is RunStatus.COMPLETED and summary.files_total == 12
    assert sorted(Path(row.path).name for row in rows) == sorted(originals)  # each file audited exactly once
    assert {row.outcome for row in rows} == {Outcome.ANONYMIZED}
    for name, content in originals.items():
        assert (folder / name).read_bytes() != content, name
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_cli_runs_on_ray_and_audits_like_a_local_run(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    folder = tmp_path / "photos"
    _photos(folder, astronaut, 4)
    result = CliRunner().invoke(app, ["anonymize", str(folder), "--ray", "local", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs()
        rows = store.list_files(run.run_id)
    assert [row.outcome for row in rows] == [Outcome.ANONYMIZED] * 4
    assert [Path(row.path).name for row in rows] == ["00.jpg", "01.jpg", "02.jpg", "03.jpg"]  # plan order


@pytest.mark.slow
def test_what_a_rerun_attempt_left_is_swept_when_the_results_are_in(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    # What Ray's own rerun of a task leaves, deterministically: an unlocked temporary that appears mid-run, as a
    # killed attempt's does when the kill lands after it was written (the walk's sweep ran before it existed).
    from efface.media.atomic import TEMP_MARKER
    from efface.pipeline.ray import RayPool

    folder = tmp_path / "photos"
    _photos(folder, astronaut, 4)
    dead_attempt = folder / f"{TEMP_MARKER}0123456789ab.jpg"
    settings = load_settings(db_url=sqlite_url)
    plan = plan_jobs([folder])
    make_models = functools.partial(load_models, settings, inference_threads=1)
    pool = RayPool(make_models, build_policy(settings), address="local", actors=2)

    def leave_a_temporary(_result: object) -> None:
        if not dead_attempt.exists():
            dead_attempt.write_bytes(b"half an anonymized photo")

    try:
        with AuditStore(sqlite_url) as store:
            run = AuditedRun.begin(
                store,
                command="anonymize",
                mode=plan.mode,
                models=make_models(),
                settings={},
                on_result=leave_a_temporary,
            )
            with run:
                run_plan(plan.items(), executor=pool, run=run)
    finally:
        pool.close()
    assert run.summary is not None and run.summary.status is RunStatus.COMPLETED
    assert not dead_attempt.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["00.jpg", "01.jpg", "02.jpg", "03.jpg"]


def test_an_unreachable_cluster_is_a_usage_error(tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    result = CliRunner().invoke(app, ["anonymize", str(tmp_path), "--ray", "127.0.0.1:9", "--db", sqlite_url])
    assert result.exit_code == 2
    assert "cannot reach the Ray cluster" in result.stderr


@pytest.mark.slow
def test_objects_shards_and_tables_run_on_ray(
    s3_env: Any, tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    """A versioned bucket of pictures, a shard and a Parquet file in it, anonymized on a local Ray cluster: the same
    rows as in process (one per object, member and cell), no version left with an original."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    jpeg = io.BytesIO()
    Image.fromarray(astronaut).save(jpeg, "JPEG")
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
        info = tarfile.TarInfo("s0.jpg")
        info.size = len(jpeg.getvalue())
        tar.addfile(info, io.BytesIO(jpeg.getvalue()))
    table = io.BytesIO()
    pq.write_table(pa.table({"image": [jpeg.getvalue()], "n": [1]}), table)
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    keys = {"a.jpg": jpeg.getvalue(), "shard.tar": shard.getvalue(), "rows.parquet": table.getvalue()}
    for key, body in keys.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)

    result = CliRunner().invoke(app, ["anonymize", f"s3://{bucket}/", "--ray", "local", "--db", sqlite_url])

    assert result.exit_code == 0, result.output
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs()
        rows = {str(row.path): row for row in store.list_files(run.run_id)}
    url = f"s3://{bucket}"
    assert {path: row.outcome for path, row in rows.items()} == {
        f"{url}/a.jpg": Outcome.ANONYMIZED,
        f"{url}/rows.parquet#row=0,col=image": Outcome.ANONYMIZED,
        f"{url}/rows.parquet": Outcome.ANONYMIZED,
        f"{url}/shard.tar#s0.jpg": Outcome.ANONYMIZED,
        f"{url}/shard.tar": Outcome.ANONYMIZED,
    }
    for key, body in keys.items():
        assert len(client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]) == 1
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() != body


@pytest.mark.slow
def test_objects_on_a_cluster_of_two_machines_are_read_and_written_by_each_machine(
    s3_env: Any, tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    """A real two-node Ray cluster (two raylets on this machine, each with a temporary folder of its own): each actor
    reads its objects into a work folder on its machine and writes them back from there, so every object of a
    versioned bucket is anonymized with no version left holding an original, and no local copy is left on either
    machine; a work folder a killed run left on the second machine is swept by its actor, with its row."""
    import io

    from ray.cluster_utils import Cluster

    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    originals = {}
    for index in range(4):
        jpeg = io.BytesIO()
        Image.fromarray(np.roll(astronaut, index * 7, axis=1)).save(jpeg, "JPEG")
        originals[f"p{index}.jpg"] = jpeg.getvalue()
        client.put_object(Bucket=bucket, Key=f"p{index}.jpg", Body=jpeg.getvalue())
    head_tmp, node_tmp = tmp_path / "head-tmp", tmp_path / "node-tmp"
    head_tmp.mkdir()
    node_tmp.mkdir()
    # A killed run's work folder on the second machine, holding a local copy of an original (its lock is free).
    left = node_tmp / f"efface-objects-{os.getuid()}" / "run-killed"
    left.mkdir(parents=True)
    (left / ".lock").touch()
    (left / "object-x.jpg").write_bytes(originals["p0.jpg"])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "env_vars": {"TMPDIR": str(head_tmp)}})
    try:
        cluster.add_node(num_cpus=1, env_vars={"TMPDIR": str(node_tmp)})
        cluster.wait_for_nodes()
        result = CliRunner().invoke(app, ["anonymize", f"s3://{bucket}/", "--ray", cluster.address, "--db", sqlite_url])
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result.exit_code == 0, result.output
    for key, body in originals.items():
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() != body
        assert len(client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]) == 1
    for machine in (head_tmp, node_tmp):  # each machine's actor had a work folder there, deleted at the end
        assert [path.name for path in machine.iterdir()] == [f"efface-objects-{os.getuid()}"]
        assert list((machine / f"efface-objects-{os.getuid()}").iterdir()) == []
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs()
        rows = {str(row.path): row.outcome for row in store.list_files(run.run_id)}
    assert run.status is RunStatus.COMPLETED
    assert rows == {
        **{f"s3://{bucket}/{key}": Outcome.ANONYMIZED for key in originals},
        str(left / "object-x.jpg"): Outcome.LEFTOVER_REMOVED,
    }


@pytest.mark.slow
def test_a_parquet_table_is_spread_over_the_actors_by_row_groups(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    """Six row groups on a local cluster of two actors: four slices, anonymized apart and put together in order;
    the same rows and the same row groups as a run in process, with every face anonymized."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = []
    for index in range(6):
        jpeg = io.BytesIO()
        Image.fromarray(np.roll(astronaut[::2, ::2], index * 5, axis=1)).save(jpeg, "JPEG")
        cells.append(jpeg.getvalue())
    tables = {}
    for name in ("ray", "local"):
        tables[name] = tmp_path / name / "rows.parquet"
        tables[name].parent.mkdir()
        pq.write_table(pa.table({"image": cells, "n": list(range(6))}), tables[name], row_group_size=1)

    found = {}
    for name, extra in (("ray", ["--ray", "local"]), ("local", ["--jobs", "1"])):
        url = f"sqlite:///{tmp_path / name}.db"
        result = CliRunner().invoke(app, ["anonymize", str(tables[name]), *extra, "--db", url])
        assert result.exit_code == 0, result.output
        with AuditStore(url) as store:
            (run,) = store.list_runs()
            found[name] = store.list_files(run.run_id)

    ray_rows, local_rows = found["ray"], found["local"]
    assert [str(row.path).replace("/ray/", "/local/") for row in ray_rows] == [str(row.path) for row in local_rows]
    assert [(row.outcome, row.faces_anonymized) for row in ray_rows] == [
        (row.outcome, row.faces_anonymized) for row in local_rows
    ]
    assert [row.faces_anonymized for row in ray_rows[:-1]] == [1] * 6
    own = ray_rows[-1]
    assert (own.details["slices"], own.details["rows"], own.details["batches"]) == (4, 6, 6)
    assert "slices" not in local_rows[-1].details
    written = pq.ParquetFile(tables["ray"])
    assert written.num_row_groups == 6 and written.read().column("n").to_pylist() == list(range(6))
    assert tables["ray"].read_bytes() == tables["local"].read_bytes()
    assert not [path for path in tmp_path.rglob("*") if ".efface-tmp-" in path.name]
