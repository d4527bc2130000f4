"""Which files a run takes and how names are shown and stored, end to end: real files, the real command.

A file is taken by its content, never by its name: every file under the given paths is sniffed, what is a picture
or a video is anonymized or refused aloud, and what is not is audited as not media and counted. A name that is not
UTF-8, holds control characters or is a symbolic link loop is processed or refused on one escaped line, and the run
goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.records import Outcome, RunStatus

from .conftest import json_files


def _files(db_url: str) -> dict[str, object]:
    with AuditStore(db_url) as store:
        (run,) = store.list_runs(limit=1)
        assert run.status is RunStatus.FAILED
        return {Path(str(row.path)).name: row for row in store.list_files(run.run_id)}


def _video(path: Path, *, muxer: str, codec: str, astronaut: np.ndarray) -> None:
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        small = np.ascontiguousarray(astronaut[::4, ::4])
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(small, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _efface(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "efface", "anonymize", *args], capture_output=True, timeout=300, check=False, env=env
    )


@pytest.mark.slow
def test_pictures_and_videos_are_taken_by_content_whatever_their_name(tmp_path: Path, astronaut: np.ndarray) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jfif", "b.jif", "c.pjpeg", "no_extension"):
        Image.fromarray(astronaut).save(folder / name, format="JPEG", quality=90)
    frames = [Image.fromarray(astronaut[:64, :64]), Image.fromarray(astronaut[64:128, :64])]
    frames[0].save(folder / "moving.apng", format="PNG", save_all=True, append_images=frames[1:])
    _video(folder / "clip.3gp", muxer="3gp", codec="mpeg4", astronaut=astronaut)
    _video(folder / "clip.ts", muxer="mpegts", codec="mpeg2video", astronaut=astronaut)
    _video(folder / "clip.mpg", muxer="mpeg", codec="mpeg1video", astronaut=astronaut)
    _video(folder / "camera", muxer="mpegts", codec="mpeg2video", astronaut=astronaut)  # no extension
    Image.fromarray(astronaut).save(folder / "raw.nef", format="TIFF")  # its preview would be written as a TIFF
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")
    (folder / "notes.txt").write_text("shot list\n")
    (folder / "app.ts").write_text("export const x = 1;\n")  # TypeScript, not a transport stream
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"

    proc = _efface(str(folder), "--db", db_url)

    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    rows = _files(db_url)
    for name in ("a.jfif", "b.jif", "c.pjpeg", "no_extension"):
        assert rows[name].outcome is Outcome.ANONYMIZED, (name, rows[name])
        assert (folder / name).read_bytes() != before[name]
    refused = {
        "moving.apng": "UnsupportedFormatError",
        "clip.3gp": "UnsupportedFormatError",
        "clip.ts": "UnsupportedFormatError",
        "clip.mpg": "UnsupportedFormatError",
        "camera": "UnsupportedFormatError",
        "text.jpg": "CorruptImageError",
        "raw.nef": "UnsupportedFormatError",
    }
    for name, error_class in refused.items():
        assert rows[name].error_class == error_class, (name, rows[name])
        assert f"{folder / name}: " in stderr
        assert (folder / name).read_bytes() == before[name]
    for name in ("notes.txt", "app.ts"):
        assert rows[name].outcome is Outcome.NOT_MEDIA
        assert (folder / name).read_bytes() == before[name]
    assert "2 files are not pictures or videos" in stdout


@pytest.mark.slow
def test_a_folder_of_non_media_is_counted_and_audited_not_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme").write_text("nothing to see\n")
    (folder / "empty.bin").write_bytes(b"")
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    proc = _efface(str(folder), str(folder / "readme"), "--db", db_url, "--json")
    assert proc.returncode == 1, proc.stderr.decode()  # a folder without any picture or video fails, as before
    lines = json_files(proc.stdout.decode())
    assert sorted((Path(line["path"]).name, line["outcome"]) for line in lines) == [
        ("docs", "error"),
        ("empty.bin", "not_media"),
        ("readme", "not_media"),
    ]
    rows = _files(db_url)
    assert rows["readme"].outcome is Outcome.NOT_MEDIA and rows["empty.bin"].outcome is Outcome.NOT_MEDIA


@pytest.mark.slow
def test_odd_names_are_processed_or_refused_on_one_escaped_line(tmp_path: Path, astronaut: np.ndarray) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.fsencode(folder)
    not_utf8 = raw + b"/b\xff.jpg"  # Latin-1 "b\xff" from an old camera card
    Image.fromarray(astronaut).save(os.fsdecode(not_utf8), format="JPEG", quality=90)
    with_controls = folder / "c\nd\x1b[31m.jpg"
    with_controls.write_text("not a JPEG\n")
    Image.fromarray(astronaut).save(folder / "z.jpg", format="JPEG", quality=90)
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "ring_a").symlink_to("ring_b")
    (folder / "ring_b").symlink_to("ring_a")
    loop_argument = tmp_path / "self"
    loop_argument.symlink_to("self")
    before_not_utf8 = Path(os.fsdecode(not_utf8)).read_bytes()
    before_z = (folder / "z.jpg").read_bytes()
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"

    proc = _efface(str(folder), str(loop_argument), "--db", db_url)

    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "\x1b" not in stdout + stderr  # not a terminal: the only ESC could come from the name
    # Every file processed, the one with the non-UTF-8 name included, and the run finished (not interrupted).
    assert Path(os.fsdecode(not_utf8)).read_bytes() != before_not_utf8
    assert (folder / "z.jpg").read_bytes() != before_z
    rows = _files(db_url)
    assert rows["b\\xff.jpg"].outcome is Outcome.ANONYMIZED
    assert rows["z.jpg"].outcome is Outcome.ANONYMIZED
    assert rows["c\\nd\\x1b[31m.jpg"].error_class == "CorruptImageError"
    for name in ("loop.jpg", "ring_a", "ring_b", "self"):
        assert rows[name].error_class == "UnreadableFileError", (name, rows[name])
        assert "symbolic link loop" in str(rows[name].error_message)
    error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert f"error: {folder}/c\\nd\\x1b[31m.jpg: named .jpg but its content is not an image (CorruptImageError)" in (
        error_lines
    )
    assert len(error_lines) == 5, stderr
    assert all(line.startswith("error: ") for line in stderr.splitlines() if line.strip()), stderr

    shown = subprocess.run(
        [sys.executable, "-m", "efface", "audit", "show", "latest", "--db", db_url],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert shown.returncode == 0, shown.stderr.decode()
    assert "b\\xff.jpg" in shown.stdout.decode() and "\x1b" not in shown.stdout.decode()


@pytest.mark.slow
def test_many_files_that_are_not_media_are_each_audited(tmp_path: Path) -> None:
    """More than one batch of not-media rows (256 a transaction), every one recorded and counted."""
    folder = tmp_path / "dataset"
    (folder / "labels").mkdir(parents=True)
    Image.new("RGB", (40, 30), (10, 200, 10)).save(folder / "plain.png")
    for index in range(300):
        (folder / "labels" / f"{index:03d}.xml").write_text(f"<annotation>{index}</annotation>\n")
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    proc = _efface(str(folder), "--db", db_url)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "300 files are not pictures or videos" in proc.stdout.decode()
    with AuditStore(db_url) as store:
        (run,) = store.list_runs(limit=1)
        rows = store.list_files(run.run_id)
    assert run.status is RunStatus.COMPLETED and run.files_total == 1
    assert sorted(row.outcome for row in rows).count(Outcome.NOT_MEDIA) == 300
    assert {Path(str(row.path)).name for row in rows if row.outcome is Outcome.NOT_MEDIA} == {
        f"{index:03d}.xml" for index in range(300)
    }
