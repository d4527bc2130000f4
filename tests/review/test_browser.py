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
