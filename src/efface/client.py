"""The Python client of the efface HTTP service (``efface serve``), sync and async, on httpx (the README's
"HTTP service and Python client" section shows it at work, and its example is run by the tests).

A ``503`` (the server is saturated) is retried after its ``Retry-After``, or with exponential backoff, as is
a connection that could not be opened; everything else raises at once. Errors extend ``efface.errors``::

    EffaceError
    └── ServiceError                  the service answered with an error, or not at all
        ├── ServiceUnreachableError   no connection, or no complete answer
        ├── AuthenticationError       401: no key, or a malformed, unknown or revoked one
        ├── RateLimitError            429: the key's requests per minute are used up (``retry_after_s``)
        ├── ServiceBusyError          503 on every attempt (``retry_after_s``)
        └── RequestRejectedError      another 4xx: a bad image, a too large one, an option below the floor, ...

Each carries ``status_code``, ``error_type`` (the server's error class, e.g. ``CorruptImageError``) and
``request_id`` (the audit log's name for the request).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import httpx

from efface.errors import EffaceError, InputNotFoundError, UnreadableFileError
from efface.records import BBox, Face, Method, Preset

__all__ = [
    "AnonymizedImage",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "DetectedFaces",
    "RateLimitError",
    "RequestRejectedError",
    "ServiceBusyError",
    "ServiceError",
    "ServiceUnreachableError",
]

ImageInput = str | os.PathLike[str] | bytes
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5
# A Retry-After longer than this is not waited for: the error is raised instead.
MAX_RETRY_WAIT_S = 30.0


class ServiceError(EffaceError):
    """The service answered with an error, or not at all.

    Attributes:
        status_code: the HTTP status, or None without an answer.
        error_type: the server's error class (e.g. ``CorruptImageError``), or None.
        request_id: the audit log's name for the request, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.request_id = request_id


class ServiceUnreachableError(ServiceError):
    """No connection to the service, or no complete answer.

    Attributes:
        has_sent_request: False when the connection could not even be opened: nothing was sent, so trying
            again is safe (the client does, up to ``max_retries``).
    """

    def __init__(self, message: str, *, has_sent_request: bool) -> None:
        super().__init__(message)
        self.has_sent_request = has_sent_request


class AuthenticationError(ServiceError):
    """401: no API key, or a malformed, unknown or revoked one."""


class _ErrorFields(TypedDict, total=False):
    """What every ``ServiceError`` built from an answer carries."""

    status_code: int | None
    error_type: str | None
    request_id: str | None


class _RetryAfterError(ServiceError):
    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Unpack[_ErrorFields]) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class RateLimitError(_RetryAfterError):
    """429: the key's requests per minute are used up; ``retry_after_s`` says when to try again."""


class ServiceBusyError(_RetryAfterError):
    """503 on every attempt: the server is saturated (or its audit log is unavailable)."""


class RequestRejectedError(ServiceError):
    """Another 4xx: a bad or too large image, or an option that is unknown, out of range or below the floor."""


@dataclass(frozen=True, slots=True)
class AnonymizedImage:
    """What ``anonymize`` returns.

    Attributes:
        image: the anonymized image file, in the format of the upload, without metadata.
        media_type: e.g. ``image/jpeg``.
        faces: faces detected.
        faces_anonymized: face regions changed.
        boxes: each face's box (pixels of the upright image) and score; empty when ``return_boxes`` was False.
        resolution_wh: the upright image's size.
        request_id: the audit log's name for the request.
        faces_kept: faces left visible by identity (``keep_person`` or ``only_person`` given); None otherwise.
    """

    image: bytes = field(repr=False)
    media_type: str
    faces: int
    faces_anonymized: int
    boxes: tuple[Face, ...]
    resolution_wh: tuple[int, int]
    request_id: str
    faces_kept: int | None = None


