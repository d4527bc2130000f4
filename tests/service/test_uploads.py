"""Uploads are read into memory with a hard cap and a deadline, and parsed from there."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message

from efface.service.errors import MalformedRequestError, UploadTimeoutError, UploadTooLargeError
from efface.service.limits import MULTIPART_OVERHEAD_BYTES
from efface.service.uploads import parse_multipart, read_body


def _multipart(files: dict | None = None, data: dict | None = None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://test/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_parse_multipart_keeps_the_file_and_the_fields() -> None:
    body, content_type = _multipart(
        files={"file": ("dir/photo.JPG", b"\xff\xd8 image bytes", "image/jpeg")}, data={"method": "blur"}
    )
    upload = parse_multipart(body, content_type)
    assert upload.content == b"\xff\xd8 image bytes"
    assert upload.filename == "dir/photo.JPG"
    assert upload.fields == {"method": "blur"}


def test_parse_multipart_keeps_a_large_binary_file_intact() -> None:
    content = bytes(range(256)) * 40_000  # every byte value, 10 MB, boundary-like runs included
    body, content_type = _multipart(files={"file": ("x.bin", content)})
    assert parse_multipart(body, content_type).content == content


@pytest.mark.parametrize(
    ("mangle", "content_type", "message"),
    [
        (lambda body: body, "application/json", "expected a multipart/form-data upload"),
        (lambda body: body, None, "got Content-Type none"),
        (lambda body: body, "multipart/form-data", "no boundary"),
        (lambda body: body[: len(body) // 2], "", "truncated"),
        (lambda body: b"", "", "truncated"),
        (lambda body: b"garbage", "", "malformed|truncated"),
    ],
)
def test_parse_multipart_refuses_malformed_bodies(mangle, content_type: str | None, message: str) -> None:
    body, real_type = _multipart(files={"file": ("a.jpg", b"x" * 100)})
    with pytest.raises(MalformedRequestError, match=message):
        parse_multipart(mangle(body), real_type if content_type == "" else content_type)


@pytest.mark.parametrize(
    ("files", "data", "message"),
    [
        ({"method": (None, b"blur")}, None, "no 'file' part"),
        ({"image": ("a.jpg", b"x")}, None, "no 'file' part"),
        ({"file": ("a.jpg", b"x")}, {"method": "b" * 2000}, "over 1024 bytes"),
        ({"file": ("a.jpg", b"x")}, {f"f{i}": "1" for i in range(20)}, "more than 16"),
    ],
)
def test_parse_multipart_refuses_missing_or_oversized_parts(files, data, message: str) -> None:
    body, content_type = _multipart(files=files, data=data)
    with pytest.raises(MalformedRequestError, match=message):
        parse_multipart(body, content_type)


def test_parse_multipart_refuses_a_part_given_twice() -> None:
    body, content_type = _multipart(files=[("file", ("a.jpg", b"1")), ("file", ("b.jpg", b"2"))])
    with pytest.raises(MalformedRequestError, match="twice"):
        parse_multipart(body, content_type)


def test_parse_multipart_keeps_each_reference_photo_part_apart_in_memory() -> None:
    body, content_type = _multipart(
        files=[
            ("file", ("a.jpg", b"image")),
            ("keep_person", ("alice.jpg", b"A" * 5000)),
            ("keep_person", ("", b"bob")),
            ("method", (None, b"blur")),
        ]
    )
    upload = parse_multipart(body, content_type)
    assert upload.content == b"image" and upload.fields == {"method": "blur"}
    assert upload.references == {"keep_person": [("alice.jpg", b"A" * 5000), ("keep_person-2", b"bob")]}
    assert "AAAA" not in repr(upload)


def _request(chunks: Iterable[bytes], *, headers: dict[str, str], delay_s: float = 0.0) -> tuple[Request, list[int]]:
    """A request whose body arrives in ``chunks``; the list counts the receive() calls."""
    pending = list(chunks)
    calls: list[int] = []

    async def receive() -> Message:
        calls.append(1)
        if delay_s:
            await asyncio.sleep(delay_s)
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope, receive), calls


def _read(request: Request, *, max_image_bytes: int = 1000, timeout_s: float = 5.0) -> bytes:
    return asyncio.run(read_body(request, max_image_bytes=max_image_bytes, timeout_s=timeout_s))


def test_read_body_joins_the_chunks() -> None:
    request, _ = _request([b"ab", b"cd", b"ef"], headers={})
    assert _read(request) == b"abcdef"


def test_read_body_refuses_a_declared_oversize_without_reading_it() -> None:
    size = 1000 + MULTIPART_OVERHEAD_BYTES + 1
    request, calls = _request([b"x" * size], headers={"content-length": str(size)})
    with pytest.raises(UploadTooLargeError, match="over the limit of 1,000 bytes"):
        _read(request)
    assert calls == []


def test_read_body_stops_reading_an_undeclared_oversize() -> None:
    chunk = b"x" * 8192
    request, calls = _request([chunk] * 100, headers={})
    with pytest.raises(UploadTooLargeError):
        _read(request)
    assert len(calls) < 100


@pytest.mark.parametrize("value", ["-1", "ten", "1e6", ""])
def test_read_body_refuses_a_malformed_content_length(value: str) -> None:
    request, _ = _request([b"x"], headers={"content-length": value})
    with pytest.raises(MalformedRequestError, match="Content-Length"):
        _read(request)


def test_read_body_gives_a_slow_upload_a_deadline() -> None:
    request, _ = _request([b"x"] * 50, headers={}, delay_s=0.05)
    with pytest.raises(UploadTimeoutError, match=r"0\.2 s"):
        _read(request, timeout_s=0.2)


def test_read_body_reports_a_client_that_went_away() -> None:
    request, _ = _request([], headers={})
    with pytest.raises(MalformedRequestError, match="went away"):
        _read(request)
