"""What the HTTP API takes and gives: request options, response bodies and their OpenAPI description.

The upload is ``multipart/form-data`` with the image in the ``file`` part and the options as further
fields. The answer is one JSON document: counts, boxes and the processed image as base64, so a client
needs nothing beyond a JSON parser and gets everything from one read.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from efface.records import MAX_PIXELATE_BLOCKS, MIN_BLUR_KERNEL_FRACTION, BBox, Face, Method, Preset
from efface.service.errors import InvalidOptionError
from efface.service.uploads import FILE_FIELD, KEEP_PERSON_FIELD, ONLY_PERSON_FIELD

__all__ = [
    "ANONYMIZE_BODY",
    "DETECT_BODY",
    "ERROR_RESPONSES",
    "AnonymizeOptions",
    "AnonymizeResponse",
    "DetectOptions",
    "DetectResponse",
    "EncodedImage",
    "ErrorBody",
    "ErrorResponse",
    "FaceBox",
    "HealthResponse",
    "ReadyResponse",
]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Self:
        """Validates the text fields of a multipart upload; an empty field counts as not given.

        Raises:
            InvalidOptionError: an unknown field or a value of the wrong type or out of range.
        """
        try:
            return cls.model_validate({name: value for name, value in fields.items() if value.strip()})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "options"
            message = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
            raise InvalidOptionError(f"option {where!r}: {message} (got {first.get('input')!r})") from exc


_MAX_BOXES = 10_000


class DetectOptions(_Options):
    """Detection options; each one left out takes the server's setting."""

    threshold: float | None = Field(None, gt=0.0, lt=1.0, description="Detector score threshold.")
    preset: Preset | None = Field(None, description="Detection preset: time against recall.")


class AnonymizeOptions(DetectOptions):
    """Anonymization options; each one left out takes the server's setting."""

    method: Method | None = Field(None, description="How faces are anonymized.")
    strength: float | None = Field(
        None,
        gt=0.0,
        allow_inf_nan=False,
        description=(
            f"blur: kernel width as a fraction of the face width (floor {MIN_BLUR_KERNEL_FRACTION:g}); pixelate: "
            f"cells across the face (an integer, at most {MAX_PIXELATE_BLOCKS}); not for fill."
        ),
    )
    return_boxes: bool = Field(True, description="Include each face's box and score in the answer.")
    boxes: str | None = Field(
        None,
        max_length=200_000,
        description=(
            "The faces to anonymize, as a person reviewed them: a JSON list of [x1, y1, x2, y2] in pixels of the "
            "upright image (the boxes of /v1/detect, some removed, faint ones or new ones added). No detection runs; "
            "the same transform and strength floor apply, and the audit row says the boxes came from the client."
        ),
    )

    def reviewed_boxes(self) -> tuple[Face, ...] | None:
        """The faces of ``boxes`` (None when not given).

        Raises:
            InvalidOptionError: not a JSON list of boxes, a box not ``x1 < x2, y1 < y2``, or over 10,000 boxes.
        """
        if self.boxes is None:
            return None
        try:
            parsed = json.loads(self.boxes)
        except json.JSONDecodeError as exc:
            raise InvalidOptionError(f"option 'boxes': not JSON ({exc.msg})") from exc
        if not isinstance(parsed, list) or len(parsed) > _MAX_BOXES:
            raise InvalidOptionError(f"option 'boxes': expected a list of at most {_MAX_BOXES} boxes")
        faces = []
        for box in parsed:
            if not (
                isinstance(box, list)
                and len(box) == 4
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            ):
                raise InvalidOptionError(f"option 'boxes': each box is [x1, y1, x2, y2], got {box!r}")
            x1, y1, x2, y2 = (float(v) for v in box)
            if not (x1 < x2 and y1 < y2):
                raise InvalidOptionError(f"option 'boxes': a box needs x1 < x2 and y1 < y2, got {box!r}")
            faces.append(Face(BBox(x1, y1, x2, y2), 1.0))
        return tuple(faces)


class FaceBox(BaseModel):
    """One detected face."""

    xyxy: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in pixels of the upright image.")
    score: float = Field(ge=0.0, le=1.0, description="Detector confidence.")

    @classmethod
    def of(cls, face: Face) -> FaceBox:
        return cls.model_validate(face.as_dict())


class EncodedImage(BaseModel):
    """The processed image, in the format of the upload, without metadata."""

    media_type: str = Field(description="e.g. image/jpeg.")
    data_base64: str = Field(description="The image file, base64 (RFC 4648, with padding).")


