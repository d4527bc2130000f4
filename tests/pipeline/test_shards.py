"""WebDataset shards: written by the real ``webdataset`` library, anonymized member by member through the one
orchestration path (in process and in a process pool), read back by ``webdataset``; one audit row per member."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander

from efface.audit import AuditStore, StoredFile
from efface.detection import StaticModels
from efface.errors import AuditError
from efface.media.sniff import MediaKind, sniff, sniff_file
from efface.pipeline import Policy, plan_jobs
from efface.pipeline import run as run_module
from efface.pipeline.pool import InProcess, ProcessPool
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import BBox, Face, Outcome, RunStatus, WriteMode

# Eileen Collins' face in scikit-image's astronaut (512x512): the box a detector finds there.
FACE_BOX = BBox(170, 40, 250, 130)
FACE = Face(FACE_BOX, 0.9)
KEPT = ("json", "txt", "cls", "npy")


def _static_models() -> StaticModels:
    """Models that 'find' the astronaut's face in every picture; module level, so pool processes can build them."""
    return StaticModels(faces=(FACE,))


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_shard(path: Path, astronaut: np.ndarray, *, jpg: bytes | None = None) -> None:
    """A shard as ``webdataset.TarWriter`` writes one: two samples, the astronaut as JPEG and PNG beside a json, a
    txt, a cls and a .npy member (``jpg`` replaces the JPEG's bytes)."""
    with wds.TarWriter(str(path)) as writer:
        writer.write(
            {
                "__key__": "sample0000",
                "jpg": jpg if jpg is not None else _encoded(astronaut, "JPEG"),
                "json": {"caption": "an astronaut", "id": 0},
                "txt": "a portrait\n",
                "cls": 3,
            }
        )
        writer.write({"__key__": "sample0001", "png": _encoded(astronaut, "PNG"), "npy": np.arange(12.0).reshape(3, 4)})


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(info, tar.extractfile(info).read() if info.isreg() else b"") for info in tar]  # type: ignore[union-attr]


def _samples(path: Path) -> list[dict[str, object]]:
    """The shard as ``webdataset`` reads it (its tar expander and sample grouping, on a stream closed here:
    ``WebDataset`` itself leaves its file to the garbage collector): each sample's keys and raw bytes, in order."""
    with path.open("rb") as stream:
        dataset = group_by_keys(tar_file_expander([{"stream": stream, "url": str(path)}]))
        return [{key: value for key, value in sample.items() if not key.startswith("__")} for sample in dataset]


def _face_change(before: bytes, after: bytes) -> float:
    """The mean absolute change of the pixels inside the face box (0..255)."""
    x1, y1, x2, y2 = (round(value) for value in FACE_BOX.xyxy)
    old = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"), np.int16)[y1:y2, x1:x2]
    new = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"), np.int16)[y1:y2, x1:x2]
    return float(np.abs(old - new).mean())


def _run(
    paths: list[Path], url: str, *, processes: int = 1, policy: Policy | None = None, **plan: object
) -> list[StoredFile]:
    policy = policy or Policy()
    planned = plan_jobs(paths, **plan)  # type: ignore[arg-type]
    with AuditStore(url) as store:
        if processes == 1:
            executor: InProcess | ProcessPool = InProcess(_static_models(), policy)
        else:
            executor = ProcessPool(_static_models, policy, processes=processes)
        with (
            contextlib.closing(executor),
            AuditedRun.begin(
                store, command="anonymize", mode=planned.mode, models=_static_models(), settings={}
            ) as run,
        ):
            run_plan(planned.items(), executor=executor, run=run)
        return store.list_files(run.run_id, with_pending=True)


