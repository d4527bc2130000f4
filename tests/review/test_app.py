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


@pytest.mark.parametrize("name", ["clip.mp4", "shard.tar"])
def test_what_is_not_a_picture_is_listed_as_not_reviewable(tmp_path: Path, sqlite_url: str, name: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_bytes(b"\x00" * 64)
    with AuditStore(sqlite_url) as store:
        listed = _client(_session(folder, store)).get("/api/files").json()
    assert listed["files"] == []
    assert len(listed["refused"]) == 1 and listed["refused"][0]["path"].endswith(name)
