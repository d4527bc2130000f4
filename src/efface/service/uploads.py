"""Reads an upload into memory, and only into memory.

Starlette's ``request.form()`` spools every file part over 1 MiB to a temporary file (an unlinked one, so it
never shows in a folder listing). The service never calls it: it reads the body itself, refusing it as soon
as it is over the limit (at once when ``Content-Length`` says so), and parses the multipart framing from
that buffer with python-multipart's push parser. No byte of an upload touches the disk.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from efface.service.errors import MalformedRequestError, UploadTimeoutError, UploadTooLargeError
from efface.service.limits import MULTIPART_OVERHEAD_BYTES

__all__ = [
    "FILE_FIELD",
    "KEEP_PERSON_FIELD",
    "ONLY_PERSON_FIELD",
    "REFERENCE_FIELDS",
    "Upload",
    "parse_multipart",
    "read_body",
]

FILE_FIELD = "file"
# Reference photos for selective anonymization: each part one photo of one person, repeatable.
KEEP_PERSON_FIELD = "keep_person"
ONLY_PERSON_FIELD = "only_person"
REFERENCE_FIELDS = (KEEP_PERSON_FIELD, ONLY_PERSON_FIELD)
_MAX_FIELDS = 16
_MAX_FIELD_BYTES = 1024
_MAX_FILENAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class Upload:
    """A parsed multipart upload.

    Attributes:
        content: the bytes of the ``file`` part.
        filename: the file name the client gave, if any (at most 255 characters).
        fields: the other parts, as text.
        references: per reference field (``keep_person``, ``only_person``), its parts as (file name, bytes): one
            photo of one person each, held in memory like the image.
    """

    content: bytes = field(repr=False)
    filename: str | None
    fields: dict[str, str]
    references: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict, repr=False)


async def read_body(request: Request, *, max_image_bytes: int, timeout_s: float) -> bytes:
    """Reads the whole request body into memory.

    Args:
        request: the request.
        max_image_bytes: the largest image accepted; the body may be larger by the multipart framing.
        timeout_s: the longest the client may take to send it.

    Raises:
        UploadTooLargeError: ``Content-Length`` or the bytes received exceed the limit.
        UploadTimeoutError: the body did not arrive in ``timeout_s``.
        MalformedRequestError: a malformed ``Content-Length``, or the client went away.
    """
    max_bytes = max_image_bytes + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedRequestError(f"malformed Content-Length {declared!r}")
        if int(declared) > max_bytes:
            raise UploadTooLargeError(
                f"the upload of {int(declared):,} bytes is over the limit of {max_image_bytes:,} bytes per image"
            )
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes:
                    raise UploadTooLargeError(f"the upload is over the limit of {max_image_bytes:,} bytes per image")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise UploadTimeoutError(f"the upload did not arrive within {timeout_s:g} s") from exc
    except ClientDisconnect as exc:
        raise MalformedRequestError("the client went away during the upload") from exc
    return b"".join(chunks)


class _Part:
    __slots__ = ("data", "disposition", "filename", "header_name", "header_value", "is_file", "name")

    def __init__(self) -> None:
        self.data = bytearray()
        self.disposition = b""
        self.header_name = b""
        self.header_value = b""
        self.name = ""
        self.filename: str | None = None
        self.is_file = False


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise MalformedRequestError("multipart names and fields must be UTF-8") from exc


class _Collector:
    """python-multipart callbacks that keep every part in memory."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.current = _Part()

    def on_part_begin(self) -> None:
        if len(self.parts) >= _MAX_FIELDS:
            raise MalformedRequestError(f"more than {_MAX_FIELDS} multipart parts")
        self.current = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.current.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.current.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.current.header_name.lower() == b"content-disposition":
            self.current.disposition = self.current.header_value
        self.current.header_name = b""
        self.current.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.current.disposition)
        if b"name" not in options:
            raise MalformedRequestError("a multipart part has no name in its Content-Disposition")
        self.current.name = _decode(options[b"name"])
        self.current.is_file = self.current.name == FILE_FIELD or self.current.name in REFERENCE_FIELDS
        if b"filename" in options:
            self.current.filename = _decode(options[b"filename"])[:_MAX_FILENAME_CHARS]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        if not part.is_file and len(part.data) + (end - start) > _MAX_FIELD_BYTES:
            raise MalformedRequestError(f"the field {part.name!r} is over {_MAX_FIELD_BYTES} bytes")
        part.data += data[start:end]

    def on_part_end(self) -> None:
        self.parts.append(self.current)


def parse_multipart(body: bytes, content_type: str | None) -> Upload:
    """Parses a ``multipart/form-data`` body held in memory.

    Args:
        body: the whole request body.
        content_type: the request's ``Content-Type`` header.

    Returns:
        The ``file`` part and the other fields.

    Raises:
        MalformedRequestError: not multipart, no boundary, broken or truncated framing, no ``file`` part,
            a part given twice.
    """
    media_type, params = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "none"
        raise MalformedRequestError(f"expected a multipart/form-data upload, got Content-Type {shown}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedRequestError("the multipart Content-Type has no boundary")
    collector = _Collector()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
        },
    )
    try:
        parser.write(body)
    except MultipartParseError as exc:
        raise MalformedRequestError(f"malformed multipart body: {exc}") from exc
    if parser.state is not MultipartState.END:
        raise MalformedRequestError("the multipart body is truncated (no closing boundary)")
    names = [part.name for part in collector.parts if part.name not in REFERENCE_FIELDS]
    if len(set(names)) != len(names):
        raise MalformedRequestError("a multipart part is given twice")
    files = [part for part in collector.parts if part.name == FILE_FIELD]
    if not files:
        raise MalformedRequestError(f"no {FILE_FIELD!r} part: send the image as the multipart field {FILE_FIELD!r}")
    fields = {part.name: _decode(bytes(part.data)) for part in collector.parts if not part.is_file}
    references: dict[str, list[tuple[str, bytes]]] = {}
    for number, part in enumerate(part for part in collector.parts if part.name in REFERENCE_FIELDS):
        name = part.filename or f"{part.name}-{number + 1}"
        references.setdefault(part.name, []).append((name, bytes(part.data)))
    return Upload(content=bytes(files[0].data), filename=files[0].filename, fields=fields, references=references)