def _temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".efface-tmp-" in path.name]


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("name", ["shard.tar", "shard.tar.gz"])
def test_a_shard_is_anonymized_member_by_member(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, processes: int, name: str
) -> None:
    plain = tmp_path / "written.tar"
    write_shard(plain, astronaut)
    shard = tmp_path / name
    if name.endswith(".gz"):
        shard.write_bytes(gzip.compress(plain.read_bytes()))
    else:
        plain.rename(shard)
    before = _members(shard)
    samples_before = _samples(shard)

    rows = _run([shard], sqlite_url, processes=processes)

    after = _members(shard)
    assert (shard.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")  # still compressed, or still not
    # Names, order and metadata kept; every member but the pictures byte for byte.
    fields = ("name", "mode", "mtime", "uid", "gid", "uname", "gname", "type")
    assert [[getattr(info, f) for f in fields] for info, _ in after] == [
        [getattr(info, f) for f in fields] for info, _ in before
    ]
    for (info, old), (_, new) in zip(before, after, strict=True):
        if info.name.endswith((".jpg", ".png")):
            assert _face_change(old, new) > 40, info.name  # the face is filled
        else:
            assert new == old, info.name
    samples_after = _samples(shard)
    assert [list(sample) for sample in samples_after] == [list(sample) for sample in samples_before]
    for old_sample, new_sample in zip(samples_before, samples_after, strict=True):
        for key in old_sample:
            if key.split(".")[-1] in KEPT:
                assert new_sample[key] == old_sample[key]
    # One row per member (SHARD#MEMBER, in order) and the shard's own, after their pending rows (written in one
    # transaction before the swap, so that a run lost after it leaves every member's row to settle).
    pending = [row for row in rows if row.outcome is Outcome.PENDING]
    done = [row for row in rows if row.outcome is not Outcome.PENDING]
    member_paths = [Path(f"{shard}#{info.name}") for info, _ in before]
    assert [row.path for row in pending] == [*member_paths, shard]
    assert rows[: len(pending)] == pending
    assert [row.path for row in done] == [*member_paths, shard]
    by_name = {row.path.name.split("#")[1] if row.path != shard else "": row for row in done if row.path}
    assert by_name["sample0000.jpg"].outcome is Outcome.ANONYMIZED
    jpg = by_name["sample0000.jpg"]
    assert (jpg.image_format, jpg.width, jpg.height, jpg.faces_detected) == ("JPEG", 512, 512, 1)
    assert by_name["sample0001.png"].faces_anonymized == 1
    for info, data in after:
        assert by_name[info.name].output_sha256 == hashlib.sha256(data).hexdigest()
    assert by_name["sample0000.json"].outcome is Outcome.NOT_MEDIA
    shard_row = done[-1]
    assert shard_row.outcome is Outcome.ANONYMIZED
    assert shard_row.output_sha256 == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert (shard_row.details["members"], shard_row.details["pictures"]) == (6, 2)
    assert shard_row.details["faces_anonymized"] == 2
    assert not _temporaries(tmp_path)


def test_a_second_run_skips_the_shard(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    shard = tmp_path / "shard.tar"
    write_shard(shard, astronaut)
    _run([shard], sqlite_url)
    done = shard.read_bytes()
    rows = _run([shard], sqlite_url)
    assert [(row.path, row.outcome) for row in rows] == [(shard, Outcome.SKIPPED)]
    assert shard.read_bytes() == done


@pytest.mark.parametrize(
    ("jpg", "expected"),
    [
        (b"this is text, not a JPEG\n", "CorruptImageError"),
        ("truncated", "CorruptImageError"),
    ],
)
def test_a_corrupt_member_fails_the_shard_and_leaves_it_untouched(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, jpg: bytes | str, expected: str
) -> None:
    content = _encoded(astronaut, "JPEG")
    shard = tmp_path / "shard.tar"
    write_shard(shard, astronaut, jpg=content[: len(content) // 2] if jpg == "truncated" else jpg)  # type: ignore[arg-type]
    original = shard.read_bytes()
    rows = _run([shard], sqlite_url)
    assert [(row.path, row.outcome, row.error_class) for row in rows] == [(shard, Outcome.ERROR, expected)]
    assert rows[0].error_message is not None and "member sample0000.jpg" in rows[0].error_message
    assert shard.read_bytes() == original
    assert not _temporaries(tmp_path)


@pytest.mark.parametrize("cut", ["inside a member", "at a member header", "end blocks gone", "garbage header"])
def test_a_damaged_archive_fails_the_shard_and_leaves_it_untouched(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, cut: str
) -> None:
    shard = tmp_path / "shard.tar"
    write_shard(shard, astronaut)
    data = shard.read_bytes()
    with tarfile.open(shard) as tar:
        infos = tar.getmembers()
    last = infos[-1]
    end_of_data = last.offset_data + last.size + (-last.size % 512)
    damaged = {
        "inside a member": data[: infos[1].offset_data + 100],
        "at a member header": data[: infos[3].offset],  # tarfile alone takes this for the end
        "end blocks gone": data[:end_of_data],
        "garbage header": data[: infos[3].offset] + b"\x7f" * 512 + data[infos[3].offset + 512 :],
    }[cut]
    shard.write_bytes(damaged)
    rows = _run([shard], sqlite_url)
    assert [(row.path, row.outcome, row.error_class) for row in rows] == [(shard, Outcome.ERROR, "CorruptImageError")]
    assert shard.read_bytes() == damaged
    assert not _temporaries(tmp_path)


def test_output_leaves_the_source_alone(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    shard = folder / "shard-000000.tar"
    write_shard(shard, astronaut)
    original = shard.read_bytes()
    out = tmp_path / "out"
    rows = _run([folder], sqlite_url, output_dir=out)
    written = out / "data" / "shard-000000.tar"
    assert shard.read_bytes() == original
    assert [list(sample) for sample in _samples(written)] == [list(sample) for sample in _samples(shard)]
    shard_row = rows[-1]
    assert (shard_row.path, shard_row.output_path, shard_row.mode) == (shard, written, WriteMode.OUTPUT_DIR)
    assert shard_row.output_sha256 == hashlib.sha256(written.read_bytes()).hexdigest()
    done = [row for row in rows if row.outcome is not Outcome.PENDING]
    assert rows[0].outcome is Outcome.PENDING and done[0].output_path == Path(f"{written}#sample0000.cls")
    again = _run([folder], sqlite_url, output_dir=out)
    assert [row.outcome for row in again] == [Outcome.SKIPPED]
    assert not _temporaries(tmp_path)


def test_a_dry_run_counts_faces_per_member_and_writes_nothing(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    shard = tmp_path / "shard.tar"
    write_shard(shard, astronaut)
    original = shard.read_bytes()
    rows = _run([shard], sqlite_url, dry_run=True)
    assert shard.read_bytes() == original
    pictures = [row for row in rows if row.image_format in ("JPEG", "PNG")]
    assert [(row.outcome, len(row.faces), row.faces_anonymized) for row in pictures] == [(Outcome.DRY_RUN, 1, 0)] * 2
    assert rows[-1].path == shard and rows[-1].outcome is Outcome.DRY_RUN
    assert rows[-1].output_sha256 is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "audit") == ["shard.tar"]


def test_a_shard_without_faces_is_left_byte_for_byte(tmp_path: Path, sqlite_url: str) -> None:
    shard = tmp_path / "shard.tar"
    blank = np.full((64, 64, 3), 120, np.uint8)
    with wds.TarWriter(str(shard)) as writer:
        writer.write({"__key__": "a", "png": _encoded(blank, "PNG"), "txt": "no one here"})
    original = shard.read_bytes()
    policy = Policy()
    plan = plan_jobs([shard])
    with AuditStore(sqlite_url) as store:
        models = StaticModels()
        with AuditedRun.begin(store, command="anonymize", mode=plan.mode, models=models, settings={}) as run:
            run_plan(plan.items(), executor=InProcess(models, policy), run=run)
        rows = store.list_files(run.run_id, with_pending=True)
    assert shard.read_bytes() == original
    assert [row.outcome for row in rows] == [Outcome.NO_FACES, Outcome.NOT_MEDIA, Outcome.NO_FACES]
    assert rows[-1].output_sha256 == hashlib.sha256(original).hexdigest()
    assert run.summary is not None and run.summary.status is RunStatus.COMPLETED


def _mp4(astronaut: np.ndarray, path: Path) -> bytes:
    """Ten frames of the astronaut's top left (256x160, the face inside), H.264 in MP4."""
    crop = np.ascontiguousarray(astronaut[:160, :256])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 256, 160, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    data = path.read_bytes()
    path.unlink()
    return data


def _first_frame(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def test_a_video_member_is_anonymized_through_the_video_pipeline(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    shard = tmp_path / "shard.tar"
    clip = _mp4(astronaut, tmp_path / "made.mp4")
    with wds.TarWriter(str(shard)) as writer:
        writer.write({"__key__": "clip", "mp4": clip, "txt": "a clip"})
    rows = _run([shard], sqlite_url)
    after = dict((info.name, data) for info, data in _members(shard))
    assert list(after) == ["clip.mp4", "clip.txt"] and after["clip.txt"] == b"a clip"
    x1, y1, x2, y2 = (round(value) for value in FACE_BOX.xyxy)
    old, new = _first_frame(clip).astype(np.int16), _first_frame(after["clip.mp4"]).astype(np.int16)
    assert float(np.abs(old - new)[y1:y2, x1:x2].mean()) > 40  # the face is filled on the frames
    member = next(row for row in rows if row.path == Path(f"{shard}#clip.mp4") and row.outcome is not Outcome.PENDING)
    assert (member.outcome, member.image_format, member.width, member.height) == (
        Outcome.ANONYMIZED, "video/h264", 256, 160
    )  # fmt: skip
    assert member.faces_detected == 10 and member.output_sha256 == hashlib.sha256(after["clip.mp4"]).hexdigest()
    assert rows[-1].details["videos"] == 1
    assert not _temporaries(tmp_path)


def test_a_corrupt_video_member_fails_the_shard(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    shard = tmp_path / "shard.tar"
    clip = _mp4(astronaut, tmp_path / "made.mp4")
    with wds.TarWriter(str(shard)) as writer:
        writer.write({"__key__": "clip", "mp4": clip[: len(clip) // 2], "txt": "a clip"})
    original = shard.read_bytes()
    rows = _run([shard], sqlite_url)
    assert [(row.outcome, row.error_class) for row in rows] == [(Outcome.ERROR, "CorruptImageError")]
    assert rows[0].error_message is not None and "member clip.mp4" in rows[0].error_message
    assert shard.read_bytes() == original
    assert not _temporaries(tmp_path)


def test_shards_are_sniffed_by_content_and_gzipped_ones_by_name(tmp_path: Path, astronaut: np.ndarray) -> None:
    shard = tmp_path / "no-extension"
    write_shard(shard, astronaut)
    assert sniff_file(shard).kind is MediaKind.SHARD
    compressed = gzip.compress(shard.read_bytes())
    assert sniff(compressed[:1024]).kind is None  # a gzip stream says nothing of what it holds
    for name, kind in (("s.tar.gz", MediaKind.SHARD), ("s.tgz", MediaKind.SHARD), ("s.gz", None)):
        (tmp_path / name).write_bytes(compressed)
        jobs = list(plan_jobs([tmp_path / name]).jobs())
        assert [job.kind for job in jobs] == ([kind] if kind else [])
    damaged = bytearray(shard.read_bytes()[:1024])
    damaged[0] ^= 0xFF  # the header's checksum no longer matches
    assert sniff(bytes(damaged)).kind is not MediaKind.SHARD


@pytest.mark.parametrize("name", ["shard.tar.bz2", "shard.tar.xz", "shard.tar.zst"])
def test_a_tar_in_another_compression_is_refused_aloud(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, name: str
) -> None:
    shard = tmp_path / name
    write_shard(shard, astronaut)  # what it holds does not matter: the name says an archive efface cannot rewrite
    original = shard.read_bytes()
    rows = _run([shard], sqlite_url)
    assert [(row.path, row.outcome, row.error_class) for row in rows] == [
        (shard, Outcome.ERROR, "UnsupportedFormatError")
    ]
    assert rows[0].error_message is not None and "recompress" in rows[0].error_message
    assert shard.read_bytes() == original
    assert not _temporaries(tmp_path)


def test_a_run_lost_after_the_swap_leaves_every_member_row_for_the_next_run_to_settle(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = tmp_path / "shard.tar"
    write_shard(shard, astronaut)
    count = len(_members(shard))

    def lost(self: AuditedRun, done: object) -> None:
        raise AuditError("database gone")

    with monkeypatch.context() as patch:
        patch.setattr(AuditedRun, "_record_done", lost)
        with pytest.raises(AuditError, match="anonymized but not recorded"):
            _run([shard], sqlite_url)
    with AuditStore(sqlite_url) as store:
        (lost_run,) = [run for run in store.list_runs() if run.files_total == 0]
        pending = store.list_files(lost_run.run_id, with_pending=True)
        member_paths = [row.path for row in pending if "#" in str(row.path)]
        assert len(member_paths) == count and all(row.outcome is Outcome.PENDING for row in pending)
        assert [row.path for row in pending][-1] == shard
    rows = _run([shard], sqlite_url)
    assert [(row.path, row.outcome) for row in rows] == [(shard, Outcome.SKIPPED)]
    with AuditStore(sqlite_url) as store:
        settled = [row for row in store.list_files(lost_run.run_id) if row.outcome is not Outcome.PENDING]
        for path in [*member_paths, shard]:
            assert store.unsettled_pending(path) == []
        assert store.verify().is_intact
    by_path = {row.path: row for row in settled}
    assert set(by_path) == {*member_paths, shard}
    assert by_path[shard].outcome is Outcome.ANONYMIZED
    assert all(row.details["settled_by_run"] for row in settled)
    faces = [row for path, row in by_path.items() if path != shard and row.outcome is Outcome.ANONYMIZED]
    assert faces and all(row.faces_anonymized == 1 for row in faces)


def test_a_shard_that_cannot_be_swapped_in_settles_its_member_rows_as_errors(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = tmp_path / "shard.tar"
    write_shard(shard, astronaut)
    original = shard.read_bytes()
    count = len(_members(shard))
    real_claim = run_module.claim

    def changed_under_us(staged: object) -> object:
        claimed = real_claim(staged)  # type: ignore[arg-type]
        shard.write_bytes(original + b"\0" * 1024)  # the source changes before the swap
        return claimed

    monkeypatch.setattr(run_module, "claim", changed_under_us)
    rows = _run([shard], sqlite_url)
    with AuditStore(sqlite_url) as store:
        for row in rows:
            assert row.path is not None and store.unsettled_pending(row.path) == []
    finals = [row for row in rows if row.outcome is not Outcome.PENDING]
    assert finals[-1].path == shard and finals[-1].outcome is Outcome.ERROR
    members = [row for row in finals if row.path != shard]
    assert len(members) == count and all(row.outcome is Outcome.ERROR for row in members)
    assert shard.read_bytes() == original + b"\0" * 1024
    assert not _temporaries(tmp_path)
