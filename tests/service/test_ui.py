"""``efface serve --ui``: the upload page in a real headless Chromium (Debian's, driven by Playwright) against a real
server process with the real detector. A picture is chosen, its faces and faint candidates shown, a faint one
turned on and a missed face drawn, the result downloaded: those faces are anonymized in the download, and the
server audits both requests (the second one as boxes given by the client) and writes no file."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.records import Outcome

from ..conftest import turn_on_and_draw
from .conftest import CLEAN_EXITS, jpeg, start_server, stop_server

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")


def _region(content: bytes, x: int, y: int, side: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"), np.int16)[y : y + side, x : x + side]


def test_the_api_anonymizes_the_boxes_a_person_gave(tmp_path: Path, street: Any) -> None:
    """Without the page: /v1/detect names the faint candidates, /v1/anonymize takes the boxes and detects nothing."""
    server = start_server(tmp_path, "--threshold", "0.9")
    try:
        upload = {"file": ("street.png", _png(street.pixels), "image/png")}
        found = httpx.post(f"{server.base_url}/v1/detect", files=upload, headers=server.auth, timeout=60).json()
        assert found["faces"] == 1 and len(found["faint"]) == 1 and found["faint"][0]["score"] < 0.9
        x, y, side = street.missed_at
        boxes = [found["faint"][0]["xyxy"], [x - 2, y - 2, x + side + 2, y + side + 2]]
        done = httpx.post(
            f"{server.base_url}/v1/anonymize",
            files=upload,
            data={"boxes": json.dumps(boxes)},
            headers=server.auth,
            timeout=60,
        )
        assert done.status_code == 200, done.text
        body = done.json()
        assert (body["faces"], body["faces_anonymized"]) == (2, 2)  # the given boxes only: the big face is left
        bad = httpx.post(
            f"{server.base_url}/v1/anonymize", files=upload, data={"boxes": "[[5, 5, 1, 1]]"}, headers=server.auth
        )
        assert bad.status_code == 422 and "x1 < x2" in bad.json()["error"]["message"]
    finally:
        assert stop_server(server) in CLEAN_EXITS, server.log.read_text()
    with AuditStore(server.db_url) as store:
        (run,) = store.list_runs()
        rows = store.list_files(run.run_id)
    detect, anonymize, refused = rows
    assert detect.uncertain == 1 and detect.uncertainty is not None and detect.uncertainty["faint_candidates"] == 1
    assert anonymize.details["boxes_given_by_client"] == 2 and anonymize.uncertain is None
    assert anonymize.details["options"]["boxes_given"] is True
    assert refused.outcome is Outcome.ERROR


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_the_upload_page_shows_the_boxes_takes_changes_and_gives_the_result(
    tmp_path: Path, street: Any, chromium_executable: str, artifacts: Path
) -> None:
    picture = tmp_path / "street.jpg"
    picture.write_bytes(jpeg(street.pixels, quality=95))
    server = start_server(tmp_path / "server", "--ui", "--threshold", "0.9")
    try:
        assert httpx.get(f"{server.base_url}/ui").headers["cache-control"] == "no-store"
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(
                executable_path=chromium_executable, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 900}, accept_downloads=True)
                page.goto(f"{server.base_url}/ui")
                page.get_by_test_id("key").fill(server.api_key)
                page.get_by_test_id("file").set_input_files(str(picture))
                faint = page.locator('rect[data-origin="faint"]')
                faint.wait_for(timeout=60_000)
                assert page.locator('rect[data-origin="detected"]').count() == 1
                playwright.expect(page.get_by_test_id("status")).to_contain_text("1 faces, 1 faint candidates")
                page.screenshot(path=str(artifacts / "ui-1-detected.png"))
                turn_on_and_draw(page, street)
                page.get_by_test_id("anonymize").click()
                link = page.get_by_test_id("download")
                playwright.expect(link).to_be_visible(timeout=60_000)
                page.screenshot(path=str(artifacts / "ui-2-anonymized.png"))
                with page.expect_download() as download:
                    link.click()
                downloaded = Path(download.value.path()).read_bytes()
                assert download.value.suggested_filename == "street-anonymized.jpg"
            finally:
                browser.close()
    finally:
        assert stop_server(server) in CLEAN_EXITS, server.log.read_text()
    source = picture.read_bytes()
    for at in (street.faint_at, street.missed_at, (200, 100, 90)):
        assert np.abs(_region(downloaded, *at) - _region(source, *at)).mean() > 20, at
    assert list(server.workdir.iterdir()) == [] and list(server.tmpdir.iterdir()) == []
    with AuditStore(server.db_url) as store:
        (run,) = store.list_runs()
        detect, anonymize = store.list_files(run.run_id)
    assert (detect.outcome, detect.uncertain) == (Outcome.DRY_RUN, 1)
    assert (anonymize.outcome, anonymize.faces_anonymized, anonymize.details["boxes_given_by_client"]) == (
        Outcome.ANONYMIZED,
        3,
        3,
    )
