"""anonymize_file with a StaticDetector: the orchestration path without the model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efface.detection import StaticDetector, StaticModels
from efface.pipeline import FileJob, Policy, anonymize_file
from efface.records import BBox, Face, Outcome, WriteMode

FACE = Face(BBox(20, 20, 60, 60), 0.9)


POLICY = Policy()


def _models(*faces: Face) -> StaticModels:
    return StaticModels(faces=faces)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_in_place_replaces_the_file_and_reports(photo: Path) -> None:
    before = photo.read_bytes()
    result = anonymize_file(FileJob(photo, photo), models=_models(FACE), policy=POLICY)
    after = photo.read_bytes()
    assert result.outcome is Outcome.ANONYMIZED and result.mode is WriteMode.IN_PLACE
    assert (result.faces_detected, result.faces_anonymized) == (1, 1)
    assert result.output_sha256 == hashlib.sha256(after).hexdigest()
    assert after != before
    assert (result.image_format, result.resolution_wh) == ("PNG", (120, 100))
    assert sorted(p.name for p in photo.parent.iterdir()) == ["photo.png"]  # no temp or backup left


def test_output_dir_leaves_the_source_untouched(photo: Path, tmp_path: Path) -> None:
    before = photo.read_bytes()
    destination = tmp_path / "out" / "deep" / "photo.png"
    result = anonymize_file(FileJob(photo, destination), models=_models(FACE), policy=POLICY)
    assert result.mode is WriteMode.OUTPUT_DIR and result.output_path == destination
    assert photo.read_bytes() == before
    assert destination.read_bytes() != before


def test_no_face_without_metadata_is_not_rewritten(photo: Path, tmp_path: Path) -> None:
    before = photo.read_bytes()
    result = anonymize_file(FileJob(photo, photo), models=_models(), policy=POLICY)
    assert result.outcome is Outcome.NO_FACES and photo.read_bytes() == before
    assert result.output_sha256 == hashlib.sha256(before).hexdigest()
    copy = tmp_path / "copy" / "photo.png"
    anonymize_file(FileJob(photo, copy), models=_models(), policy=POLICY)
    assert copy.read_bytes() == before


def test_no_face_with_metadata_is_rewritten_without_it(tmp_path: Path) -> None:
    path = tmp_path / "tagged.jpg"
    exif = Image.Exif()
    exif[0x013B] = "Jane Doe"
    Image.new("RGB", (64, 64), (90, 120, 150)).save(path, exif=exif.tobytes())
    result = anonymize_file(FileJob(path, path), models=_models(), policy=POLICY)
    assert result.outcome is Outcome.NO_FACES
    assert b"Jane Doe" not in path.read_bytes()


def test_dry_run_writes_nothing(photo: Path) -> None:
    before = photo.read_bytes()
    result = anonymize_file(FileJob(photo, None), models=_models(FACE), policy=POLICY)
    assert result.outcome is Outcome.DRY_RUN and result.faces_detected == 1 and result.faces_anonymized == 0
    assert photo.read_bytes() == before and result.output_sha256 is None


@pytest.mark.parametrize(
    ("content", "error_class"),
    [
        (b"", "CorruptImageError"),
        (b"plain text, not a picture", "CorruptImageError"),
    ],
)
def test_bad_file_is_an_error_result_and_left_untouched(tmp_path: Path, content: bytes, error_class: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    result = anonymize_file(FileJob(path, path), models=_models(FACE), policy=POLICY)
    assert result.outcome is Outcome.ERROR and result.error_class == error_class
    assert "\n" not in (result.error_message or "")
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jpg"]


def test_missing_file_is_an_error_result(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    result = anonymize_file(FileJob(path, path), models=_models(), policy=POLICY)
    assert result.error_class == "InputNotFoundError"


def test_a_failing_detector_fails_only_that_file(photo: Path) -> None:
    class Exploding(StaticDetector):
        def detect(self, image: np.ndarray) -> tuple[Face, ...]:
            raise RuntimeError("boom")

    before = photo.read_bytes()
    result = anonymize_file(FileJob(photo, photo), models=StaticModels(Exploding()), policy=POLICY)
    assert (result.outcome, result.error_class, result.error_message) == (Outcome.ERROR, "RuntimeError", "boom")
    assert photo.read_bytes() == before


def test_unwritable_destination_is_an_output_error(photo: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = anonymize_file(FileJob(photo, blocker / "photo.png"), models=_models(FACE), policy=POLICY)
    assert result.error_class == "OutputError"
