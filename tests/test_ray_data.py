"""efface as a Ray Data stage: a real local Ray cluster, ``read_binary_files`` and ``read_parquet`` pipelines
through ``AnonymizeImages`` on an actor pool (real model), one audit row per dataset row written by the actors
into the driver's run; what cannot be anonymized fails the pipeline aloud, or is nulled, never passed on."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.errors import ConfigurationError
from efface.records import Outcome, RunStatus, WriteMode

ray = pytest.importorskip("ray")

# Ray Data warns of its own deprecated settings as it reads them.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")]

# Eileen Collins' face in the astronaut picture.
FACE = (slice(40, 130), slice(170, 250))


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # Two actors and a CPU for Ray Data's read tasks (actors holding every CPU would starve them).
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _pictures(folder: Path, astronaut: np.ndarray) -> dict[str, bytes]:
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "a.jpg")
    Image.fromarray(astronaut).save(folder / "b.png")
    (folder / "c.txt").write_text("a caption")
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def _face_change(before: bytes, after: bytes) -> float:
    old = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"), np.int16)[FACE]
    new = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"), np.int16)[FACE]
    return float(np.abs(old - new).mean())


def _stage(dataset: Any, run: Any, batch_format: str, *, actors: int = 2, **kwargs: Any) -> Any:
    from efface.ray_data import AnonymizeImages

    return dataset.map_batches(
        AnonymizeImages,
        fn_constructor_kwargs={"run": run.handle, **kwargs},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=1,
        batch_format=batch_format,
    )


@pytest.mark.parametrize("batch_format", ["pyarrow", "numpy"])
def test_a_pipeline_of_image_bytes_is_anonymized_and_audited_row_by_row(
    cluster: None, tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, batch_format: str
) -> None:
    from efface.ray_data import DatasetRun

    folder = tmp_path / "photos"
    before = _pictures(folder, astronaut)
    with DatasetRun.begin(db_url=sqlite_url) as run:
        dataset = ray.data.read_binary_files(str(folder), include_paths=True)
        rows = sorted(_stage(dataset, run, batch_format).take_all(), key=lambda row: row["path"])

    assert [Path(row["path"]).name for row in rows] == ["a.jpg", "b.png", "c.txt"]
    assert [(row["efface_outcome"], row["efface_faces"]) for row in rows] == [
        ("anonymized", 1),
        ("anonymized", 1),
        ("not_media", 0),
    ]
    assert _face_change(before["a.jpg"], rows[0]["bytes"]) > 20 and _face_change(before["b.png"], rows[1]["bytes"]) > 20
    assert rows[2]["bytes"] == before["c.txt"]
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before  # the source is not touched
    with AuditStore(sqlite_url) as store:
        stored = store.get_run(run.run_id)
        files = sorted(store.list_files(run.run_id), key=lambda row: str(row.path))
        assert store.verify().is_intact
    assert (stored.command, stored.mode, stored.status) == ("ray-data", WriteMode.DATASET, RunStatus.COMPLETED)
    assert (stored.files_total, stored.faces_anonymized) == (2, 2)
    assert [(row.path, row.outcome, row.mode) for row in files] == [
        (folder / "a.jpg", Outcome.ANONYMIZED, WriteMode.DATASET),
        (folder / "b.png", Outcome.ANONYMIZED, WriteMode.DATASET),
        (folder / "c.txt", Outcome.NOT_MEDIA, WriteMode.DATASET),
    ]
    import hashlib

    assert files[0].output_sha256 == hashlib.sha256(rows[0]["bytes"]).hexdigest()


def test_a_row_that_cannot_be_anonymized_fails_the_pipeline_after_its_row_is_written(
    cluster: None, tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    from efface.ray_data import DatasetRun

    folder = tmp_path / "photos"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "JPEG")
    (folder / "broken.jpg").write_bytes(buffer.getvalue()[:4000])
    with pytest.raises(Exception, match=r"CorruptImageError|broken\.jpg"), DatasetRun.begin(db_url=sqlite_url) as run:
        _stage(ray.data.read_binary_files(str(folder), include_paths=True), run, "pyarrow", actors=1).take_all()
    with AuditStore(sqlite_url) as store:
        stored = store.get_run(run.run_id)
        rows = store.list_files(run.run_id)
    assert stored.status is RunStatus.INTERRUPTED
    assert [(row.path, row.outcome, row.error_class) for row in rows][:1] == [
        (folder / "broken.jpg", Outcome.ERROR, "CorruptImageError")
    ]


def test_with_on_error_null_a_failed_row_goes_on_as_null(
    cluster: None, tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    from efface.ray_data import DatasetRun

    folder = tmp_path / "photos"
    before = _pictures(folder, astronaut)
    (folder / "broken.jpg").write_bytes(before["a.jpg"][:4000])
    with DatasetRun.begin(db_url=sqlite_url) as run:
        dataset = ray.data.read_binary_files(str(folder), include_paths=True)
        rows = {Path(row["path"]).name: row for row in _stage(dataset, run, "pyarrow", on_error="null").take_all()}
    assert rows["broken.jpg"]["bytes"] is None and rows["broken.jpg"]["efface_outcome"] == "error"
    assert rows["a.jpg"]["efface_outcome"] == "anonymized"
    with AuditStore(sqlite_url) as store:
        stored = store.get_run(run.run_id)
    assert (stored.status, stored.files_failed) == (RunStatus.FAILED, 1)


def test_an_image_column_of_a_parquet_dataset_keeps_its_paths(
    cluster: None, tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    import datasets

    from efface.ray_data import DatasetRun

    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "PNG")
    features = datasets.Features({"image": datasets.Image(), "id": datasets.Value("string")})
    cells = {"image": [{"bytes": buffer.getvalue(), "path": "people/a.png"}], "id": ["row-0"]}
    table = tmp_path / "people.parquet"
    datasets.Dataset.from_dict(cells, features=features).to_parquet(str(table))
    with DatasetRun.begin(db_url=sqlite_url) as run:
        dataset = ray.data.read_parquet(str(table))
        (row,) = _stage(dataset, run, "pyarrow", actors=1, column="image", path_column="id").take_all()
    assert row["image"]["path"] == "people/a.png"
    assert _face_change(buffer.getvalue(), row["image"]["bytes"]) > 20
    with AuditStore(sqlite_url) as store:
        (stored,) = store.list_files(run.run_id)
    assert (stored.path, stored.outcome) == (Path("row-0"), Outcome.ANONYMIZED)


def test_a_batch_without_the_path_column_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    """The stage called as Ray Data calls it, in this process: a batch that names no rows is refused aloud."""
    import pyarrow as pa

    from efface.ray_data import AnonymizeImages, DatasetRun

    with DatasetRun.begin(db_url=sqlite_url) as run:
        stage = AnonymizeImages(run.handle)
        with pytest.raises(ConfigurationError, match="no column 'path'"):
            stage(pa.table({"bytes": [b"x"]}))
        with pytest.raises(ConfigurationError, match="no column 'bytes'"):
            stage(pa.table({"image": [b"x"], "path": ["p"]}))
        nameless = AnonymizeImages(run.handle, path_column=None)(pa.table({"bytes": [b"plain text"]}))
        assert nameless.column("efface_outcome").to_pylist() == ["not_media"]
    with AuditStore(sqlite_url) as store:
        (row,) = store.list_files(run.run_id)
    assert row.path is None and row.request_id is not None
