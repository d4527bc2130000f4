"""The review page's API over a real session (a fake detector, a real SQLite audit log): the token, the list most
uncertain first, previews made in memory, the state saved and resumed, and Apply through the audited pipeline."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from efface.arrays import ImageArray
from efface.audit import AuditStore
from efface.pipeline.core import Policy
from efface.records import BBox, Face, Outcome
from efface.review.app import TOKEN_COOKIE, create_review_app
from efface.review.session import ReviewSession

TOKEN = "t0k3n-for-tests"
SURE = Face(BBox(40.0, 40.0, 120.0, 140.0), 0.9)
FAINT = Face(BBox(200.0, 60.0, 260.0, 130.0), 0.2)
MISSED = (300.0, 150.0, 370.0, 230.0)  # a face the detector did not report at all


class _Candidates:
    name = "candidates"
    weights_sha256 = "2" * 64
    score_threshold = 0.3

    def detect(self, image: ImageArray) -> tuple[Face, ...]:
        return tuple(face for face in self.detect_all(image) if face.score >= self.score_threshold)

    def detect_all(self, image: ImageArray) -> tuple[Face, ...]:
        # The busy picture (textured) has a face and a faint candidate; the plain one has nothing.
        return (SURE, FAINT) if float(image.std()) > 10 else ()


class _Models:
    name = "candidates"
    weights_sha256 = "2" * 64

    def detector(self, spec: object) -> _Candidates:
        return _Candidates()


def _pictures(folder: Path) -> tuple[Path, Path]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    busy = rng.integers(0, 255, (260, 400, 3), dtype=np.uint8)
    Image.fromarray(busy).save(folder / "busy.png")
    Image.fromarray(np.full((260, 400, 3), 128, np.uint8)).save(folder / "plain.png")
    return folder / "busy.png", folder / "plain.png"


def _session(folder: Path, store: AuditStore) -> ReviewSession:
    session = ReviewSession(
        [folder],
        models=_Models(),
        policy=Policy(),
        store=store,
        reviewer="dpo@example.org",
        settings={"method": "fill"},
    )
    session.start()
    session.wait(30)
    return session


def _client(session: ReviewSession) -> TestClient:
    app = create_review_app(session, token=TOKEN, hosts=frozenset({"testserver"}))
    return TestClient(app, headers={"x-efface-token": TOKEN})


def _pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"), np.int16)


def _region(pixels: np.ndarray, xyxy: tuple[float, ...]) -> np.ndarray:
    x1, y1, x2, y2 = (round(value) for value in xyxy)
    return pixels[y1:y2, x1:x2]


def test_every_request_needs_the_token_and_a_host_it_serves(tmp_path: Path, sqlite_url: str) -> None:
    _pictures(tmp_path / "photos")
    with AuditStore(sqlite_url) as store:
        session = _session(tmp_path / "photos", store)
        app = create_review_app(session, token=TOKEN, hosts=frozenset({"testserver"}))
        bare = TestClient(app)
        for path in ("/", "/api/files", "/api/files/0/original"):
            assert bare.get(path).status_code == 403
        assert bare.get("/?token=wrong").status_code == 403
        page = bare.get(f"/?token={TOKEN}")
        assert page.status_code == 200 and "efface review" in page.text
        assert page.cookies.get(TOKEN_COOKIE) == TOKEN
        assert bare.get("/api/files").status_code == 200  # the cookie the page got
        elsewhere = TestClient(app, base_url="http://evil.example", headers={"x-efface-token": TOKEN})
        assert elsewhere.get("/api/files").status_code == 403  # a page that rebinds its name to this port


def test_the_most_uncertain_first_previews_in_memory_and_apply(tmp_path: Path, sqlite_url: str) -> None:
    busy, plain = _pictures(tmp_path / "photos")
    before = {path: path.read_bytes() for path in (busy, plain)}
    with AuditStore(sqlite_url) as store:
        client = _client(_session(tmp_path / "photos", store))
        listed = client.get("/api/files").json()
        assert listed["detecting"] == 0
        assert [(f["name"], f["faces"], f["faint"]) for f in listed["files"]] == [
            ("busy.png", 1, 1),
            ("plain.png", 0, 0),
        ]
        busy_file = listed["files"][0]
        boxes: list[dict[str, Any]] = busy_file["boxes"]
        assert [(b["origin"], b["is_applied"]) for b in boxes] == [("detected", True), ("faint", False)]
        original = client.get(f"/api/files/{busy_file['file_id']}/original")
        assert original.headers["content-type"] == "image/jpeg" and original.headers["cache-control"] == "no-store"

        # The faint candidate on, a box drawn over the missed face: the preview changes there, the file does not.
        boxes[1]["is_applied"] = True
        boxes.append({"box_id": "new", "xyxy": list(MISSED), "origin": "manual", "is_applied": True, "score": None})
        preview = client.post(f"/api/files/{busy_file['file_id']}/preview", json={"boxes": boxes})
        assert preview.status_code == 200 and preview.headers["cache-control"] == "no-store"
        shown, anonymized = _pixels(original.content), _pixels(preview.content)
        for xyxy in (SURE.box.xyxy, FAINT.box.xyxy, MISSED):
            assert np.abs(_region(shown, xyxy) - _region(anonymized, xyxy)).mean() > 30
        assert {path: path.read_bytes() for path in (busy, plain)} == before
        assert sorted(os.listdir(tmp_path / "photos")) == ["busy.png", "plain.png"]

        # A box outside the picture, or one the detector did not find passed off as its own, is refused.
        wrong = [*boxes, {"box_id": "d7", "xyxy": [1, 1, 30, 30], "origin": "detected", "is_applied": True}]
        assert client.put(f"/api/files/{busy_file['file_id']}", json={"boxes": wrong}).status_code == 422
        outside = [{"box_id": "x", "xyxy": [350, 200, 500, 300], "origin": "manual", "is_applied": True}]
        assert client.put(f"/api/files/{busy_file['file_id']}", json={"boxes": outside}).status_code == 422

        saved = client.put(f"/api/files/{busy_file['file_id']}", json={"boxes": boxes, "is_accepted": True}).json()
        assert saved["state"] == "accepted" and saved["applied_boxes"] == 3
        manual_id = saved["boxes"][2]["box_id"]
        assert manual_id.startswith("m") and manual_id != "new"

        # Closed and opened again: the review resumes where it was.
        resumed = _client(_session(tmp_path / "photos", store))
        again = resumed.get(f"/api/files/{busy_file['file_id']}").json()
        assert again["state"] == "accepted" and again["boxes"] == saved["boxes"]

        applied = resumed.post("/api/apply").json()["applied"]
        assert applied == [{"path": str(busy), "outcome": "anonymized", "error": None}]
        assert plain.read_bytes() == before[plain]  # not accepted: not touched
        written = _pixels(busy.read_bytes())
        source = _pixels(before[busy])
        for xyxy in (SURE.box.xyxy, FAINT.box.xyxy, MISSED):
            assert np.abs(_region(source, xyxy) - _region(written, xyxy)).mean() > 30
        assert np.array_equal(_region(source, (0, 0, 30, 30)), _region(written, (0, 0, 30, 30)))  # PNG: lossless
        assert sorted(os.listdir(tmp_path / "photos")) == ["busy.png", "plain.png"]  # no temporary left
        assert resumed.get(f"/api/files/{busy_file['file_id']}").json()["state"] == "applied"

        (run,) = store.list_runs()
        rows = [row for row in store.list_files(run.run_id) if row.outcome is not Outcome.PENDING]
    assert (run.command, run.settings["reviewer"]) == ("review", "dpo@example.org")
    (row,) = rows
    assert (row.path, row.outcome, row.faces_anonymized) == (busy, Outcome.ANONYMIZED, 3)
    review = row.details["review"]
    assert review["reviewer"] == "dpo@example.org" and review["reviewed_at"]
    assert [box["xyxy"] for box in review["added_by_hand"]] == [list(MISSED)]
    assert [box["xyxy"] for box in review["faint_turned_on"]] == [list(FAINT.box.xyxy)]
    assert review["removed_by_hand"] == []


def test_a_picture_changed_since_its_review_fails_aloud(tmp_path: Path, sqlite_url: str) -> None:
    busy, _ = _pictures(tmp_path / "photos")
    with AuditStore(sqlite_url) as store:
        client = _client(_session(tmp_path / "photos", store))
        file = client.get("/api/files").json()["files"][0]
        assert client.put(
            f"/api/files/{file['file_id']}", json={"boxes": file["boxes"], "is_accepted": True}
        ).is_success
        changed = np.random.default_rng(9).integers(0, 255, (260, 400, 3), dtype=np.uint8)
        Image.fromarray(changed).save(busy)
        now = busy.read_bytes()
        (applied,) = client.post("/api/apply").json()["applied"]
        assert applied["outcome"] == "error" and "changed on disk since it was reviewed" in applied["error"]
        assert busy.read_bytes() == now
        (run,) = store.list_runs()
        (row,) = [r for r in store.list_files(run.run_id) if r.outcome is not Outcome.PENDING]
    assert (row.outcome, row.error_class) == (Outcome.ERROR, "SourceChangedError")


@pytest.mark.parametrize("name", ["shard.tar", "rows.parquet"])
def test_what_is_not_a_picture_is_listed_as_not_reviewable(tmp_path: Path, sqlite_url: str, name: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_bytes(b"\x00" * 64)
    with AuditStore(sqlite_url) as store:
        listed = _client(_session(folder, store)).get("/api/files").json()
    assert listed["files"] == []
    assert len(listed["refused"]) == 1 and listed["refused"][0]["path"].endswith(name)


def test_a_video_that_does_not_decode_is_listed_as_failed(tmp_path: Path, sqlite_url: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"\x00" * 64)
    with AuditStore(sqlite_url) as store:
        (listed,) = _client(_session(folder, store)).get("/api/files").json()["files"]
    assert (listed["kind"], listed["state"]) == ("video", "failed") and listed["error"]


def _noise_video(path: Path, frames: int = 12) -> list[np.ndarray]:
    import av

    rng = np.random.default_rng(11)
    pictures = [rng.integers(40, 215, (260, 400, 3), dtype=np.uint8) for _ in range(frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 400, 260, "yuv420p"
        stream.codec_context.options = {"crf": "8"}
        for picture in pictures:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    return pictures


def _decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [np.asarray(frame.to_ndarray(format="rgb24"), np.int16) for frame in container.decode(video=0)]


def test_a_video_track_removed_and_a_face_added_on_two_keyframes(tmp_path: Path, sqlite_url: str) -> None:
    """The tracker's track of the face is removed by hand, a face is added on frames 2 and 8: Apply anonymizes the
    added face on every frame (between the keyframes where they say, carried before and after) and not the
    removed one; the row names both."""
    folder = tmp_path / "clips"
    folder.mkdir()
    clip = folder / "street.mp4"
    _noise_video(clip)
    with AuditStore(sqlite_url) as store:
        client = _client(_session(folder, store))
        (video,) = client.get("/api/files").json()["files"]
        # A faint candidate on each frame of the full detection (every third frame; light passes between).
        assert (video["kind"], video["frames"], video["faint"]) == ("video", 12, 4)
        (track,) = video["tracks"]
        assert (track["track_id"], track["first"], track["last"], track["origin"]) == ("t0", 0, 11, "detected")
        frame = client.get(f"/api/files/{video['file_id']}/frames/3")
        assert frame.headers["content-type"] == "image/jpeg" and frame.headers["cache-control"] == "no-store"
        assert Image.open(io.BytesIO(frame.content)).size == (400, 260)
        (box,) = client.get(f"/api/files/{video['file_id']}/frames/3/boxes").json()
        assert box["box_id"] == "t0" and box["xyxy"] == list(SURE.box.xyxy)
        assert client.get(f"/api/files/{video['file_id']}/frames/40").status_code == 404
        assert client.get(f"/api/files/{video['file_id']}/original").status_code == 409

        left, right = [20.0, 60.0, 60.0, 120.0], [320.0, 60.0, 360.0, 120.0]
        state = {
            "applied": {"t0": False},
            "manual": [{"track_id": "m1", "keyframes": [[2, left], [8, right]]}],
            "is_accepted": True,
        }
        bad = {**state, "manual": [{"track_id": "m1", "keyframes": [[30, left]]}]}
        assert client.put(f"/api/files/{video['file_id']}/tracks", json=bad).status_code == 422
        saved = client.put(f"/api/files/{video['file_id']}/tracks", json=state).json()
        assert saved["state"] == "accepted"
        boxes = {b["box_id"]: b for b in client.get(f"/api/files/{video['file_id']}/frames/5/boxes").json()}
        assert boxes["t0"]["is_applied"] is False
        assert boxes["m1"]["xyxy"] == [170.0, 60.0, 210.0, 120.0] and not boxes["m1"]["is_keyframe"]
        preview = _pixels(client.get(f"/api/files/{video['file_id']}/frames/5/preview").content)
        shown = _pixels(client.get(f"/api/files/{video['file_id']}/frames/5").content)
        assert np.abs(_region(preview, (175, 65, 205, 115)) - _region(shown, (175, 65, 205, 115))).mean() > 40
        before = clip.read_bytes()
        # Closed and opened again: the tracks as reviewed.
        client = _client(_session(folder, store))
        resumed = client.get(f"/api/files/{video['file_id']}").json()
        assert resumed["state"] == "accepted"
        assert {t["track_id"]: (t["origin"], t["is_applied"]) for t in resumed["tracks"]} == {
            "t0": ("detected", False),
            "m1": ("manual", True),
        }

        (applied,) = client.post("/api/apply").json()["applied"]
        assert applied["outcome"] == "anonymized", applied
        assert clip.read_bytes() != before
        (run,) = store.list_runs()
        (row,) = [r for r in store.list_files(run.run_id) if r.outcome is not Outcome.PENDING]
    written = _decoded(clip)
    assert len(written) == 12
    for index, expected_x in ((0, 20), (2, 20), (5, 170), (8, 320), (11, 320)):
        added = (expected_x + 8, 70, expected_x + 32, 110)
        assert _region(written[index], added).mean() < 40, index  # filled (black) where the added face is
    for index in (0, 5, 11):  # the removed track's face is left as it was (noise, about 127 on average), not filled
        assert _region(written[index], (90, 60, 120, 130)).mean() > 90, index
    review = row.details["review"]
    assert [t["track_id"] for t in review["tracks_removed_by_hand"]] == ["t0"]
    assert review["tracks_added_by_hand"] == [{"track_id": "m1", "keyframes": [[2, left], [8, right]]}]
    assert (row.outcome, row.image_format) == (Outcome.ANONYMIZED, "video/h264")
