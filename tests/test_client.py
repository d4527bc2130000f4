"""``efface.client`` against a fake transport: requests, answers, retries and typed errors, sync and async."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from efface.client import (
    AnonymizedImage,
    AsyncClient,
    AuthenticationError,
    Client,
    DetectedFaces,
    RateLimitError,
    RequestRejectedError,
    ServiceBusyError,
    ServiceError,
    ServiceUnreachableError,
)
from efface.errors import EffaceError, InputNotFoundError
from efface.records import BBox, Face, Method
from efface.service.uploads import parse_multipart

KEY = "eff_0123456789abcdef_" + "s" * 43
IMAGE = b"\xff\xd8\xff fake jpeg"
BOX = {"xyxy": [10.0, 20.0, 50.0, 70.0], "score": 0.9}


def _anonymized(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "request_id": "r1",
            "faces": 1,
            "faces_anonymized": 1,
            "boxes": [BOX],
            "width": 640,
            "height": 480,
            "image": {"media_type": "image/jpeg", "data_base64": base64.b64encode(b"anonymized").decode()},
        },
    )


def _error(status: int, error_type: str, *, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    body = {"error": {"type": error_type, "message": "nope", "request_id": "r9"}}
    return httpx.Response(status, json=body, headers=headers)


class Recorder:
    """A transport handler answering from a list, keeping the requests."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response] | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        request.read()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer


def _client(handler: Recorder, sleeps: list[float], **options: object) -> Client:
    return Client(
        "http://efface.test", api_key=KEY, transport=httpx.MockTransport(handler), sleep=sleeps.append, **options
    )


def _fields(request: httpx.Request) -> dict[str, str]:
    upload = parse_multipart(request.content, request.headers["content-type"])
    return {"filename": upload.filename or "", "content": upload.content.decode("latin-1"), **upload.fields}


def test_anonymize_sends_the_image_options_and_key_and_returns_a_typed_result(tmp_path: Path) -> None:
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(IMAGE)
    handler, sleeps = Recorder(_anonymized), []
    with _client(handler, sleeps) as client:
        result = client.anonymize(photo, method=Method.BLUR, strength=1.5, threshold=0.4, return_boxes=True)

    assert result == AnonymizedImage(
        image=b"anonymized",
        media_type="image/jpeg",
        faces=1,
        faces_anonymized=1,
        boxes=(Face(box=BBox(10.0, 20.0, 50.0, 70.0), score=0.9),),
        resolution_wh=(640, 480),
        request_id="r1",
    )
    (request,) = handler.requests
    assert request.url.path == "/v1/anonymize" and request.headers["authorization"] == f"Bearer {KEY}"
    assert _fields(request) == {
        "filename": "holiday.jpg",
        "content": IMAGE.decode("latin-1"),
        "method": "blur",
        "strength": "1.5",
        "threshold": "0.4",
        "return_boxes": "true",
    }
    assert sleeps == []


def test_bytes_are_sent_under_a_neutral_name_and_options_left_out_are_not_sent() -> None:
    handler = Recorder(_anonymized)
    _client(handler, []).anonymize(IMAGE, return_boxes=False)
    assert _fields(handler.requests[0]) == {
        "filename": "image",
        "content": IMAGE.decode("latin-1"),
        "return_boxes": "false",
    }


def test_detect_returns_the_faces() -> None:
    answer = {"request_id": "r2", "faces": 1, "boxes": [BOX], "width": 64, "height": 48}
    handler = Recorder(httpx.Response(200, json=answer))
    result = _client(handler, []).detect(IMAGE, preset="fast")
    assert result == DetectedFaces(
        faces=1, boxes=(Face(box=BBox(10, 20, 50, 70), score=0.9),), resolution_wh=(64, 48), request_id="r2"
    )
    assert handler.requests[0].url.path == "/v1/detect" and _fields(handler.requests[0])["preset"] == "fast"


def test_a_503_is_retried_after_its_retry_after() -> None:
    handler, sleeps = Recorder(_error(503, "ServerBusyError", retry_after="2"), _anonymized), []
    result = _client(handler, sleeps).anonymize(IMAGE)
    assert result.faces == 1 and len(handler.requests) == 2 and sleeps == [2.0]
    assert _fields(handler.requests[0]) == _fields(handler.requests[1])  # the same upload again


def test_a_503_without_retry_after_backs_off_exponentially_then_raises() -> None:
    handler, sleeps = Recorder(_error(503, "ProcessingTimeoutError")), []
    with pytest.raises(ServiceBusyError) as caught:
        _client(handler, sleeps, max_retries=3, backoff_s=0.5).anonymize(IMAGE)
    assert len(handler.requests) == 4 and len(sleeps) == 3
    assert all(0 <= wait <= 0.5 * 2**attempt for attempt, wait in enumerate(sleeps))
    assert caught.value.status_code == 503 and caught.value.error_type == "ProcessingTimeoutError"


