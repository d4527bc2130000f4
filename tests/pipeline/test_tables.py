"""Parquet and Arrow tables: written by the real ``datasets`` and ``pyarrow`` libraries, anonymized cell by cell
through the one orchestration path (in process and in a process pool), read back by them with the same schema,
metadata, row groups and features; one audit row per picture cell; whatever efface cannot do is refused aloud."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from efface.audit import StoredFile
from efface.media.atomic import discard
from efface.media.sniff import MediaKind, sniff_file
from efface.pipeline.core import FileJob, Policy, StagedResult
from efface.pipeline.tables import assemble_table, slice_table, stage_table, stage_table_slice
from efface.records import Outcome

from .test_shards import FACE_BOX, _run, _static_models, _temporaries

datasets.disable_progress_bars()


def _encoded(pixels: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _face_change(before: bytes, after: bytes) -> float:
    x1, y1, x2, y2 = (round(value) for value in FACE_BOX.xyxy)
    old = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"), np.int16)[y1:y2, x1:x2]
    new = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"), np.int16)[y1:y2, x1:x2]
    return float(np.abs(old - new).mean())


def _dataset(astronaut: np.ndarray) -> datasets.Dataset:
    """Five rows: an image column (``datasets.Image``: the astronaut as JPEG and PNG, one row without an image),
    a label, a binary column of pictures and other bytes, and a binary column of embeddings."""
    jpeg, png = _encoded(astronaut), _encoded(astronaut, "PNG")
    images: list[dict[str, Any] | None] = [
        {"bytes": jpeg, "path": "a.jpg"},
        {"bytes": png, "path": "b.png"},
        None,
        {"bytes": jpeg, "path": None},
        {"bytes": png, "path": "e.png"},
    ]
    thumbs = [png, b"not a picture", None, b"", jpeg]
    embeddings = [np.arange(4, dtype=np.float32).tobytes() * (i + 1) for i in range(5)]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.Value("int64"),
            "thumb": datasets.Value("binary"),
            "embedding": datasets.Value("binary"),
        }
    )
    return datasets.Dataset.from_dict(
        {"image": images, "label": [10, 11, 12, 13, 14], "thumb": thumbs, "embedding": embeddings}, features=features
    )


def _cells(rows: list[StoredFile]) -> dict[str, StoredFile]:
    return {str(row.path).split("#", 1)[1]: row for row in rows if row.path is not None and "#" in str(row.path)}


@pytest.mark.parametrize("processes", [1, 2])
def test_a_parquet_file_is_anonymized_cell_by_cell(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, processes: int
) -> None:
    table = tmp_path / "train.parquet"
    _dataset(astronaut).to_parquet(str(table), batch_size=2)
    before = pq.ParquetFile(table)
    old = before.read()

    rows = _run([table], sqlite_url, processes=processes)

    after = pq.ParquetFile(table)
    new = after.read()
    # Schema (with the huggingface features), the file's key-value metadata, row groups and other columns kept.
    assert after.schema_arrow.equals(before.schema_arrow, check_metadata=True)
    assert set(after.metadata.metadata) == set(before.metadata.metadata)
    for key, value in before.metadata.metadata.items():
        if key != b"ARROW:schema":
            assert after.metadata.metadata[key] == value
    groups = [before.metadata.row_group(i).num_rows for i in range(before.num_row_groups)]
    assert [after.metadata.row_group(i).num_rows for i in range(after.num_row_groups)] == groups == [2, 2, 1]
    codecs = [(c.path_in_schema, c.compression) for c in (before.metadata.row_group(0).column(i) for i in range(5))]
    assert [(c.path_in_schema, c.compression) for c in (after.metadata.row_group(0).column(i) for i in range(5))] == (
        codecs
    )
    for name in ("label", "embedding"):
        assert new.column(name).equals(old.column(name))
    old_images, new_images = old.column("image").to_pylist(), new.column("image").to_pylist()
    assert new_images[2] is None
    for index in (0, 1, 3, 4):
        assert new_images[index]["path"] == old_images[index]["path"]
        assert _face_change(old_images[index]["bytes"], new_images[index]["bytes"]) > 40
    old_thumbs, new_thumbs = old.column("thumb").to_pylist(), new.column("thumb").to_pylist()
    assert new_thumbs[1:4] == old_thumbs[1:4]  # not pictures: kept
    assert _face_change(old_thumbs[0], new_thumbs[0]) > 40 and _face_change(old_thumbs[4], new_thumbs[4]) > 40
    # Read back by datasets with the same features.
    loaded = datasets.load_dataset("parquet", data_files=str(table), split="train")
    assert loaded.features == _dataset(astronaut).features
    assert loaded["label"] == [10, 11, 12, 13, 14]
    # One row per picture cell (TABLE#row=N,col=C, rows over the whole file), after the pending rows, then the table.
    done = [row for row in rows if row.outcome is not Outcome.PENDING]
    expected = [
        f"row={row},col={column}"
        for row, columns in enumerate([("image", "thumb"), ("image",), (), ("image",), ("image", "thumb")])
        for column in columns
    ]
    assert [str(row.path) for row in done] == [f"{table}#{cell}" for cell in expected] + [str(table)]
    cells = _cells(done)
    assert all(cell.outcome is Outcome.ANONYMIZED and cell.faces_anonymized == 1 for cell in cells.values())
    assert cells["row=0,col=image"].image_format == "JPEG"
    assert cells["row=0,col=image"].output_sha256 == hashlib.sha256(new_images[0]["bytes"]).hexdigest()
    assert cells["row=4,col=thumb"].output_sha256 == hashlib.sha256(new_thumbs[4]).hexdigest()
    own = done[-1]
    assert (own.outcome, own.image_format, own.output_sha256) == (
        Outcome.ANONYMIZED,
        "parquet",
        hashlib.sha256(table.read_bytes()).hexdigest(),
    )
    assert own.details["picture_columns"] == ["image", "thumb", "embedding"]
    assert (own.details["rows"], own.details["batches"], own.details["pictures"]) == (5, 3, 6)
    assert (own.details["null_cells"], own.details["kept_binary_cells"]) == (2, 7)
    assert not _temporaries(tmp_path)


def test_a_saved_dataset_folder_loads_back_with_the_same_features(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    folder = tmp_path / "saved"
    _dataset(astronaut).save_to_disk(str(folder))
    arrow = next(folder.glob("*.arrow"))
    assert sniff_file(arrow).kind is MediaKind.TABLE  # an Arrow IPC stream
    others = {path.name: path.read_bytes() for path in folder.iterdir() if path != arrow}
    original = datasets.load_from_disk(str(folder))
    old_images = [
        cell and cell["bytes"] for cell in original.cast_column("image", datasets.Image(decode=False))["image"]
    ]
    del original

    rows = _run([folder], sqlite_url)

    loaded = datasets.load_from_disk(str(folder))
    assert loaded.features == _dataset(astronaut).features
    assert loaded["label"] == [10, 11, 12, 13, 14]
    new_images = [cell and cell["bytes"] for cell in loaded.cast_column("image", datasets.Image(decode=False))["image"]]
    assert _face_change(old_images[0], new_images[0]) > 40
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path != arrow} == others
    outcomes = {Path(str(row.path).split("#")[0]).name: row.outcome for row in rows if row.path is not None}
    assert outcomes == {
        arrow.name: Outcome.ANONYMIZED,
        "state.json": Outcome.NOT_MEDIA,
        "dataset_info.json": (Outcome.NOT_MEDIA),
    }
    own = next(row for row in rows if row.path == arrow)
    assert own.image_format == "arrow stream" and own.details["pictures"] == 6


def test_an_arrow_file_keeps_its_batches(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    schema = pa.schema([("photo", pa.large_binary()), ("id", pa.int32())], metadata={b"owner": b"team"})
    batches = [
        pa.record_batch([pa.array([_encoded(astronaut)], pa.large_binary()), pa.array([1], pa.int32())], schema=schema),
        pa.record_batch(
            [pa.array([None, _encoded(astronaut, "PNG")], pa.large_binary()), pa.array([2, 3])], schema=schema
        ),
    ]
    table = tmp_path / "photos.feather"
    with pa.OSFile(str(table), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)

    rows = _run([table], sqlite_url)

    with pa.memory_map(str(table)) as source:
        reader = pa.ipc.open_file(source)
        assert reader.schema.equals(schema, check_metadata=True)
        assert [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)] == [1, 2]
        photos = reader.read_all().column("photo").to_pylist()
    assert photos[1] is None and _face_change(_encoded(astronaut), photos[0]) > 40
    assert [str(row.path).split("#")[-1] for row in rows if row.outcome is not Outcome.PENDING] == [
        "row=0,col=photo",
        "row=2,col=photo",
        str(table),
    ]


def _failed(table: Path, sqlite_url: str, **plan: object) -> StoredFile:
    original = table.read_bytes()
    rows = _run([table], sqlite_url, **plan)
    assert [(row.path, row.outcome) for row in rows] == [(table, Outcome.ERROR)]
    assert table.read_bytes() == original
    assert not _temporaries(table.parent)
    return rows[0]


def _image_table(path: Path, cells: list[dict[str, Any] | None]) -> Path:
    features = datasets.Features({"image": datasets.Image(), "n": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": cells, "n": list(range(len(cells)))}, features=features).to_parquet(str(path))
    return path


def test_a_cell_that_is_not_a_picture_fails_the_table_aloud(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    jpeg = _encoded(astronaut)
    table = _image_table(tmp_path / "t.parquet", [{"bytes": jpeg, "path": None}, {"bytes": b"hello", "path": None}])
    row = _failed(table, sqlite_url)
    assert row.error_class == "UnsupportedFormatError"
    assert row.error_message is not None and "row 1, column image: not a picture" in row.error_message


def test_a_truncated_picture_fails_the_table_aloud(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    jpeg = _encoded(astronaut)
    table = _image_table(tmp_path / "t.parquet", [{"bytes": jpeg[: len(jpeg) // 3], "path": "x.jpg"}])
    row = _failed(table, sqlite_url)
    assert row.error_class == "CorruptImageError"
    assert row.error_message is not None and row.error_message.startswith("row 0, column image")


def test_an_image_stored_by_its_path_only_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    # Written by pyarrow: datasets itself would read the file the path names into the cell.
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": pa.array([{"bytes": None, "path": "/data/face.jpg"}], image)}), table)
    row = _failed(table, sqlite_url)
    assert row.error_message is not None and "by its path only (/data/face.jpg)" in row.error_message


def test_a_list_of_images_is_refused(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    features = datasets.Features({"frames": datasets.Sequence(datasets.Image())})
    table = tmp_path / "t.parquet"
    frames = [[{"bytes": _encoded(astronaut), "path": None}]]
    datasets.Dataset.from_dict({"frames": frames}, features=features).to_parquet(str(table))
    row = _failed(table, sqlite_url)
    assert row.error_message is not None and "column 'frames' nests images" in row.error_message


@pytest.mark.parametrize("cut", ["footer", "data"])
def test_a_damaged_table_fails_aloud(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, cut: str) -> None:
    table = _image_table(tmp_path / "t.parquet", [{"bytes": _encoded(astronaut), "path": None}])
    content = table.read_bytes()
    if cut == "footer":
        table.write_bytes(content[:-12])
    else:  # the first column chunk overwritten, the footer intact
        table.write_bytes(content[:4] + b"\x00" * 400 + content[404:])
    row = _failed(table, sqlite_url)
    assert row.error_class == "CorruptImageError"


def test_named_columns_must_exist_and_hold_every_picture(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    from efface.pipeline import Policy

    table = tmp_path / "train.parquet"
    _dataset(astronaut).to_parquet(str(table))
    missing = _failed(table, sqlite_url, policy=Policy(image_columns=("picture",)))
    assert missing.error_message is not None and "no column 'picture'" in missing.error_message
    # "thumb" holds pictures too: naming only "image" would leave them, so the table fails.
    partial = _failed(table, sqlite_url, policy=Policy(image_columns=("image",)))
    assert partial.error_message is not None and "row 0, column thumb: a picture in a column not named" in (
        partial.error_message
    )
    not_binary = _failed(table, sqlite_url, policy=Policy(image_columns=("label",)))
    assert not_binary.error_message is not None and "column 'label' is int64" in not_binary.error_message


def test_a_named_column_is_anonymized(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    from efface.pipeline import Policy

    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"png": [_encoded(astronaut, "PNG")], "blob": [b"\x00\x01"]}), table)
    rows = _run([table], sqlite_url, policy=Policy(image_columns=("png",)))
    assert [str(row.path).split("#")[-1] for row in rows if row.outcome is not Outcome.PENDING] == [
        "row=0,col=png",
        str(table),
    ]
    assert rows[-1].details["picture_columns"] == ["png"]


def test_a_dry_run_a_second_run_and_an_output_folder(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    table = tmp_path / "in" / "train.parquet"
    table.parent.mkdir()
    _dataset(astronaut).to_parquet(str(table))
    original = table.read_bytes()
    dry = _run([table], sqlite_url, dry_run=True)
    assert table.read_bytes() == original
    assert sum(row.faces_detected for row in dry) == 6 and dry[-1].outcome is Outcome.DRY_RUN
    out = tmp_path / "out"
    mirrored = _run([table], sqlite_url, output_dir=out)
    assert table.read_bytes() == original
    copy = out / "train.parquet"
    assert mirrored[-1].output_sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()
    again = _run([table], sqlite_url, output_dir=out)
    assert [(row.path, row.outcome) for row in again] == [(table, Outcome.SKIPPED)]


def test_a_table_without_faces_is_left_byte_for_byte(tmp_path: Path, sqlite_url: str) -> None:
    plain = np.full((64, 64, 3), 128, np.uint8)
    table = _image_table(tmp_path / "t.parquet", [{"bytes": _encoded(plain, "PNG"), "path": None}])
    original = table.read_bytes()
    from efface.detection import StaticModels
    from efface.pipeline import Policy, plan_jobs
    from efface.pipeline.core import stage_file

    (job,) = plan_jobs([table]).items()
    done = stage_file(job, models=StaticModels(faces=()), policy=Policy())  # type: ignore[arg-type]
    assert done.staged is None and done.result.outcome is Outcome.NO_FACES
    assert table.read_bytes() == original


def test_tables_are_sniffed_by_content(tmp_path: Path) -> None:
    parquet = tmp_path / "data.bin"
    pq.write_table(pa.table({"a": [1]}), parquet)
    stream = tmp_path / "data"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("a", pa.int64())])) as writer:
        writer.write_batch(pa.record_batch([pa.array([1])], names=["a"]))
    assert sniff_file(parquet).kind is MediaKind.TABLE
    assert sniff_file(stream).kind is MediaKind.TABLE


@pytest.mark.parametrize("nesting", ["list", "struct", "dictionary"])
def test_a_picture_nested_deeper_fails_the_table_aloud(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, nesting: str
) -> None:
    jpeg = _encoded(astronaut)
    if nesting == "list":
        column = pa.array([[b"x", jpeg]], pa.list_(pa.binary()))
    elif nesting == "struct":
        column = pa.array([{"raw": jpeg, "id": 1}], pa.struct([("raw", pa.binary()), ("id", pa.int64())]))
    else:
        column = pa.array([jpeg, jpeg]).dictionary_encode()
    table = tmp_path / "t.arrow"
    with pa.OSFile(str(table), "wb") as sink, pa.ipc.new_file(sink, pa.schema([("nested", column.type)])) as writer:
        writer.write_batch(pa.record_batch([column], names=["nested"]))
    row = _failed(table, sqlite_url)
    assert row.error_message is not None and "column nested: a JPEG nested in" in row.error_message


def test_nested_binary_without_pictures_is_kept(tmp_path: Path, sqlite_url: str) -> None:
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"chunks": pa.array([[b"a", b"b"], None], pa.list_(pa.binary()))}), table)
    original = table.read_bytes()
    rows = _run([table], sqlite_url)
    assert [(row.path, row.outcome) for row in rows] == [(table, Outcome.NO_FACES)]
    assert table.read_bytes() == original


def _sliced(job: FileJob, *, parts: int, between: Any = None) -> StagedResult:
    """The table staged from slices (as a Ray cluster stages it, in this process); ``between`` runs after the slices
    were read and before they are put together."""
    pieces = slice_table(job, parts=parts)
    assert isinstance(pieces, tuple) and len(pieces) == parts
    staged = [stage_table_slice(job, piece, models=_static_models(), policy=Policy()) for piece in pieces]
    if between is not None:
        between()
    return assemble_table(
        job, [found for _, found in staged], lambda index: staged[index][0], started_at=datetime.now(UTC), t0=0.0
    )


def test_a_table_staged_in_slices_is_the_table_staged_whole(tmp_path: Path, astronaut: np.ndarray) -> None:
    """Row groups anonymized apart and put together give the same new table, byte for byte, and the same rows."""
    whole, sliced = tmp_path / "whole.parquet", tmp_path / "sliced.parquet"
    _dataset(astronaut).to_parquet(str(whole), batch_size=2)
    sliced.write_bytes(whole.read_bytes())
    one = stage_table(FileJob(whole, whole, kind=MediaKind.TABLE), models=_static_models(), policy=Policy())
    two = _sliced(FileJob(sliced, sliced, kind=MediaKind.TABLE), parts=2)
    assert one.staged is not None and two.staged is not None
    assert two.staged.temp_path.read_bytes() == one.staged.temp_path.read_bytes()
    assert two.result.output_sha256 == one.result.output_sha256
    assert [str(m.path).replace("sliced", "whole") for m in two.members] == [str(m.path) for m in one.members]
    assert [(m.outcome, m.faces_anonymized, m.output_sha256) for m in two.members] == [
        (m.outcome, m.faces_anonymized, m.output_sha256) for m in one.members
    ]
    assert {k: v for k, v in two.result.details.items() if k != "slices"} == one.result.details
    assert two.result.details["slices"] == 2
    for done in (one, two):
        discard(done.staged)


def test_a_table_changed_while_its_slices_were_read_fails_aloud(tmp_path: Path, astronaut: np.ndarray) -> None:
    table = tmp_path / "t.parquet"
    _dataset(astronaut).to_parquet(str(table), batch_size=2)
    changed = _dataset(astronaut).select([4, 3, 2, 1, 0])

    now: list[bytes] = []

    def rewrite() -> None:
        changed.to_parquet(str(table), batch_size=2)
        now.append(table.read_bytes())

    done = _sliced(FileJob(table, table, kind=MediaKind.TABLE), parts=3, between=rewrite)
    assert done.staged is None and not done.members
    assert (done.result.outcome, done.result.error_class) == (Outcome.ERROR, "SourceChangedError")
    assert table.read_bytes() == now[0]  # left as it now is
    assert not _temporaries(tmp_path)


def test_a_slice_that_fails_fails_the_table_naming_its_row(tmp_path: Path, astronaut: np.ndarray) -> None:
    table = _image_table(
        tmp_path / "t.parquet",
        [{"bytes": _encoded(astronaut), "path": None}] * 4 + [{"bytes": b"not a picture", "path": None}],
    )
    pq.write_table(pq.read_table(table), table, row_group_size=1)
    before = table.read_bytes()
    done = _sliced(FileJob(table, table, kind=MediaKind.TABLE), parts=2)
    assert (done.result.outcome, done.result.error_class) == (Outcome.ERROR, "UnsupportedFormatError")
    assert "row 4, column image: not a picture" in (done.result.error_message or "")
    assert table.read_bytes() == before and not _temporaries(tmp_path)
