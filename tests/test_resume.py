"""Resume: ``efface anonymize`` skips a file only when an earlier in-place run with the same detection and
transform settings (and model) left it as it is now. A stronger re-run does its work, and a dry run of a
command says of every file what the command itself then does. The real CLI, the real model, real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.cli import app
from efface.records import Outcome

from .conftest import json_files

runner = CliRunner()


def anonymize(*args: str) -> dict[str, dict[str, object]]:
    """Runs ``efface anonymize ... --json`` and gives each file's JSON line by file name."""
    result = runner.invoke(app, ["anonymize", *args, "--json", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    lines = json_files(result.stdout)
    return {Path(str(line["path"])).name: line for line in lines}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A new SQLite file, or a new schema of the real PostgreSQL server."""
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
def small_face(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """A 128 px portrait: the fast preset scores its face about 0.93, the thorough one above 0.99."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.ascontiguousarray(astronaut[::4, ::4])).save(folder / "face.png")
    return folder


@pytest.mark.slow
def test_a_stronger_rerun_anonymizes_what_a_weaker_run_found_no_face_in(small_face: Path, db_url: str) -> None:
    weak = ["--preset", "fast", "--threshold", "0.95"]
    strong = ["--preset", "thorough", "--threshold", "0.95"]
    photo = small_face / "face.png"
    original = photo.read_bytes()
    first = anonymize(str(small_face), "--db", db_url, *weak)
    assert first["face.png"]["outcome"] == Outcome.NO_FACES
    assert photo.read_bytes() == original

    # The same command again: done, skipped; its dry run says the same.
    assert anonymize(str(small_face), "--db", db_url, *weak, "--dry-run")["face.png"]["outcome"] == "skipped"
    assert anonymize(str(small_face), "--db", db_url, *weak)["face.png"]["outcome"] == Outcome.SKIPPED

    # A stronger command finds the face in its dry run, and then anonymizes it.
    dry = anonymize(str(small_face), "--db", db_url, *strong, "--dry-run")["face.png"]
    assert (dry["outcome"], dry["faces_detected"]) == (Outcome.DRY_RUN, 1)
    assert photo.read_bytes() == original
    real = anonymize(str(small_face), "--db", db_url, *strong)["face.png"]
    assert (real["outcome"], real["faces_anonymized"]) == (Outcome.ANONYMIZED, 1)
    assert photo.read_bytes() != original

    # Now the stronger settings are done; the weaker ones were applied to other content and are not.
    assert anonymize(str(small_face), "--db", db_url, *strong)["face.png"]["outcome"] == Outcome.SKIPPED
    assert anonymize(str(small_face), "--db", db_url, *weak)["face.png"]["outcome"] != Outcome.SKIPPED
    with AuditStore(db_url) as store:
        assert store.verify().is_intact


@pytest.mark.slow
def test_a_lower_threshold_is_not_resumed_as_done(small_face: Path, db_url: str) -> None:
    first = anonymize(str(small_face), "--db", db_url, "--preset", "fast", "--threshold", "0.95")
    assert first["face.png"]["outcome"] == Outcome.NO_FACES
    lower = anonymize(str(small_face), "--db", db_url, "--preset", "fast", "--threshold", "0.5")["face.png"]
    assert (lower["outcome"], lower["faces_anonymized"]) == (Outcome.ANONYMIZED, 1)


@pytest.mark.slow
def test_an_output_run_does_not_make_a_later_in_place_run_skip(tmp_path: Path, db_url: str) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    # No face and no metadata: an --output run copies it byte for byte, so its output hashes as the source.
    Image.fromarray(np.full((96, 128, 3), 200, np.uint8)).save(folder / "wall.png")
    out = anonymize(str(folder), "--db", db_url, "--output", str(tmp_path / "out"))["wall.png"]
    assert out["outcome"] == Outcome.NO_FACES
    # The output tree itself is done: the same --output command skips it.
    again = anonymize(str(folder), "--db", db_url, "--output", str(tmp_path / "out"))["wall.png"]
    assert again["outcome"] == Outcome.SKIPPED

    in_place = anonymize(str(folder), "--db", db_url)["wall.png"]
    assert in_place["outcome"] == Outcome.NO_FACES
    assert anonymize(str(folder), "--db", db_url)["wall.png"]["outcome"] == Outcome.SKIPPED
