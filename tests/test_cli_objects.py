"""``efface anonymize s3://...`` from the command line, against the real S3 API server on loopback (``s3_server`` in
conftest): the real model, credentials from the AWS environment or ``--storage-option``, schemes efface cannot
write refused aloud, and a real killed process whose local copies the next run deletes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.cli import app
from efface.records import ObjectURL, Outcome

runner = CliRunner()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _versions(client: Any, bucket: str, key: str) -> list[str]:
    listing = client.list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]


def _rows(sqlite_url: str) -> list[Any]:
    with AuditStore(sqlite_url) as store:
        return [row for run in store.list_runs() for row in store.list_files(run.run_id)]


@pytest.mark.slow
def test_anonymize_a_bucket_prefix_with_the_real_model(s3_env: Any, astronaut: np.ndarray, sqlite_url: str) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    original = _jpeg(astronaut)
    client.put_object(Bucket=bucket, Key="people/astronaut 1.jpg", Body=original)
    client.put_object(Bucket=bucket, Key="people/readme.txt", Body=b"kept")

    result = runner.invoke(app, ["anonymize", f"s3://{bucket}/people/", "--db", sqlite_url], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert len(_versions(client, bucket, "people/astronaut 1.jpg")) == 1
    anonymized = client.get_object(Bucket=bucket, Key="people/astronaut 1.jpg")["Body"].read()
    face = (slice(40, 130), slice(170, 250))
    before = np.asarray(Image.open(io.BytesIO(original)), dtype=np.int16)[face]
    after = np.asarray(Image.open(io.BytesIO(anonymized)), dtype=np.int16)[face]
    assert np.abs(before - after).mean() > 20
    by_key = {row.path.key: row for row in _rows(sqlite_url) if isinstance(row.path, ObjectURL)}
    assert by_key["people/astronaut 1.jpg"].outcome is Outcome.ANONYMIZED
    assert by_key["people/readme.txt"].outcome is Outcome.NOT_MEDIA


def test_storage_options_reach_the_store_and_never_the_audit_log(
    s3_server: Any, astronaut: np.ndarray, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    bucket = s3_server.bucket(versioned=False)
    s3_server.client().put_object(Bucket=bucket, Key="x.txt", Body=b"text")
    keys = s3_server.admin
    options = [
        f"endpoint_url={s3_server.endpoint_url}",
        f"key={keys.access_key_id}",
        f"secret={keys.secret_access_key}",
    ]
    args = ["anonymize", f"s3://{bucket}/", "--db", sqlite_url, "--dry-run"]
    result = runner.invoke(app, [*args, *[f"--storage-option={option}" for option in options]])

    assert result.exit_code == 0, result.output
    (row,) = _rows(sqlite_url)
    assert row.outcome is Outcome.NOT_MEDIA
    database = Path(sqlite_url.removeprefix("sqlite:///")).read_bytes()
    assert keys.secret_access_key.encode() not in database


@pytest.mark.parametrize("url", ["gs://bucket/photos/", "rtsp://camera/stream", "s3://"])
def test_a_url_efface_cannot_write_is_refused_aloud(url: str, sqlite_url: str) -> None:
    result = runner.invoke(app, ["anonymize", url, "--db", sqlite_url])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not" in lines[0], result.output


def test_an_object_output_for_local_inputs_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    result = runner.invoke(app, ["anonymize", str(tmp_path), "-o", "s3://bucket/out/", "--db", sqlite_url])
    assert result.exit_code != 0 and "object inputs" in result.output


def _video(astronaut: np.ndarray, frames: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(astronaut, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.slow
def test_a_killed_run_leaves_local_copies_that_the_next_run_deletes(
    s3_env: Any, astronaut: np.ndarray, sqlite_url: str, tmp_path: Path
) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    client.put_object(Bucket=bucket, Key="clip.mp4", Body=_video(astronaut, 60))
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, **s3_env.env(), "TMPDIR": str(temp), "EFFACE_DB_URL": sqlite_url}
    command = [sys.executable, "-m", "efface", "anonymize", f"s3://{bucket}/", "--jobs", "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work_root = temp / f"efface-objects-{os.getuid()}"
    deadline = time.monotonic() + 120
    copies: list[Path] = []
    while not copies and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
        copies = [path for path in work_root.glob("run-*/object-*") if path.stat().st_size > 0]
    assert copies, "the run never made its local copy"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert any(work_root.glob("run-*/object-*"))  # a killed run cannot delete what it held

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert [path for path in work_root.rglob("*")] == []  # the copies, and this run's own folder, gone
    rows = _rows(sqlite_url)
    removed = [row for row in rows if row.outcome is Outcome.LEFTOVER_REMOVED]
    assert removed and all("object-" in str(row.path) for row in removed)
    assert len(_versions(client, bucket, "clip.mp4")) == 1