def test_a_retry_after_too_long_to_wait_is_raised_at_once() -> None:
    handler, sleeps = Recorder(_error(503, "ServerBusyError", retry_after="3600")), []
    with pytest.raises(ServiceBusyError) as caught:
        _client(handler, sleeps).anonymize(IMAGE)
    assert caught.value.retry_after_s == 3600 and sleeps == []


def test_a_refused_connection_is_retried_then_raised() -> None:
    handler, sleeps = Recorder(httpx.ConnectError("refused")), []
    with pytest.raises(ServiceUnreachableError, match="cannot connect"):
        _client(handler, sleeps, max_retries=2).anonymize(IMAGE)
    assert len(handler.requests) == 3 and len(sleeps) == 2


def test_a_broken_answer_is_not_retried() -> None:
    handler, sleeps = Recorder(httpx.ReadError("reset")), []
    with pytest.raises(ServiceUnreachableError, match="no complete answer"):
        _client(handler, sleeps).anonymize(IMAGE)
    assert len(handler.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error_class", "error_type"),
    [
        (_error(401, "InvalidApiKeyError"), AuthenticationError, "InvalidApiKeyError"),
        (_error(429, "RateLimitExceededError", retry_after="30"), RateLimitError, "RateLimitExceededError"),
        (_error(422, "CorruptImageError"), RequestRejectedError, "CorruptImageError"),
        (_error(413, "ImageTooLargeError"), RequestRejectedError, "ImageTooLargeError"),
        (_error(500, "InternalError"), ServiceError, "InternalError"),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServiceError, None),
        (httpx.Response(200, text="not json"), ServiceError, None),
        (httpx.Response(200, json={"faces": 1}), ServiceError, None),
    ],
)
def test_error_answers_raise_typed_errors_without_retrying(
    answer: httpx.Response, error_class: type[ServiceError], error_type: str | None
) -> None:
    handler, sleeps = Recorder(answer), []
    with pytest.raises(error_class) as caught:
        _client(handler, sleeps).anonymize(IMAGE)
    assert type(caught.value) is error_class and isinstance(caught.value, EffaceError)
    assert caught.value.error_type == error_type and len(handler.requests) == 1
    if isinstance(caught.value, RateLimitError):
        assert caught.value.retry_after_s == 30


def test_a_missing_file_is_an_input_error_and_nothing_is_sent(tmp_path: Path) -> None:
    handler = Recorder(_anonymized)
    with pytest.raises(InputNotFoundError):
        _client(handler, []).anonymize(tmp_path / "missing.jpg")
    assert handler.requests == []


def test_retry_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        Client("http://x", api_key=KEY, max_retries=-1)


def test_async_client_does_the_same() -> None:
    handler, sleeps = Recorder(_error(503, "ServerBusyError", retry_after="1"), _anonymized), []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> AnonymizedImage:
        transport = httpx.MockTransport(handler)
        async with AsyncClient("http://efface.test", api_key=KEY, transport=transport, sleep=fake_sleep) as client:
            result = await client.anonymize(IMAGE, method="pixelate", strength=8)
            handler.answers = [_error(401, "InvalidApiKeyError")]
            with pytest.raises(AuthenticationError):
                await client.detect(IMAGE)
            return result

    result = asyncio.run(run())
    assert result.image == b"anonymized" and sleeps == [1.0]
    assert _fields(handler.requests[1])["method"] == "pixelate" and _fields(handler.requests[1])["strength"] == "8"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed on leaving: nothing listens there


def test_a_real_closed_port_raises_the_public_unreachable_error() -> None:
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{_closed_port()}"
    client = Client(url, api_key=KEY, max_retries=1, backoff_s=0.01, sleep=sleeps.append)
    with client, pytest.raises(ServiceUnreachableError) as caught:
        client.detect(IMAGE)
    assert type(caught.value) is ServiceUnreachableError  # no private class escapes
    assert not caught.value.has_sent_request and len(sleeps) == 1  # nothing was sent: retried once
    message = str(caught.value)
    assert message.startswith(f"cannot connect to {url}") and "\n" not in message


def test_a_real_closed_port_raises_the_public_unreachable_error_async() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"

    async def detect() -> None:
        async with AsyncClient(url, api_key=KEY, max_retries=0) as client:
            await client.detect(IMAGE)

    with pytest.raises(ServiceUnreachableError) as caught:
        asyncio.run(detect())
    assert type(caught.value) is ServiceUnreachableError
    assert "\n" not in str(caught.value)
