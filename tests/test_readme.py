"""The README's examples are executed, so they cannot rot."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.cli import app
from efface.config import load_settings
from efface.records import Method, ObjectURL, WriteMode

from .conftest import S3Server

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = README.parent / "examples"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_config_file_example_loads(tmp_path: Path) -> None:
    (toml,) = _blocks("toml")
    config = tmp_path / "config.toml"
    config.write_text(toml)
    settings = load_settings(config_path=config)
    assert settings.method is Method.PIXELATE and settings.pixelate_blocks == 5
    assert settings.db_url.startswith("postgresql+psycopg://")


def test_documented_options_exist() -> None:
    usage = next(block for block in _blocks("sh") if "efface anonymize" in block)
    commands: list[tuple[list[str], str]] = []
    for line in usage.splitlines():
        if line.startswith("efface "):
            words = [w for w in line.split()[1:3] if w.isalpha()]
            commands.append((words, line))
        elif commands:
            commands[-1] = (commands[-1][0], commands[-1][1] + line)
    assert len(commands) >= 4
    for words, text in commands:
        result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, words
        for option in re.findall(r"--[a-z-]+", text):
            assert option in result.stdout, (words, option)


@pytest.mark.slow
def test_python_example_runs_on_the_demo_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = next(block for block in _blocks("python") if "efface.Session" in block)
    monkeypatch.chdir(tmp_path)
    subprocess.run([sys.executable, str(EXAMPLES / "make_sample.py"), "demo-output/sample"], check=True)
    before = {path.name: path.read_bytes() for path in (tmp_path / "demo-output" / "sample").iterdir()}
    completed = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert "astronaut.jpg anonymized 1" in lines
    assert "no_face.webp no_faces 0" in lines
    faces_anonymized, sha256 = lines[-1].split()
    assert int(faces_anonymized) == 1 and len(sha256) == 64
    # The sources are untouched (an output folder run), the anonymized tree is beside them, all audited.
    assert {path.name: path.read_bytes() for path in (tmp_path / "demo-output" / "sample").iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "demo-output" / "anonymized" / "sample").iterdir()) == sorted(before)
    with AuditStore(f"sqlite:///{tmp_path / 'demo-output' / 'audit.sqlite3'}") as store:
        runs = store.list_runs()
        assert sorted(run.mode for run in runs) == sorted([WriteMode.OUTPUT_DIR, WriteMode.RESPONSE])
        files = [row for run in runs for row in store.list_files(run.run_id)]
        assert len(files) == len(before) + 1
        assert store.verify().is_intact


@pytest.mark.slow
def test_webdataset_shard_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shard example: its Python part writes the shard, each ``efface`` line runs (real model, the test's
    own audit database); the face is filled, the json member kept, one audit row per member and the shard's."""
    block = next(block for block in _blocks("sh") if "shard-000000.tar" in block)
    script = re.search(r"python - <<'EOF'\n(.*?)\nEOF\n", block, flags=re.DOTALL)
    assert script is not None
    monkeypatch.chdir(tmp_path)
    subprocess.run([sys.executable, "-c", script.group(1)], check=True, timeout=120)
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        before = {info.name: tar.extractfile(info).read() for info in tar}  # type: ignore[union-attr]
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    commands = [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("efface ")]
    assert [words[:2] for words in commands] == [["anonymize", "shard-000000.tar"], ["audit", "list"]]
    for words in commands:
        result = CliRunner().invoke(app, [*words, "--db", url], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
    with tarfile.open(shard) as tar:
        after = {info.name: tar.extractfile(info).read() for info in tar}  # type: ignore[union-attr]
    assert list(after) == list(before) == ["astronaut.jpg", "astronaut.json"]
    assert after["astronaut.json"] == before["astronaut.json"]
    assert after["astronaut.jpg"] != before["astronaut.jpg"]
    with AuditStore(url) as store:
        (run,) = store.list_runs()
        rows = store.list_files(run.run_id)
    assert [(row.path, row.outcome.value) for row in rows] == [
        (Path(f"{shard}#astronaut.jpg"), "anonymized"),
        (Path(f"{shard}#astronaut.json"), "not_media"),
        (shard, "anonymized"),
    ]
    assert rows[0].faces_anonymized >= 1


@pytest.mark.slow
def test_object_store_example_runs(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 example against the tests' real S3 server (not the one it starts on port 9000): its Python part
    fills the versioned bucket, each ``efface`` line runs (real model); one version is left, anonymized, and the
    audit row is the object's URL."""
    block = next(block for block in _blocks("sh") if "s3://photos/" in block)
    script = re.search(r"python - <<'EOF'\n(.*?)\nEOF\n", block, flags=re.DOTALL)
    assert script is not None
    monkeypatch.chdir(tmp_path)
    subprocess.run([sys.executable, "-c", script.group(1)], check=True, timeout=120)
    client = s3_env.client()
    (original,) = client.list_object_versions(Bucket="photos", Prefix="2026/")["Versions"]
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    commands = [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("efface ")]
    assert [words[:2] for words in commands] == [["anonymize", "s3://photos/2026/"], ["audit", "list"]]
    for words in commands:
        result = CliRunner().invoke(app, [*words, "--db", url], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
    assert "s3://photos/2026/astronaut.jpg" in result.output  # the audit list
    (left,) = client.list_object_versions(Bucket="photos", Prefix="2026/")["Versions"]
    assert left["VersionId"] != original["VersionId"]
    with AuditStore(url) as store:
        (run,) = store.list_runs()
        (row,) = store.list_files(run.run_id)
    assert row.path == ObjectURL.parse("s3://photos/2026/astronaut.jpg")
    assert row.faces_anonymized >= 1
    assert row.details["deleted_versions"] == [original["VersionId"]]


@pytest.mark.slow
def test_table_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables example: its Python part writes the Parquet file and the saved dataset, each ``efface`` line runs
    (real model); the face is filled in both, both load back with their features, one row per picture cell."""
    import datasets
    import numpy as np

    block = next(block for block in _blocks("sh") if "people.parquet" in block)
    script = re.search(r"python - <<'EOF'\n(.*?)\nEOF\n", block, flags=re.DOTALL)
    assert script is not None
    monkeypatch.chdir(tmp_path)
    subprocess.run([sys.executable, "-c", script.group(1)], check=True, timeout=120)
    before = datasets.load_dataset("parquet", data_files="people.parquet", split="train")
    pixels = np.asarray(before[0]["image"], np.int16)
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    commands = [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("efface ")]
    assert [words[:2] for words in commands] == [
        ["anonymize", "people.parquet"],
        ["anonymize", "people-saved/"],
        ["audit", "list"],
    ]
    for words in commands:
        result = CliRunner().invoke(app, [*words, "--db", url], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
    # The audit list lists the cell: read again as JSON (the table folds long paths to the terminal's width).
    listed = CliRunner().invoke(app, [*commands[-1], "--json", "--db", url])
    assert any(row["path"].endswith("people.parquet#row=0,col=image") for row in json.loads(listed.output))
    face = (slice(40, 130), slice(170, 250))
    for loaded in (
        datasets.load_dataset("parquet", data_files="people.parquet", split="train"),
        datasets.load_from_disk("people-saved"),
    ):
        assert loaded.features == before.features and loaded["caption"] == ["a portrait"]
        assert np.abs(np.asarray(loaded[0]["image"], np.int16)[face] - pixels[face]).mean() > 20


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_data_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ray Data example, as written (Ray starts a cluster of this machine): the photo is anonymized into the
    Parquet output, one audit row for it in a completed run."""
    pytest.importorskip("ray")
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image
    from skimage import data

    example = next(block for block in _blocks("python") if "efface.ray_data" in block)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    Image.fromarray(data.astronaut()).save(tmp_path / "photos" / "astronaut.jpg")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    completed = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (row,) = pq.read_table(tmp_path / "anonymized").to_pylist()
    assert (row["efface_outcome"], row["efface_faces"]) == ("anonymized", 1)
    face = (slice(40, 130), slice(170, 250))
    after = np.asarray(Image.open(io.BytesIO(row["bytes"])), np.int16)[face]
    assert np.abs(after - data.astronaut().astype(np.int16)[face]).mean() > 20
    with AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite3'}") as store:
        (run,) = store.list_runs()
        (stored,) = store.list_files(run.run_id)
    # The path as the dataset names the row (read_binary_files keeps the relative path it was given).
    assert run.status.value == "completed" and stored.path == Path("photos/astronaut.jpg")