class DetectResponse(BaseModel):
    """Faces found in the upload; the image is neither changed nor returned."""

    request_id: str = Field(description="Names the request in the audit log and in X-Request-Id.")
    faces: int = Field(ge=0, description="Faces detected.")
    boxes: list[FaceBox]
    faint: list[FaceBox] = Field(
        default_factory=list,
        description="Faint candidates: what scored below the threshold, which /v1/anonymize leaves unless given them "
        "in boxes.",
    )
    width: int = Field(ge=1, description="Width of the upright image in pixels.")
    height: int = Field(ge=1, description="Height of the upright image in pixels.")


class AnonymizeResponse(BaseModel):
    """The anonymized image with what was found."""

    request_id: str = Field(description="Names the request in the audit log and in X-Request-Id.")
    faces: int = Field(ge=0, description="Faces detected.")
    faces_anonymized: int = Field(ge=0, description="Face regions changed.")
    faces_kept: int | None = Field(
        None, ge=0, description="Faces left visible by identity (reference photos given); null otherwise."
    )
    boxes: list[FaceBox] | None = Field(description="Each face's box and score; null when return_boxes is false.")
    width: int = Field(ge=1, description="Width of the upright image in pixels.")
    height: int = Field(ge=1, description="Height of the upright image in pixels.")
    image: EncodedImage


class ErrorBody(BaseModel):
    type: str = Field(description="The error class, e.g. CorruptImageError, WeakTransformError.")
    message: str = Field(description="One line for a person.")
    request_id: str | None = Field(None, description="Names the request in the audit log.")


class ErrorResponse(BaseModel):
    """Every error answer, whatever the status."""

    error: ErrorBody


class HealthResponse(BaseModel):
    status: str = Field(description="Always 'ok': the process answers.")


class ReadyResponse(BaseModel):
    status: str = Field(description="'ready', or 'not ready' with status 503.")
    model_loaded: bool
    database_reachable: bool


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_ERRORS: dict[HTTPStatus, tuple[str, bool]] = {
    HTTPStatus.BAD_REQUEST: ("Not a multipart upload with a 'file' part.", False),
    HTTPStatus.UNAUTHORIZED: ("No API key, or a malformed, unknown or revoked one.", False),
    HTTPStatus.REQUEST_TIMEOUT: ("The upload did not arrive in time.", False),
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ("Too many bytes, or too many pixels (decompression bomb).", False),
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: ("Not an image format efface can anonymize.", False),
    HTTPStatus.UNPROCESSABLE_ENTITY: (
        "A corrupt or truncated image, or an option that is unknown, out of range or below the strength floor.",
        False,
    ),
    HTTPStatus.TOO_MANY_REQUESTS: ("The API key's requests per minute are used up.", True),
    HTTPStatus.INTERNAL_SERVER_ERROR: ("A fault of the server (never a bad upload).", False),
    HTTPStatus.SERVICE_UNAVAILABLE: ("Saturated, timed out, or the audit log is unavailable.", True),
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    int(status): {"model": ErrorResponse, "description": text, **({"headers": _RETRY_AFTER} if retry else {})}
    for status, (text, retry) in _ERRORS.items()
}


# The option fields as OpenAPI sees them (multipart fields are text on the wire; these are their meanings).
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "preset": {"type": "string", "enum": [preset.value for preset in Preset]},
    "method": {"type": "string", "enum": [method.value for method in Method]},
    "strength": {"type": "number", "exclusiveMinimum": 0},
    "return_boxes": {"type": "boolean", "default": True},
    "boxes": {"type": "string", "maxLength": 200_000},
}


_REFERENCE_SCHEMAS: dict[str, dict[str, Any]] = {
    KEEP_PERSON_FIELD: {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": "Selective anonymization (a subject access request): photos of the people to leave visible, "
        "one part per person, each showing their face alone; every other face is anonymized, and a face is kept "
        "only when both face recognizers are sure. Held in memory only; the audit row keeps their sha256.",
    },
    ONLY_PERSON_FIELD: {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": "Selective anonymization (an erasure request): photos of the people whose faces alone are "
        "anonymized (and every face too small or turned to tell); not with keep_person.",
    },
}


def _multipart_body(options: type[_Options], *, references: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        FILE_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "The image: JPEG, PNG, WebP, TIFF or BMP. Read into memory only, never stored.",
        }
    }
    for name, info in options.model_fields.items():
        properties[name] = {**_FIELD_SCHEMAS[name], "description": info.description}
    if references:
        properties |= _REFERENCE_SCHEMAS
    schema = {"type": "object", "required": [FILE_FIELD], "properties": properties, "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


ANONYMIZE_BODY = _multipart_body(AnonymizeOptions, references=True)
DETECT_BODY = _multipart_body(DetectOptions)
