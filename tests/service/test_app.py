"""The API in process (FastAPI ``TestClient``, the real model, a real SQLite audit database): answers, errors,
auth, limits, back-pressure, audit rows and metrics."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageCms

from efface.audit import AuditStore
from efface.audit.keys import ApiKeyStore
from efface.config import Settings
from efface.detection.models import DetectionModels
from efface.detection.presets import preset_spec
from efface.errors import AuditError
from efface.records import Face, Outcome, Preset, RunStatus, WriteMode
from efface.service import ServiceLimits

from ..conftest import Carriers, icc_with_private_tag
from .conftest import FACE, TestClient, create_key, jpeg, static_load


def _post(client: TestClient, path: str, content: bytes, auth: dict[str, str], name: str = "photo.jpg", **fields):
    return client.post(path, files={"file": (name, content, "image/jpeg")}, data=fields, headers=auth)


def _rows(db_url: str) -> tuple[object, list]:
    with AuditStore(db_url) as store:
        (run,) = store.list_runs(limit=1)
        return run, store.list_files(run.run_id)


def test_anonymize_returns_the_anonymized_image_faces_and_boxes(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut: np.ndarray, astronaut_jpeg: bytes
) -> None:
    client = make_client()
    response = _post(client, "/v1/anonymize", astronaut_jpeg, auth)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["faces"] == body["faces_anonymized"] == 1
    assert (body["width"], body["height"]) == (512, 512)
    (box,) = body["boxes"]
    x1, y1, x2, y2 = box["xyxy"]
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200 and box["score"] > 0.8
    assert body["image"]["media_type"] == "image/jpeg"
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]["data_base64"]))))
    assert out.shape == astronaut.shape
    face = (slice(90, 150), slice(200, 250))
    assert np.abs(out[face].astype(int) - astronaut[face]).mean() > 10  # the face is gone
    corner = (slice(400, 500), slice(0, 100))
    assert np.abs(out[corner].astype(int) - astronaut[corner]).mean() < 5  # the rest is kept


def test_options_go_through_the_same_settings_and_floor(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    client = make_client()
    blurred = _post(client, "/v1/anonymize", astronaut_jpeg, auth, method="blur", strength="0.5", return_boxes="false")
    assert blurred.status_code == 200 and blurred.json()["boxes"] is None and blurred.json()["faces"] == 1

    weak = _post(client, "/v1/anonymize", astronaut_jpeg, auth, method="blur", strength="0.05")
    assert weak.status_code == 422
    assert weak.json()["error"]["type"] == "WeakTransformError"
    assert "below the floor of 0.1" in weak.json()["error"]["message"]

    coarse = _post(client, "/v1/anonymize", astronaut_jpeg, auth, method="pixelate", strength="12")
    assert coarse.status_code == 422 and "finer than the floor" in coarse.json()["error"]["message"]

    _, rows = _rows(client.app.state.service.settings.db_url)
    assert rows[0].details["options"] == {"method": "blur", "blur_kernel_fraction": 0.5, "return_boxes": False}
    assert rows[1].error_class == "WeakTransformError"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"threshold": "1.5"}, "'threshold'"),
        ({"threshold": "high"}, "'threshold'"),
        ({"method": "smudge"}, "'method'"),
        ({"preset": "ultra"}, "'preset'"),
        ({"strength": "-1", "method": "blur"}, "'strength'"),
        ({"strength": "nan", "method": "blur"}, "'strength'"),
        ({"strength": "2", "method": "fill"}, "does not apply"),
        ({"return_boxes": "maybe"}, "'return_boxes'"),
        ({"mehtod": "blur"}, "unknown option"),
    ],
)
def test_bad_options_are_a_422_naming_the_option(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut_jpeg: bytes, fields: dict, message: str
) -> None:
    response = _post(make_client(), "/v1/anonymize", astronaut_jpeg, auth, **fields)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "InvalidOptionError"
    assert message in response.json()["error"]["message"]


def test_detect_returns_boxes_only(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    client = make_client()
    response = _post(client, "/v1/detect", astronaut_jpeg, auth, threshold="0.5", preset="fast")
    assert response.status_code == 200
    body = response.json()
    assert body["faces"] == len(body["boxes"]) == 1 and "image" not in body
    assert _post(client, "/v1/detect", astronaut_jpeg, auth, method="blur").status_code == 422


def test_malformed_uploads_get_a_json_error_never_a_500(
    make_client: Callable[..., TestClient], auth: dict[str, str], malformed_uploads: dict
) -> None:
    client = make_client()
    for label, (name, content, status, error_type) in malformed_uploads.items():
        for path in ("/v1/anonymize", "/v1/detect"):
            response = _post(client, path, content, auth, name=name)
            assert (response.status_code, response.json()["error"]["type"]) == (status, error_type), label
    assert client.post("/v1/anonymize", content=b"not multipart", headers=auth).status_code == 400
    no_file = client.post("/v1/anonymize", files={"image": ("a.jpg", b"x")}, headers=auth)
    assert no_file.status_code == 400 and "'file'" in no_file.json()["error"]["message"]


def test_uploads_over_the_limit_are_413(make_client: Callable[..., TestClient], auth: dict[str, str]) -> None:
    client = make_client(limits=ServiceLimits(workers=1, max_upload_bytes=100_000))
    response = _post(client, "/v1/anonymize", b"\xff" * 100_001, auth)
    assert response.status_code == 413 and response.json()["error"]["type"] == "UploadTooLargeError"
    response = _post(client, "/v1/anonymize", b"\xff" * 1_000_000, auth)
    assert response.status_code == 413


def test_images_over_the_pixel_limit_are_413(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    client = make_client(limits=ServiceLimits(workers=1, max_image_pixels=512 * 511))
    response = _post(client, "/v1/anonymize", astronaut_jpeg, auth)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "ImageTooLargeError"
    assert "decompression bomb" in response.json()["error"]["message"]


def test_requests_without_a_valid_key_are_401(
    make_client: Callable[..., TestClient], db_url: str, api_key: str, astronaut_jpeg: bytes
) -> None:
    client = make_client()
    wrong = api_key[:-2] + ("xx" if not api_key.endswith("xx") else "yy")
    for headers in (
        {},
        {"Authorization": f"Bearer {wrong}"},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": f"Basic {api_key}"},
        {"X-API-Key": api_key},
    ):
        response = _post(client, "/v1/anonymize", astronaut_jpeg, headers)
        assert response.status_code == 401 and response.json()["error"]["type"] == "InvalidApiKeyError", headers
    with AuditStore(db_url) as store:
        ApiKeyStore(store).revoke(api_key.split("_")[1])
    response = _post(client, "/v1/anonymize", astronaut_jpeg, {"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_each_key_has_its_rate_limit(
    make_client: Callable[..., TestClient], db_url: str, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    client = make_client(limits=ServiceLimits(workers=1, rate_limit_per_min=3), load=static_load())
    limited = {"Authorization": f"Bearer {create_key(db_url, 'limited', rate_limit_per_min=2)}"}
    assert [_post(client, "/v1/detect", astronaut_jpeg, limited).status_code for _ in range(3)] == [200, 200, 429]
    refused = _post(client, "/v1/detect", astronaut_jpeg, limited)
    assert refused.json()["error"]["type"] == "RateLimitExceededError"
    assert int(refused.headers["retry-after"]) == 30
    assert [_post(client, "/v1/detect", astronaut_jpeg, auth).status_code for _ in range(4)] == [200, 200, 200, 429]


class BlockingDetector:
    """Holds every detection until released, to fill the workers."""

    name = "blocking"
    weights_sha256 = "0" * 64

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def detect(self, image: np.ndarray) -> tuple[Face, ...]:
        self.started.release()
        self.release.wait(timeout=30)
        return (FACE,)


def test_a_saturated_server_answers_503_with_retry_after_at_once(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    detector = BlockingDetector()
    client = make_client(
        limits=ServiceLimits(workers=1, queue_size=1, retry_after_s=2), load=static_load(detector=detector)
    )
    answers: list[int] = []
    held = [
        threading.Thread(target=lambda: answers.append(_post(client, "/v1/detect", astronaut_jpeg, auth).status_code))
        for _ in range(2)
    ]
    for thread in held:
        thread.start()
    assert detector.started.acquire(timeout=10)  # one processing
    deadline = time.monotonic() + 10
    while client.app.state.service.gate.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # and one waiting

    t0 = time.perf_counter()
    refused = _post(client, "/v1/detect", astronaut_jpeg, auth)
    assert time.perf_counter() - t0 < 2.0
    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["type"] == "ServerBusyError"

    detector.release.set()
    for thread in held:
        thread.join(timeout=30)
    assert answers == [200, 200]
    assert client.app.state.service.gate.in_flight == 0
    assert _post(client, "/v1/detect", astronaut_jpeg, auth).status_code == 200


def test_a_request_that_waits_too_long_is_503_and_keeps_its_place_until_its_thread_ends(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    detector = BlockingDetector()
    client = make_client(
        limits=ServiceLimits(workers=1, queue_size=0, request_timeout_s=0.3), load=static_load(detector=detector)
    )
    response = _post(client, "/v1/detect", astronaut_jpeg, auth)
    assert response.status_code == 503 and response.json()["error"]["type"] == "ProcessingTimeoutError"
    assert "retry-after" in response.headers
    gate = client.app.state.service.gate
    assert gate.in_flight == 1  # the thread still holds the image
    assert _post(client, "/v1/detect", astronaut_jpeg, auth).status_code == 503  # so nothing more is admitted
    detector.release.set()
    deadline = time.monotonic() + 10
    while gate.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.in_flight == 0


def test_every_request_is_one_audit_row_without_the_image_or_the_key(
    make_client: Callable[..., TestClient],
    db_url: str,
    api_key: str,
    auth: dict[str, str],
    astronaut_jpeg: bytes,
    malformed_uploads: dict,
) -> None:
    client = make_client()
    ok = _post(client, "/v1/anonymize", astronaut_jpeg, auth, method="blur")
    detected = _post(client, "/v1/detect", astronaut_jpeg, auth)
    bad = _post(client, "/v1/anonymize", malformed_uploads["truncated jpeg"][1], auth, name="cut.jpg")
    anonymous = _post(client, "/v1/anonymize", astronaut_jpeg, {})
    client.__exit__(None, None, None)  # stop: the run is finished

    run, rows = _rows(db_url)
    assert run.command == "serve" and run.status is RunStatus.COMPLETED  # a clean stop
    assert (run.files_total, run.files_failed, run.faces_detected, run.faces_anonymized) == (4, 2, 2, 1)
    assert run.settings["service"]["workers"] == 2
    by_request = {row.request_id: row for row in rows}
    assert list(by_request) == [
        r.json().get("request_id") or r.headers["x-request-id"] for r in (ok, detected, bad, anonymous)
    ]

    row = by_request[ok.json()["request_id"]]
    assert row.path is None and "request_id" not in row.details
    assert row.outcome is Outcome.ANONYMIZED and row.mode is WriteMode.RESPONSE
    assert row.faces_detected == row.faces_anonymized == 1 and (row.width, row.height) == (512, 512)
    image = base64.b64decode(ok.json()["image"]["data_base64"])
    assert row.output_sha256 == hashlib.sha256(image).hexdigest()
    assert row.details["key_id"] == api_key.split("_")[1]
    assert row.details["client"] == "testclient" and row.details["filename"] == "photo.jpg"
    assert row.details["upload_bytes"] == len(astronaut_jpeg) and row.details["endpoint"] == "/v1/anonymize"
    assert row.details["options"] == {"method": "blur", "return_boxes": True}
    assert 0 < row.details["processing_s"] <= row.details["latency_s"] == pytest.approx(row.duration_s, abs=1e-5)

    assert by_request[detected.json()["request_id"]].outcome is Outcome.DRY_RUN
    failed = by_request[bad.json()["error"]["request_id"]]
    assert failed.outcome is Outcome.ERROR and failed.error_class == "CorruptImageError"
    unauthenticated = by_request[anonymous.json()["error"]["request_id"]]
    assert unauthenticated.error_class == "InvalidApiKeyError" and unauthenticated.details["key_id"] is None

    secret = api_key.rsplit("_", 1)[1]
    for stored in rows:
        text = json.dumps([str(getattr(stored, name)) for name in stored.__dataclass_fields__])
        assert secret not in text and len(text) < 4000  # no key, no pixels


def test_health_readiness_and_metrics(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    client = make_client()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model_loaded": True, "database_reachable": True}
    _post(client, "/v1/anonymize", astronaut_jpeg, auth)
    _post(client, "/v1/anonymize", b"", auth)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'efface_http_requests_total{endpoint="/v1/anonymize",status="200"} 1.0' in text
    assert 'efface_http_requests_total{endpoint="/v1/anonymize",status="422"} 1.0' in text
    assert 'efface_rejected_requests_total{type="CorruptImageError"} 1.0' in text
    assert "efface_faces_detected_total 1.0" in text
    assert "efface_requests_in_flight 0.0" in text and "process_resident_memory_bytes" in text


def test_readiness_fails_when_the_database_does_not_answer(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()

    def unreachable(run_id: str) -> None:
        raise AuditError("cannot read run: connection refused")

    monkeypatch.setattr(client.app.state.service.store, "get_run", unreachable)
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["database_reachable"] is False


def test_unknown_routes_and_methods_get_the_same_json_errors(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    assert client.get("/v2/nothing").json()["error"]["type"] == "NotFound"
    response = client.get("/v1/anonymize")
    assert response.status_code == 405 and response.json()["error"]["type"] == "MethodNotAllowed"


def test_the_models_are_loaded_once_and_each_request_gets_its_own_policy(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    loads: list[int] = []
    inner = static_load(FACE)

    def load(settings: Settings, inference_threads: int) -> DetectionModels:
        loads.append(inference_threads)
        return inner(settings, inference_threads)

    client = make_client(load=load)
    models = client.app.state.service.models
    for _ in range(3):
        _post(client, "/v1/anonymize", astronaut_jpeg, auth)
        _post(client, "/v1/anonymize", astronaut_jpeg, auth, method="pixelate", strength="8", preset="fast")
    assert len(loads) == 1
    fast, balanced = preset_spec(Preset.FAST), preset_spec(Preset.BALANCED)
    assert models.specs == [balanced, fast] * 3


def test_an_image_without_faces_or_metadata_comes_back_byte_for_byte(
    make_client: Callable[..., TestClient], auth: dict[str, str]
) -> None:
    blank = jpeg(np.full((64, 96, 3), 128, np.uint8))
    response = _post(make_client(), "/v1/anonymize", blank, auth)
    assert response.json()["faces"] == 0
    assert base64.b64decode(response.json()["image"]["data_base64"]) == blank


NINE_OPTION_SETS: list[dict[str, str]] = [
    {"method": "blur"},
    {"method": "blur", "strength": "2.0"},
    {"method": "pixelate"},
    {"method": "pixelate", "strength": "8"},
    {"threshold": "0.5"},
    {"preset": "fast"},
    {"preset": "thorough"},
    {"method": "blur", "threshold": "0.4"},
    {"method": "pixelate", "preset": "fast"},
]


@pytest.mark.slow
def test_the_service_holds_one_model_copy_whatever_options_requests_ask_for(
    make_client: Callable[..., TestClient],
    auth: dict[str, str],
    astronaut_jpeg: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnxruntime

    sessions: list[object] = []
    real_session = onnxruntime.InferenceSession

    def counting_session(*args: object, **kwargs: object) -> object:
        session = real_session(*args, **kwargs)  # type: ignore[arg-type]
        sessions.append(session)
        return session

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting_session)
    client = make_client()  # the real models
    assert len(sessions) == 1
    answers = [_post(client, "/v1/anonymize", astronaut_jpeg, auth, **options) for options in NINE_OPTION_SETS]
    assert [answer.status_code for answer in answers] == [200] * 9
    assert all(answer.json()["faces"] >= 1 for answer in answers)
    assert len(sessions) == 1
    rows = client.app.state.service.store.list_files(client.app.state.service.run.run_id)
    assert [row.details["options"] for row in rows][-1] == {
        "method": "pixelate",
        "preset": "fast",
        "return_boxes": True,
    }


def test_face_less_uploads_that_carry_more_than_their_image_come_back_without_it(
    make_client: Callable[..., TestClient], auth: dict[str, str], db_url: str, carriers: Carriers
) -> None:
    client = make_client(load=static_load())  # no face anywhere: each upload would go back as it came
    answers = {}
    for name, content in carriers.files.items():
        response = _post(client, "/v1/anonymize", content, auth, name=name)
        assert response.status_code == 200, response.text
        assert response.json()["faces"] == 0
        answers[response.json()["request_id"]] = name
        image = base64.b64decode(response.json()["image"]["data_base64"])
        assert image != content, f"{name} came back as it was"
        assert carriers.secrets[name] not in image, name
        with Image.open(io.BytesIO(image)) as decoded:
            decoded.load()
            assert decoded.mode == "RGB" and {"exif", "xmp"}.isdisjoint(decoded.info), name
            if name == "cmyk-with-profile.jpg":
                assert "icc_profile" not in decoded.info  # RGB pixels, converted with it: the CMYK profile is gone
    client.__exit__(None, None, None)

    _run, rows = _rows(db_url)
    details = {answers[row.request_id]: row.details for row in rows}
    assert "CMYK" in details["cmyk-with-profile.jpg"]["icc_profile"]
    assert "'prVt'" in details["icc-holds-original.jpg"]["icc_profile"]
    assert "after" in details["appended-after-eoi.jpg"]["extra_content"]
    assert "prVt" in details["private-chunk.png"]["extra_content"]


def test_an_anonymized_image_does_not_hand_on_the_original_held_in_its_icc_profile(
    make_client: Callable[..., TestClient], auth: dict[str, str], astronaut: np.ndarray, carriers: Carriers
) -> None:
    upload = jpeg(astronaut, icc_profile=icc_with_private_tag(carriers.original))
    response = _post(make_client(load=static_load(FACE)), "/v1/anonymize", upload, auth)

    assert response.status_code == 200, response.text
    assert response.json()["faces_anonymized"] == 1
    image = base64.b64decode(response.json()["image"]["data_base64"])
    assert carriers.original not in image
    with Image.open(io.BytesIO(image)) as decoded:
        profile = decoded.info["icc_profile"]  # the colour tags stay
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert len(profile) == len(srgb) and profile[36:] == srgb[36:]  # all but the size and creation time
