"""efface.Session: paths and in-memory images through the one pipeline, with shared models, every one audited."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import efface
from efface.audit import AuditStore
from efface.detection import StaticModels
from efface.errors import CorruptImageError, WeakTransformError
from efface.records import BBox, Face, Method, Outcome, RunStatus, WriteMode

FACE = Face(BBox(10, 10, 50, 50), 0.9)


def _png(value: int = 100) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(value).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_public_names_are_there_and_lazy() -> None:
    assert {"Session", "load_models", "Settings", "AnonymizationResult"} <= set(efface.__all__)
    assert efface.Session.__module__ == "efface.api"
    with pytest.raises(AttributeError):
        _ = efface.NoSuchThing  # type: ignore[attr-defined]


def test_paths_and_bytes_are_anonymized_and_audited_with_shared_models(tmp_path: Path, sqlite_url: str) -> None:
    models = StaticModels(faces=(FACE,))
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png())
    (folder / "broken.png").write_bytes(b"not a png")
    original = (folder / "a.png").read_bytes()

    with efface.Session(models=models, db_url=sqlite_url, method=Method.PIXELATE) as session:
        results = session.anonymize_paths(folder, output_dir=tmp_path / "out")
        content = session.anonymize_bytes(_png(120), name="upload.png")
        with pytest.raises(CorruptImageError):
            session.anonymize_bytes(b"\x89PNG broken", name="bad.png")
    with efface.Session(models=models, db_url=sqlite_url) as other:  # same models, other settings
        assert other.policy.anonymizer.spec.method is Method.FILL

    assert [r.outcome for r in results] == [Outcome.ANONYMIZED, Outcome.ERROR]
    assert (folder / "a.png").read_bytes() == original
    assert (tmp_path / "out" / "photos" / "a.png").is_file()
    assert content.result.outcome is Outcome.ANONYMIZED and content.data != _png(120)
    assert content.result.output_sha256 == hashlib.sha256(content.data).hexdigest()
    with AuditStore(sqlite_url) as store:
        runs = {run.mode: run for run in store.list_runs()}
        assert runs[WriteMode.OUTPUT_DIR].status is RunStatus.FAILED
        memory = store.list_files(runs[WriteMode.RESPONSE].run_id)
        assert [row.outcome for row in memory] == [Outcome.ANONYMIZED, Outcome.ERROR]
        assert [row.details["name"] for row in memory] == ["upload.png", "bad.png"]
        assert all(row.path is None and row.request_id for row in memory)
        assert memory[0].request_id == content.result.request_id
        assert runs[WriteMode.RESPONSE].files_total == 2 and runs[WriteMode.RESPONSE].status is RunStatus.FAILED
        assert store.verify().is_intact


def test_a_weak_transform_is_refused_before_anything_is_opened(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    with pytest.raises(WeakTransformError):
        efface.Session(models=StaticModels(), db_url=f"sqlite:///{db}", method=Method.BLUR, blur_kernel_fraction=0.05)
    assert not db.exists()
