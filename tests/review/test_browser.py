"""The review page in a real headless Chromium (Debian's, driven by Playwright; nothing downloaded) against a real
``efface review`` process on loopback with the real detector: 403 without the token; a faint candidate turned on
from the keyboard, a box drawn with the mouse over a face the detector missed, the file accepted with a key and
applied; the file's pixels changed there, and the audit row names the box drawn by hand. Screenshots are kept in
``test-artifacts/review/`` (or ``$EFFACE_TEST_ARTIFACTS``)."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.records import Outcome

from ..conftest import turn_on_and_draw

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")


@pytest.fixture
def served(tmp_path: Path, street: Any, sqlite_url: str) -> Iterator[tuple[str, Path, str]]:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(street.pixels).save(folder / "street.png")
    command = [sys.executable, "-m", "efface", "review", str(folder), "--threshold", "0.9"]
    command += ["--reviewer", "Dana DPO", "--db", sqlite_url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"open (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
        assert match, line + process.stdout.read()
        yield match.group(1), folder / "street.png", sqlite_url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _wait_for_previews(page: object, count: int) -> None:
    """Until the page has shown ``count`` previews (polled from here: the page's policy forbids eval)."""
    deadline = time.monotonic() + 60
    preview = page.locator("#preview")  # type: ignore[attr-defined]
    while int(preview.get_attribute("data-version") or 0) < count:
        assert time.monotonic() < deadline, f"fewer than {count} previews shown"
        time.sleep(0.1)


def _region(path: Path, x: int, y: int, side: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"), np.int16)[y : y + side, x : x + side]


@pytest.mark.slow
def test_a_reviewer_turns_on_a_faint_candidate_draws_a_missed_face_and_applies(
    served: tuple[str, Path, str], street: Any, chromium_executable: str, artifacts: Path
) -> None:
    url, picture, db_url = served
    faint_at, missed_at = street.faint_at, street.missed_at
    before = {name: _region(picture, *at) for name, at in (("faint", faint_at), ("missed", missed_at))}
    base = url.split("/?", 1)[0]
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            assert page.goto(base + "/").status == 403
            assert page.goto(base + "/api/files").status == 403
            assert page.goto(url).status == 200
            faint = page.locator('rect[data-origin="faint"]')
            faint.wait_for(timeout=60_000)
            _wait_for_previews(page, 1)
            assert page.locator('rect[data-origin="detected"]').count() == 1
            assert faint.count() == 1 and faint.get_attribute("data-applied") == "false"
            assert "1 with faint candidates worth a look" in page.get_by_test_id("status").inner_text()
            page.screenshot(path=str(artifacts / "1-opened.png"))

            # Keyboard: the faint candidate turned on; mouse: a box drawn over the face the detector missed.
            turn_on_and_draw(page, street)
            _wait_for_previews(page, 3)
            page.screenshot(path=str(artifacts / "2-reviewed.png"))
            for _ in range(4):  # zoomed in on the small faces (the pane scrolls)
                page.keyboard.press("+")
            assert page.get_by_test_id("zoom").inner_text() != "100%"
            page.locator("#original-pane").evaluate("pane => pane.scrollTo(pane.scrollWidth, 0)")
            page.screenshot(path=str(artifacts / "3-zoomed.png"))
            page.keyboard.press("0")

            # Keyboard: accept the file (a), then Apply.
            page.locator("body").focus()
            page.keyboard.press("a")
            page.wait_for_selector("button.state-accepted")
            page.get_by_test_id("apply").click()
            playwright.expect(page.get_by_test_id("apply-result")).to_contain_text("applied 1 file", timeout=60_000)
            page.wait_for_selector("button.state-applied")
            page.screenshot(path=str(artifacts / "4-applied.png"))
        finally:
            browser.close()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and np.array_equal(_region(picture, *faint_at), before["faint"]):
        time.sleep(0.2)
    for name, at in (("faint", faint_at), ("missed", missed_at)):
        assert np.abs(_region(picture, *at) - before[name]).mean() > 20, name
    with AuditStore(db_url) as store:
        (run,) = store.list_runs()
        (row,) = [row for row in store.list_files(run.run_id) if row.outcome is not Outcome.PENDING]
    assert (run.command, row.path, row.outcome, row.faces_anonymized) == ("review", picture, Outcome.ANONYMIZED, 3)
    review = row.details["review"]
    assert review["reviewer"] == "Dana DPO"
    (drawn,) = review["added_by_hand"]
    x1, y1, x2, y2 = drawn["xyxy"]
    x, y, side = missed_at
    assert x1 <= x and y1 <= y and x2 >= x + side and y2 >= y + side and x2 - x1 < side + 20
    (turned_on,) = review["faint_turned_on"]
    assert turned_on["score"] < 0.9


def _street_video(path: Path, pixels: np.ndarray, frames: int = 12) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = pixels.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"crf": "10"}
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def _video_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [np.asarray(frame.to_ndarray(format="rgb24"), np.int16) for frame in container.decode(video=0)]


@pytest.mark.slow
def test_a_reviewer_removes_a_track_and_adds_a_missed_face_on_two_frames_of_a_video(
    tmp_path: Path, street: Any, chromium_executable: str, artifacts: Path, sqlite_url: str
) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    clip = folder / "street.mp4"
    _street_video(clip, street.pixels)
    source = _video_frames(clip)
    command = [sys.executable, "-m", "efface", "review", str(folder), "--reviewer", "Dana DPO", "--db", sqlite_url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"open (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
        assert match, line
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(
                executable_path=chromium_executable, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 950})
                page.goto(match.group(1))
                page.get_by_test_id("video-bar").wait_for(timeout=120_000)
                detected = page.locator('#boxes rect[data-origin="detected"]')
                detected.first.wait_for()
                # The small face at about (650, 250) has a track of its own: remove it on the timeline (keyboard).
                small = next(
                    rect.get_attribute("data-box-id")
                    for rect in detected.all()
                    if float(rect.get_attribute("x") or 0) > street.faint_at[0] - 20
                )
                bar = page.locator(f'#timeline rect[data-track-id="{small}"]')
                bar.focus()
                page.keyboard.press("Space")
                page.wait_for_selector(f'#timeline rect[data-track-id="{small}"][data-applied="false"]')
                # The missed face, boxed on frames 2 and 8 (keys . and , step through the frames).
                for frame in (2, 8):
                    page.locator("body").focus()
                    while page.get_by_test_id("frame-label").inner_text().split()[1] != str(frame):
                        page.keyboard.press(".")
                        time.sleep(0.05)
                    playwright.expect(page.get_by_test_id("frame-label")).to_have_text(f"frame {frame} of 12")
                    _draw_missed(page, street, margin=4 if frame == 2 else 10)  # outside the box carried to 8
                    page.wait_for_selector('#boxes rect[data-origin="manual"][data-keyframe="true"]')
                page.wait_for_selector("#timeline rect.manual")
                page.screenshot(path=str(artifacts / "5-video.png"))
                page.locator("body").focus()
                page.keyboard.press("a")
                page.wait_for_selector("button.state-accepted")
                page.get_by_test_id("apply").click()
                playwright.expect(page.get_by_test_id("apply-result")).to_contain_text(
                    "applied 1 file", timeout=120_000
                )
            finally:
                browser.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()
    written = _video_frames(clip)
    assert len(written) == len(source) == 12
    mx, my, mside = street.missed_at
    fx, fy, fside = street.faint_at
    for index in range(12):
        missed = np.abs(
            written[index][my : my + mside, mx : mx + mside] - source[index][my : my + mside, mx : mx + mside]
        )
        assert missed.mean() > 20, index  # the face added by hand: on every frame (carried before 2 and after 8)
        kept = np.abs(
            written[index][fy : fy + fside, fx : fx + fside] - source[index][fy : fy + fside, fx : fx + fside]
        )
        assert kept.mean() < 12, index  # the removed track's face is left
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs()
        (row,) = [row for row in store.list_files(run.run_id) if row.outcome is not Outcome.PENDING]
    review = row.details["review"]
    assert [track["track_id"] for track in review["tracks_removed_by_hand"]] == [small]
    (added,) = review["tracks_added_by_hand"]
    assert [frame for frame, _ in added["keyframes"]] == [2, 8]


def _draw_missed(page: Any, street: Any, *, margin: int) -> None:
    frame = page.locator("#boxes").bounding_box()
    scale = frame["width"] / street.size_wh[0]
    x, y, side = street.missed_at
    page.mouse.move(frame["x"] + (x - margin) * scale, frame["y"] + (y - margin) * scale)
    page.mouse.down()
    page.mouse.move(frame["x"] + (x + side + 4) * scale, frame["y"] + (y + side + 4) * scale, steps=8)
    page.mouse.up()