@dataclass(frozen=True, slots=True)
class DetectedFaces:
    """What ``detect`` returns.

    Attributes:
        faces: faces detected.
        boxes: each face's box (pixels of the upright image) and score.
        resolution_wh: the upright image's size.
        request_id: the audit log's name for the request.
    """

    faces: int
    boxes: tuple[Face, ...]
    resolution_wh: tuple[int, int]
    request_id: str


@dataclass(frozen=True, slots=True)
class _Upload:
    """One request, ready to send as often as it must be retried."""

    path: str
    filename: str
    content: bytes = field(repr=False)
    fields: dict[str, str]
    references: tuple[tuple[str, str, bytes], ...] = field(default=(), repr=False)

    def files(self) -> list[tuple[str, tuple[str, bytes, str]]]:
        parts = [("file", (self.filename, self.content, "application/octet-stream"))]
        parts += [
            (name, (filename, content, "application/octet-stream")) for name, filename, content in self.references
        ]
        return parts


def _read(image: ImageInput, *, default_name: str) -> tuple[bytes, str]:
    """The bytes of an image given as a path or as bytes, and the name to send it under."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), default_name
    source = Path(image)
    try:
        return source.read_bytes(), source.name
    except FileNotFoundError as exc:
        raise InputNotFoundError("no such file", path=source) from exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot read: {exc.strerror or exc}", path=source) from exc


def _references(
    keep_person: Sequence[ImageInput], only_person: Sequence[ImageInput]
) -> tuple[tuple[str, str, bytes], ...]:
    """The reference photos as multipart parts: one part per person."""
    parts = []
    for name, photos in (("keep_person", keep_person), ("only_person", only_person)):
        for number, photo in enumerate(photos, start=1):
            content, filename = _read(photo, default_name=f"{name}-{number}")
            parts.append((name, filename, content))
    return tuple(parts)


def _upload(
    path: str,
    image: ImageInput,
    *,
    filename: str | None,
    options: Mapping[str, object | None],
    references: tuple[tuple[str, str, bytes], ...] = (),
) -> _Upload:
    content, default_name = _read(image, default_name="image")
    fields: dict[str, str] = {}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, Method | Preset):
            fields[name] = value.value
        else:
            fields[name] = str(value)
    return _Upload(path=path, filename=filename or default_name, content=content, fields=fields, references=references)


def _anonymize_options(
    method: Method | str | None,
    strength: float | None,
    threshold: float | None,
    preset: Preset | str | None,
    return_boxes: bool,
) -> dict[str, object | None]:
    return {
        "method": Method(method) if method is not None else None,
        "strength": strength,
        "threshold": threshold,
        "preset": Preset(preset) if preset is not None else None,
        "return_boxes": return_boxes,
    }


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _error(response: httpx.Response) -> ServiceError:
    """The typed error for an error answer."""
    try:
        body = response.json()["error"]
        error_type, message, request_id = body.get("type"), body.get("message"), body.get("request_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        error_type, message, request_id = None, response.text[:200] or response.reason_phrase, None
    status = response.status_code
    text = f"{status} {error_type or response.reason_phrase}: {message}"
    request_id = request_id or response.headers.get("x-request-id")
    kwargs: _ErrorFields = {"status_code": status, "error_type": error_type, "request_id": request_id}
    if status == httpx.codes.UNAUTHORIZED:
        return AuthenticationError(text, **kwargs)
    if status == httpx.codes.TOO_MANY_REQUESTS:
        return RateLimitError(text, retry_after_s=_retry_after_s(response), **kwargs)
    if status == httpx.codes.SERVICE_UNAVAILABLE:
        return ServiceBusyError(text, retry_after_s=_retry_after_s(response), **kwargs)
    if 400 <= status < 500:
        return RequestRejectedError(text, **kwargs)
    return ServiceError(text, **kwargs)


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != httpx.codes.OK:
        raise _error(response)
    try:
        body = response.json()
    except ValueError as exc:
        raise ServiceError(f"the service answered {response.status_code} without JSON", status_code=200) from exc
    if not isinstance(body, dict):
        raise ServiceError(
            f"unexpected answer from the service: expected a JSON object, got {type(body).__name__}", status_code=200
        )
    return body


def _faces(boxes: list[dict[str, Any]] | None) -> tuple[Face, ...]:
    return tuple(Face(box=BBox(*item["xyxy"]), score=float(item["score"])) for item in boxes or ())


def _anonymized(response: httpx.Response) -> AnonymizedImage:
    body = _json(response)
    try:
        image = base64.b64decode(body["image"]["data_base64"], validate=True)
        return AnonymizedImage(
            image=image,
            media_type=body["image"]["media_type"],
            faces=int(body["faces"]),
            faces_anonymized=int(body["faces_anonymized"]),
            boxes=_faces(body["boxes"]),
            resolution_wh=(int(body["width"]), int(body["height"])),
            request_id=body["request_id"],
            faces_kept=int(body["faces_kept"]) if body.get("faces_kept") is not None else None,
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ServiceError(f"unexpected answer from the service: {exc}", status_code=200) from exc


def _detected(response: httpx.Response) -> DetectedFaces:
    body = _json(response)
    try:
        return DetectedFaces(
            faces=int(body["faces"]),
            boxes=_faces(body["boxes"]),
            resolution_wh=(int(body["width"]), int(body["height"])),
            request_id=body["request_id"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ServiceError(f"unexpected answer from the service: {exc}", status_code=200) from exc


class _Retrying:
    """When to try again and how long to wait first: shared by both clients."""

    def __init__(self, *, max_retries: int, backoff_s: float) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def wait_s(self, attempt: int, error: ServiceError) -> float | None:
        """Seconds to wait before retrying after ``error`` on attempt ``attempt`` (0 first), or None to raise it."""
        is_retryable = isinstance(error, ServiceBusyError) or (
            isinstance(error, ServiceUnreachableError) and not error.has_sent_request
        )
        if attempt >= self.max_retries or not is_retryable:
            return None
        retry_after_s = error.retry_after_s if isinstance(error, ServiceBusyError) else None
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= MAX_RETRY_WAIT_S else None
        # Full jitter: clients refused together do not all come back together.
        return random.uniform(0, self.backoff_s * 2**attempt)


def _transport_error(exc: httpx.TransportError, url: str) -> ServiceUnreachableError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServiceUnreachableError(f"cannot connect to {url}: {_one_line(exc)}", has_sent_request=False)
    return ServiceUnreachableError(
        f"no complete answer from {url}: {type(exc).__name__}: {_one_line(exc)}", has_sent_request=True
    )


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


class Client:
    """A synchronous client of one efface service.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        api_key: a key from ``efface keys create``.
        timeout_s: the longest one attempt may take.
        max_retries: further attempts after a 503 or a refused connection.
        backoff_s: the first wait when the server gives no ``Retry-After`` (doubled each attempt, jittered).
        transport: an httpx transport (e.g. ``httpx.MockTransport`` in tests).
        sleep: how to wait (a fake in tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._retrying = _Retrying(max_retries=max_retries, backoff_s=backoff_s)
        self._sleep = sleep
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport)

    def anonymize(
        self,
        image: ImageInput,
        *,
        method: Method | str | None = None,
        strength: float | None = None,
        threshold: float | None = None,
        preset: Preset | str | None = None,
        return_boxes: bool = True,
        filename: str | None = None,
        keep_person: Sequence[ImageInput] = (),
        only_person: Sequence[ImageInput] = (),
    ) -> AnonymizedImage:
        """Anonymizes every face in an image (or, with reference photos, every face but some people's, or theirs only).

        Args:
            image: a path, or the image file's bytes.
            method: blur, pixelate or fill. [default: the server's]
            strength: blur: kernel width / face width (floor 0.1); pixelate: cells across the face (at most 10).
            threshold: detector score threshold in (0, 1). [default: the server's]
            preset: fast, balanced or thorough. [default: the server's]
            return_boxes: include each face's box in the answer.
            filename: the name sent with the upload. [default: the path's name, or "image"]
            keep_person: photos of people to leave visible (one photo per person, their face alone): every other
                face is anonymized (a subject access request).
            only_person: photos of the people whose faces alone are anonymized (an erasure request).

        Raises:
            ServiceError: see the module docstring for its subclasses.
            InputNotFoundError, UnreadableFileError: ``image`` or a photo is a path that cannot be read (nothing is
                sent).
        """
        options = _anonymize_options(method, strength, threshold, preset, return_boxes)
        references = _references(keep_person, only_person)
        upload = _upload("/v1/anonymize", image, filename=filename, options=options, references=references)
        return _anonymized(self._send(upload))

    def detect(
        self,
        image: ImageInput,
        *,
        threshold: float | None = None,
        preset: Preset | str | None = None,
        filename: str | None = None,
    ) -> DetectedFaces:
        """Finds the faces in an image; the image is not changed or returned.

        Raises:
            ServiceError: see the module docstring for its subclasses.
        """
        options = {"threshold": threshold, "preset": Preset(preset) if preset is not None else None}
        return _detected(self._send(_upload("/v1/detect", image, filename=filename, options=options)))

    def _send(self, upload: _Upload) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.post(upload.path, files=upload.files(), data=upload.fields)
                if response.status_code != httpx.codes.SERVICE_UNAVAILABLE:
                    return response
                error: ServiceError = _error(response)
            except httpx.TransportError as exc:
                error = _transport_error(exc, str(self._http.base_url))
            wait_s = self._retrying.wait_s(attempt, error)
            if wait_s is None:
                raise error
            self._sleep(wait_s)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """An asynchronous client of one efface service; the same arguments and methods as ``Client``, awaited.

    Args:
        transport: an httpx async transport (e.g. ``httpx.MockTransport`` or ``httpx.ASGITransport``).
        sleep: how to wait (a fake in tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._retrying = _Retrying(max_retries=max_retries, backoff_s=backoff_s)
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport
        )

    async def anonymize(
        self,
        image: ImageInput,
        *,
        method: Method | str | None = None,
        strength: float | None = None,
        threshold: float | None = None,
        preset: Preset | str | None = None,
        return_boxes: bool = True,
        filename: str | None = None,
        keep_person: Sequence[ImageInput] = (),
        only_person: Sequence[ImageInput] = (),
    ) -> AnonymizedImage:
        """Anonymizes every face in an image; see ``Client.anonymize``."""
        options = _anonymize_options(method, strength, threshold, preset, return_boxes)
        references = _references(keep_person, only_person)
        upload = _upload("/v1/anonymize", image, filename=filename, options=options, references=references)
        return _anonymized(await self._send(upload))

    async def detect(
        self,
        image: ImageInput,
        *,
        threshold: float | None = None,
        preset: Preset | str | None = None,
        filename: str | None = None,
    ) -> DetectedFaces:
        """Finds the faces in an image; see ``Client.detect``."""
        options = {"threshold": threshold, "preset": Preset(preset) if preset is not None else None}
        return _detected(await self._send(_upload("/v1/detect", image, filename=filename, options=options)))

    async def _send(self, upload: _Upload) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.post(upload.path, files=upload.files(), data=upload.fields)
                if response.status_code != httpx.codes.SERVICE_UNAVAILABLE:
                    return response
                error: ServiceError = _error(response)
            except httpx.TransportError as exc:
                error = _transport_error(exc, str(self._http.base_url))
            wait_s = self._retrying.wait_s(attempt, error)
            if wait_s is None:
                raise error
            await self._sleep(wait_s)
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
