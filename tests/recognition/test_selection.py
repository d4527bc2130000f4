"""Selective anonymization (``--keep-person``, ``--only-person``): the fail-safe decisions on made-up embeddings,
then the real thing with both recognizers on LFW people (research-only data beside the repository, read in place):
photos and a video composed from two identities, through the command line and its audit log."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.audit.report import CheckStatus, build_report, render_html
from efface.audit.summary import ReportScope
from efface.cli import app
from efface.errors import ConfigurationError, InputError
from efface.recognition import selection as selection_module
from efface.recognition.matching import MatchMode, Thresholds
from efface.recognition.selection import (
    DEFAULT_THRESHOLDS,
    Person,
    Selection,
    TrackVotes,
    Verdict,
    is_recognizable,
    references_sha256,
)
from efface.records import BBox, Face

FACES_IDENTITY = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces-identity"
SUBJECT, OTHER = "Bertie_Ahern", "Chanda_Rubin"  # a pair the matcher tells apart (not every pair is)

THRESHOLDS = Thresholds(keep={"a": 0.9, "b": 0.9}, close={"a": 0.7, "b": 0.7}, other={"a": 0.3, "b": 0.3})


def _unit(angle_deg: float) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    return np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)


def _person() -> Person:
    """One reference at angle 0 for both made-up recognizers: cosine = cos(angle of the face)."""
    return Person({"a": _unit(0)[None], "b": _unit(0)[None]}, ("0" * 64,))


def _face(angle_a: float | None, angle_b: float | None) -> dict[str, np.ndarray | None]:
    return {
        "a": None if angle_a is None else _unit(angle_a),
        "b": None if angle_b is None else _unit(angle_b),
    }


def test_a_face_is_kept_only_when_every_recognizer_is_sure_and_anonymized_when_unrecognized() -> None:
    keep = Selection(MatchMode.KEEP, (_person(),), thresholds=THRESHOLDS)
    sure, half = 10.0, 40.0  # cos 10 deg = 0.98 (sure), cos 40 deg = 0.77 (close, not sure)
    assert keep.verdict(_face(sure, sure)) is Verdict.SUBJECT
    assert keep.verdict(_face(sure, half)) is Verdict.OTHER  # one recognizer unsure: not kept
    assert keep.verdict(_face(sure, None)) is Verdict.UNRECOGNIZED
    assert not keep.is_anonymized(Verdict.SUBJECT)
    assert keep.is_anonymized(Verdict.OTHER) and keep.is_anonymized(Verdict.UNRECOGNIZED)
    only = Selection(MatchMode.ONLY, (_person(),), thresholds=THRESHOLDS)
    assert only.verdict(_face(half, 80.0)) is Verdict.SUBJECT  # one recognizer close is enough
    assert only.verdict(_face(80.0, 80.0)) is Verdict.OTHER
    assert only.is_anonymized(Verdict.SUBJECT) and only.is_anonymized(Verdict.UNRECOGNIZED)
    assert not only.is_anonymized(Verdict.OTHER)


def test_a_track_is_decided_whole_and_a_contradicting_frame_stops_it_being_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keep = Selection(MatchMode.KEEP, (_person(),), thresholds=THRESHOLDS)
    angles = {0: [5.0] * 8, 1: [5.0, 5.0, 5.0, 85.0, 5.0, 5.0], 2: [40.0] * 8}  # 85 deg: sure it is someone else
    frame_of: dict[int, int] = {}

    def embed(pixels: np.ndarray, face: Face, *, selection: Selection) -> dict[str, np.ndarray | None]:
        track = int(face.box.x1)
        angle = angles[track][frame_of[track]]
        frame_of[track] += 1
        return _face(angle, angle)

    monkeypatch.setattr(selection_module, "embed_face", embed)
    votes = TrackVotes(keep)
    pixels = np.zeros((8, 8, 3), np.uint8)
    frame_of.update(dict.fromkeys(angles, 0))
    for index in range(40):
        faces = [Face(BBox(track, 0, track + 1, 1), 0.9) for track in angles]
        due = [index % selection_module.EMBED_EVERY_FRAMES == 0 and index // 5 < len(angles[t]) for t in angles]
        votes.add(index, pixels, faces, list(angles), due)
    decided = votes.decided()
    assert decided == {0: Verdict.SUBJECT, 1: Verdict.OTHER, 2: Verdict.OTHER}
    assert votes.anonymized() == frozenset({1, 2})
    assert votes.counts(boxes_kept=40).as_dict() == {"kept": 1, "anonymized": 2, "unrecognized": 0, "boxes_kept": 40}


def test_small_and_turned_faces_cannot_be_recognized() -> None:
    frontal = ((40.0, 40.0), (60.0, 40.0), (50.0, 50.0), (42.0, 60.0), (58.0, 60.0))
    turned = ((40.0, 40.0), (60.0, 40.0), (62.0, 50.0), (42.0, 60.0), (58.0, 60.0))
    assert is_recognizable(Face(BBox(30, 30, 80, 90), 0.9, frontal), min_face_px=40)
    assert not is_recognizable(Face(BBox(30, 30, 80, 90), 0.9, turned), min_face_px=40)
    assert not is_recognizable(Face(BBox(30, 30, 60, 90), 0.9, frontal), min_face_px=40)
    assert is_recognizable(Face(BBox(30, 30, 80, 90), 0.9), min_face_px=40)  # no landmarks: size only


def test_the_audited_settings_hold_hashes_and_counts_never_an_embedding() -> None:
    people = (
        Person({"dlib": np.ones((2, 128), np.float32), "facenet": np.ones((2, 512), np.float32)}, ("a" * 64, "b" * 64)),
        Person({"dlib": np.ones((1, 128), np.float32), "facenet": np.ones((1, 512), np.float32)}, ("c" * 64,)),
    )
    audited = Selection(MatchMode.KEEP, people).audited()
    text = json.dumps(audited)
    assert audited["people"] == 2 and audited["references"] == 3 and audited["mode"] == "keep"
    assert audited["references_sha256"] == references_sha256(people[::-1])  # the order given does not matter
    assert audited["thresholds"] == DEFAULT_THRESHOLDS.as_dict() and len(text) < 1000
    with pytest.raises(ConfigurationError):
        Selection(MatchMode.KEEP, ())


# --- the real recognizers on LFW people ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lfw() -> Path:
    people = FACES_IDENTITY / "people"
    if not (people / SUBJECT).is_dir() or not (people / OTHER).is_dir():
        pytest.skip(f"evaluation data not present: {people}")
    return people


def _photos(lfw: Path, person: str) -> list[Path]:
    return sorted((lfw / person).glob("*.jpg"))


def _canvas(left: np.ndarray, right: np.ndarray, *, shift: int = 0) -> np.ndarray:
    """The two people side by side, 250x250 each, on a 560x300 canvas; ``shift`` moves both right."""
    canvas = np.full((300, 560, 3), 90, np.uint8)
    canvas[25:275, 10 + shift : 260 + shift] = left
    canvas[25:275, 300 - shift : 550 - shift] = right
    return canvas


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


LEFT = (slice(100, 200), slice(100, 170))  # the left person's face (rows, columns) on the canvas
RIGHT = (slice(100, 200), slice(390, 460))


def _change(before: np.ndarray, after: np.ndarray, region: tuple[slice, slice]) -> float:
    return float(np.abs(before[region].astype(int) - after[region].astype(int)).mean())


@pytest.mark.slow
def test_keep_person_leaves_the_subject_visible_and_anonymizes_the_other_with_an_audit_of_counts(
    lfw: Path, tmp_path: Path, sqlite_url: str
) -> None:
    subject, other = _photos(lfw, SUBJECT), _photos(lfw, OTHER)
    photo = tmp_path / "in" / "both.png"
    photo.parent.mkdir()
    source = _canvas(_rgb(subject[1]), _rgb(other[0]))
    photo.write_bytes(_png(source))
    references = tmp_path / "subject"
    references.mkdir()
    for path in subject[2:4]:  # a folder of the person's photos (not the one anonymized)
        (references / path.name).symlink_to(path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["anonymize", str(photo.parent), "-o", str(out), "--keep-person", str(references), "--db", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    assert "1 kept visible" in result.output
    kept = np.asarray(Image.open(out / "in" / "both.png").convert("RGB"))
    assert _change(source, kept, LEFT) < 5.0  # the subject as they were (a small false box at the chin aside)
    assert _change(source, kept, RIGHT) > 20.0  # the third party anonymized
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs()
        (row,) = store.list_files(run.run_id)
    identity = run.settings["identity"]
    assert identity["mode"] == "keep" and identity["people"] == 1 and identity["references"] == 2
    assert len(identity["references_sha256"]) == 64 and "embedding" not in json.dumps(run.settings)
    assert row.details["identity"]["kept"] == 1 and row.details["identity"]["anonymized"] >= 1
    assert row.faces_anonymized == row.details["identity"]["anonymized"] + row.details["identity"]["unrecognized"]

    # The erasure request: only the subject goes; resuming without it would redo the file, not skip it.
    only = tmp_path / "only"
    result = CliRunner().invoke(
        app, ["anonymize", str(photo), "-o", f"{only}/", "--only-person", str(subject[2]), "--db", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    erased = np.asarray(Image.open(only / "both.png").convert("RGB"))
    assert _change(source, erased, LEFT) > 20.0
    assert _change(source, erased, RIGHT) < 5.0

    # The DPO report counts the faces left visible on purpose and asks for the requests behind them.
    with AuditStore(sqlite_url) as store:
        report = build_report(store, ReportScope(), efface_version="9.9.9")
    assert report.activity.selective_rows == 2 and report.activity.faces_kept_by_identity == 2
    (item,) = [item for item in report.checklist if item.title == "Faces left visible by identity accounted for"]
    assert item.status is CheckStatus.MISSING and "left 2 faces" in item.evidence
    assert report.checklist[-1].title == "Every file in scope anonymized without error"
    assert "faces kept visible by identity" in render_html(report)


@pytest.mark.slow
def test_a_reference_that_cannot_be_used_is_refused_aloud_and_nothing_is_touched(
    lfw: Path, tmp_path: Path, sqlite_url: str
) -> None:
    subject, other = _photos(lfw, SUBJECT), _photos(lfw, OTHER)
    photo = tmp_path / "both.png"
    photo.write_bytes(_png(_canvas(_rgb(subject[1]), _rgb(other[0]))))
    before = photo.read_bytes()
    blank = tmp_path / "blank.png"
    blank.write_bytes(_png(np.full((200, 200, 3), 128, np.uint8)))
    two = tmp_path / "two.png"
    two.write_bytes(photo.read_bytes())
    cases = [
        (["--keep-person", str(blank)], "no face found in this reference photo"),
        (["--keep-person", str(two)], "faces of like size"),
        (["--keep-person", str(tmp_path / "nobody")], "no such reference photo or folder"),
        (["--keep-person", str(subject[2]), "--only-person", str(other[1])], "not both"),
    ]
    for options, message in cases:
        result = CliRunner().invoke(app, ["anonymize", str(photo), *options, "--db", sqlite_url])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert photo.read_bytes() == before
    with pytest.raises(InputError):
        selection_module._reference_face([], path=blank, min_face_px=40)


def _write_clip(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "12"}
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def _read_clip(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.slow
def test_in_a_video_of_two_people_one_is_kept_on_every_frame_and_the_other_anonymized_on_every_frame(
    lfw: Path, tmp_path: Path, sqlite_url: str
) -> None:
    subject, other = _photos(lfw, SUBJECT), _photos(lfw, OTHER)
    left, right = _rgb(subject[1]), _rgb(other[0])
    clip = tmp_path / "in" / "two.mp4"
    clip.parent.mkdir()
    _write_clip(clip, [_canvas(left, right, shift=index % 6) for index in range(30)])
    source = _read_clip(clip)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["anonymize", str(clip), "-o", f"{out}/", "--keep-person", str(subject[2]), "--db", sqlite_url, "--json"],
    )
    assert result.exit_code == 0, result.output
    written = _read_clip(out / "two.mp4")
    assert len(written) == len(source) == 30
    for index, (before, after) in enumerate(zip(source, written, strict=True)):
        shift = index % 6
        face_left = (LEFT[0], slice(LEFT[1].start + shift, LEFT[1].stop + shift))
        face_right = (RIGHT[0], slice(RIGHT[1].start - shift, RIGHT[1].stop - shift))
        assert _change(before, after, face_left) < 10.0, f"frame {index}: the subject was anonymized"
        assert _change(before, after, face_right) > 40.0, f"frame {index}: the third party was left visible"
    (line,) = [line for line in map(json.loads, result.output.splitlines()) if line["type"] == "file"]
    identity = line["identity"]
    assert identity["kept"] == 1 and identity["anonymized"] >= 1 and identity["boxes_kept"] == 30

    # The same clip under --only-person: the subject anonymized on every frame, the other left visible.
    only = tmp_path / "only"
    result = CliRunner().invoke(
        app, ["anonymize", str(clip), "-o", f"{only}/", "--only-person", str(subject[2]), "--db", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    for index, (before, after) in enumerate(zip(source, _read_clip(only / "two.mp4"), strict=True)):
        shift = index % 6
        face_left = (LEFT[0], slice(LEFT[1].start + shift, LEFT[1].stop + shift))
        face_right = (RIGHT[0], slice(RIGHT[1].start - shift, RIGHT[1].stop - shift))
        assert _change(before, after, face_left) > 40.0, f"frame {index}: the subject was left visible"
        assert _change(before, after, face_right) < 10.0, f"frame {index}: the other was anonymized"


@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--jobs", "2"], ["--ray", "local"]], ids=["process-pool", "ray"])
def test_the_selection_travels_to_every_executor(
    lfw: Path, tmp_path: Path, sqlite_url: str, executor: list[str]
) -> None:
    subject, other = _photos(lfw, SUBJECT), _photos(lfw, OTHER)
    folder = tmp_path / "in"
    folder.mkdir()
    sources = {}
    for index in range(3):
        sources[f"p{index}.png"] = _canvas(_rgb(subject[index % 2]), _rgb(other[0]))
        (folder / f"p{index}.png").write_bytes(_png(sources[f"p{index}.png"]))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["anonymize", str(folder), "-o", str(out), "--keep-person", str(subject[2]), *executor, "--db", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    assert "3 kept visible" in result.output
    for name, source in sources.items():
        written = np.asarray(Image.open(out / "in" / name).convert("RGB"))
        assert _change(source, written, LEFT) < 5.0 and _change(source, written, RIGHT) > 20.0, name


@pytest.mark.slow
def test_a_python_session_keeps_the_subject_of_its_reference_photos(lfw: Path, sqlite_url: str) -> None:
    import efface

    subject, other = _photos(lfw, SUBJECT), _photos(lfw, OTHER)
    source = _canvas(_rgb(subject[1]), _rgb(other[0]))
    with efface.Session(db_url=sqlite_url, keep_person=[subject[2]]) as session:
        anonymized = session.anonymize_bytes(_png(source), name="both.png")
        run_id = session._run_for_content().run_id
    written = np.asarray(Image.open(io.BytesIO(anonymized.data)).convert("RGB"))
    assert _change(source, written, LEFT) < 5.0 and _change(source, written, RIGHT) > 20.0
    assert anonymized.result.details["identity"]["kept"] == 1
    with AuditStore(sqlite_url) as store:
        run = store.get_run(run_id)
    assert run.settings["identity"]["mode"] == "keep" and run.settings["identity"]["references"] == 1
    with pytest.raises(ConfigurationError, match="not both"):
        efface.Session(db_url=sqlite_url, keep_person=[subject[2]], only_person=[other[0]])


@pytest.mark.slow
def test_a_video_that_decodes_otherwise_on_the_second_pass_fails_and_stays_as_it_was(
    astronaut: np.ndarray, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boxes chosen on the first pass are given frame by frame to the second: a video that decodes to another
    number of frames the second time (changed, or a decoder that disagrees) must fail, not be anonymized askew."""
    import dataclasses

    from efface.pipeline import video as video_module

    canvas = np.full((512, 768, 3), 90, np.uint8)
    canvas[:, 128:640] = astronaut
    clip = tmp_path / "astronaut.mp4"
    _write_clip(clip, [canvas] * 6)
    before = clip.read_bytes()
    reference = tmp_path / "reference.jpg"
    Image.fromarray(astronaut).save(reference, quality=95)
    scan = video_module.scan_video

    def one_frame_more(*args: object, **kwargs: object) -> object:
        stats = scan(*args, **kwargs)  # type: ignore[arg-type]
        return dataclasses.replace(stats, frames=stats.frames + 1)

    monkeypatch.setattr(video_module, "scan_video", one_frame_more)
    result = CliRunner().invoke(
        app, ["anonymize", str(clip), "--keep-person", str(reference), "--jobs", "1", "--db", sqlite_url]
    )
    assert result.exit_code == 1, result.output
    assert "decoded 7 frames to decide whose faces to keep, then 6 to anonymize" in result.output
    assert clip.read_bytes() == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
