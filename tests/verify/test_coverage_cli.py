"""``efface verify coverage`` end to end on a tiny annotated set written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.cli import app
from efface.records import ValidationKind

runner = CliRunner()


@pytest.fixture
def sample(tmp_path: Path, astronaut: np.ndarray) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray(astronaut).save(root / "astronaut.jpg", quality=95)
    Image.fromarray(np.full((200, 300, 3), 120, np.uint8)).save(root / "wall.png")
    return root


def _wider(path: Path, faces: dict[str, list[tuple[int, int, int, int]]]) -> Path:
    lines = []
    for name, boxes in faces.items():
        lines += [name, str(len(boxes))]
        lines += [f"{x} {y} {w} {h} 0 0 0 0 0 0" for x, y, w, h in boxes] or ["0 0 0 0 0 0 0 0 0 0"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_coverage_of_a_found_face_is_recorded(tmp_path: Path, sample: Path, sqlite_url: str) -> None:
    annotations = _wider(tmp_path / "gt.txt", {"astronaut.jpg": [(180, 55, 90, 125)], "wall.png": []})
    before = {p.name: p.read_bytes() for p in sample.iterdir()}
    result = runner.invoke(
        app,
        ["verify", "coverage", str(sample), "-a", str(annotations), "--db", sqlite_url, "--json", "--fail-under", "1"],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["recall"] == 1.0 and figures["images"] == 2 and figures["faces"] == 1
    assert figures["faces_counted"] == "all"  # no --subset: every annotated face, said so
    assert figures["coverage"]["covered_share"] == 1.0 and figures["passed"] is True
    assert figures["recall_by_height"][">=50"] == {"found": 1, "total": 1, "share": 1.0}
    assert {p.name: p.read_bytes() for p in sample.iterdir()} == before  # verification writes nothing
    with AuditStore(sqlite_url) as store:
        (validation,) = store.list_validations(kind=ValidationKind.COVERAGE)
    assert validation.validation_id == figures["validation_id"] and validation.passed is True
    assert validation.dataset["images"] == 2 and validation.settings["preset"] == "balanced"


@pytest.mark.slow
def test_fail_under_exits_1_when_a_face_is_missed(tmp_path: Path, sample: Path, sqlite_url: str) -> None:
    coco = {
        "images": [{"id": 1, "file_name": "astronaut.jpg"}, {"id": 2, "file_name": "wall.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [180, 55, 90, 125], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [100, 50, 60, 80], "iscrowd": 0},  # no face there
        ],
        "categories": [{"id": 7, "name": "face"}],
    }
    annotations = tmp_path / "gt.json"
    annotations.write_text(json.dumps(coco))
    result = runner.invoke(
        app, ["verify", "coverage", str(sample), "-a", str(annotations), "--db", sqlite_url, "--fail-under", "0.9"]
    )
    assert result.exit_code == 1
    assert "0.500" in result.stdout and "below --fail-under" in result.stderr
    assert (
        "faces counted: every annotated face" in result.stdout and "coverage of every annotated face" in result.stdout
    )
    with AuditStore(sqlite_url) as store:
        (validation,) = store.list_validations()
    assert validation.passed is False and validation.figures["recall"] == 0.5


@pytest.mark.slow
def test_fail_under_without_an_annotated_face_exits_1_and_says_why(
    tmp_path: Path, sample: Path, sqlite_url: str
) -> None:
    (sample / "astronaut.jpg").unlink()
    annotations = _wider(tmp_path / "gt.txt", {"wall.png": []})
    result = runner.invoke(
        app, ["verify", "coverage", str(sample), "-a", str(annotations), "--db", sqlite_url, "--fail-under", "0.5"]
    )
    assert result.exit_code == 1, result.output
    assert "no annotated face" in result.stderr and "--fail-under 0.5" in result.stderr


def test_bad_annotation_file_is_a_usage_error(tmp_path: Path, sample: Path, sqlite_url: str) -> None:
    broken = tmp_path / "gt.json"
    broken.write_text("{not json")
    result = runner.invoke(app, ["verify", "coverage", str(sample), "-a", str(broken), "--db", sqlite_url])
    assert result.exit_code == 2 and "gt.json" in result.stderr
