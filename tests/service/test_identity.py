"""Selective anonymization through a real ``efface serve`` process: reference photos uploaded with the request
(held in memory only), the answer and the audit row (counts and the references' sha256, never an embedding).
LFW people from the research-only data beside the repository, read in place."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore
from efface.client import Client, RequestRejectedError

from .conftest import Served

pytestmark = pytest.mark.slow

PEOPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces-identity" / "people"
SUBJECT, OTHER = "Bertie_Ahern", "Chanda_Rubin"
LEFT = (slice(100, 200), slice(100, 170))
RIGHT = (slice(100, 200), slice(390, 460))


@pytest.fixture(scope="module")
def photos() -> tuple[list[Path], list[Path]]:
    if not (PEOPLE / SUBJECT).is_dir() or not (PEOPLE / OTHER).is_dir():
        pytest.skip(f"evaluation data not present: {PEOPLE}")
    return sorted((PEOPLE / SUBJECT).glob("*.jpg")), sorted((PEOPLE / OTHER).glob("*.jpg"))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _both(subject: Path, other: Path) -> np.ndarray:
    canvas = np.full((300, 560, 3), 90, np.uint8)
    canvas[25:275, 10:260] = np.asarray(Image.open(subject).convert("RGB"))
    canvas[25:275, 300:550] = np.asarray(Image.open(other).convert("RGB"))
    return canvas


def _change(before: np.ndarray, after: bytes, region: tuple[slice, slice]) -> float:
    decoded = np.asarray(Image.open(io.BytesIO(after)).convert("RGB")).astype(int)
    return float(np.abs(before[region].astype(int) - decoded[region]).mean())


def test_reference_photos_uploaded_with_the_request_keep_the_subject_and_are_audited_as_hashes(
    served: Served, photos: tuple[list[Path], list[Path]]
) -> None:
    subject, other = photos
    source = _both(subject[1], other[0])
    reference = subject[2].read_bytes()
    with Client(served.base_url, api_key=served.api_key) as client:
        kept = client.anonymize(_png(source), filename="both.png", keep_person=[reference])
        erased = client.anonymize(_png(source), filename="both.png", only_person=[subject[2]])
        everyone = client.anonymize(_png(source), filename="both.png")
        with pytest.raises(RequestRejectedError) as both:
            client.anonymize(_png(source), keep_person=[reference], only_person=[reference])
        with pytest.raises(RequestRejectedError) as faceless:
            client.anonymize(_png(source), keep_person=[_png(np.full((200, 200, 3), 128, np.uint8))])
    assert kept.faces_kept == 1 and kept.faces_anonymized == kept.faces - 1
    assert _change(source, kept.image, LEFT) < 5.0 and _change(source, kept.image, RIGHT) > 20.0
    assert erased.faces_kept is not None and erased.faces_kept >= 1
    assert _change(source, erased.image, LEFT) > 20.0 and _change(source, erased.image, RIGHT) < 5.0
    assert everyone.faces_kept is None and everyone.faces_anonymized == everyone.faces
    assert both.value.status_code == 422 and "not both" in str(both.value)
    assert faceless.value.status_code == 422 and "no face found in this reference photo" in str(faceless.value)
    with httpx.Client(base_url=served.base_url, headers=served.auth) as http:
        response = http.post(
            "/v1/detect", files=[("file", ("a.png", _png(source))), ("keep_person", ("r.jpg", reference))]
        )
    assert response.status_code == 422 and "for /v1/anonymize" in response.json()["error"]["message"]

    with AuditStore(served.db_url) as store:
        rows = {row.request_id: row for run in store.list_runs() for row in store.list_files(run.run_id)}
    row = rows[kept.request_id]
    counts = row.details["identity"]
    assert (
        counts["kept"] == 1
        and counts["anonymized"] >= 1
        and counts["anonymized"] + counts["unrecognized"] == kept.faces - 1
    )
    settings = row.details["identity_settings"]
    expected = hashlib.sha256(json.dumps([[hashlib.sha256(reference).hexdigest()]], separators=(",", ":")).encode())
    assert settings["mode"] == "keep" and settings["references_sha256"] == expected.hexdigest()
    assert row.details["options"]["identity"] == "keep" and len(json.dumps(row.details)) < 4000
    assert rows[erased.request_id].details["identity_settings"]["mode"] == "only"
    # Nothing of the references was written where the server may not write (the no-file test checks the rest).
    assert not any(served.workdir.iterdir()) and not any(served.tmpdir.iterdir())
