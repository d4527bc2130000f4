"""Errors of the HTTP edge and the one table that maps every efface error to an HTTP status.

The rejections below extend the tree in ``efface.errors``::

    EffaceError
    └── RequestRejectedError            the service refuses a request (has ``.status_code``)
        ├── MalformedRequestError       400: not a multipart upload, no ``file`` part, broken framing
        ├── InvalidApiKeyError          401: no key, a malformed, unknown or revoked key
        ├── UploadTimeoutError          408: the upload did not arrive in time
        ├── UploadTooLargeError         413: more bytes than the upload limit
        ├── InvalidOptionError          422: an option is unknown or out of range
        ├── RateLimitExceededError      429: the key's requests per minute are used up (``Retry-After``)
        ├── ServerBusyError             503: every worker and queue place is taken (``Retry-After``)
        └── ProcessingTimeoutError      503: the request waited and ran longer than allowed (``Retry-After``)

Every error answer is ``{"error": {"type": <class name>, "message": <one line>, "request_id": <id>}}``.
"""

from __future__ import annotations

from http import HTTPStatus

from efface.errors import (
    AuditError,
    ConfigurationError,
    EffaceError,
    ImageTooLargeError,
    InputError,
    UnsupportedFormatError,
)

__all__ = [
    "InvalidApiKeyError",
    "InvalidOptionError",
    "MalformedRequestError",
    "ProcessingTimeoutError",
    "RateLimitExceededError",
    "RequestRejectedError",
    "ServerBusyError",
    "UploadTimeoutError",
    "UploadTooLargeError",
    "http_status",
    "retry_after_s",
]


class RequestRejectedError(EffaceError):
    """The service refuses a request.

    Args:
        message: one line for the client.
        retry_after_s: seconds after which the same request may succeed (sent as ``Retry-After``).
    """

    status_code: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class MalformedRequestError(RequestRejectedError):
    """Not a multipart upload with a ``file`` part."""


class InvalidApiKeyError(RequestRejectedError):
    """No API key, or a malformed, unknown or revoked one."""

    status_code = HTTPStatus.UNAUTHORIZED


class UploadTimeoutError(RequestRejectedError):
    """The client took longer than allowed to send its upload."""

    status_code = HTTPStatus.REQUEST_TIMEOUT


class UploadTooLargeError(RequestRejectedError):
    """The upload has more bytes than allowed."""

    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class InvalidOptionError(RequestRejectedError):
    """An option is unknown, malformed or out of range."""

    status_code = HTTPStatus.UNPROCESSABLE_ENTITY


class RateLimitExceededError(RequestRejectedError):
    """The API key has used up its requests per minute."""

    status_code = HTTPStatus.TOO_MANY_REQUESTS


class ServerBusyError(RequestRejectedError):
    """Every worker and queue place is taken."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE


class ProcessingTimeoutError(RequestRejectedError):
    """The request waited for a worker and ran longer than allowed."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE


# Most specific first: the first class the error is an instance of decides.
_STATUS_OF: tuple[tuple[type[EffaceError], HTTPStatus], ...] = (
    (ImageTooLargeError, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    (UnsupportedFormatError, HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
    (InputError, HTTPStatus.UNPROCESSABLE_ENTITY),
    # Per-request options become settings: a weak transform or a bad value is the client's to fix.
    (ConfigurationError, HTTPStatus.UNPROCESSABLE_ENTITY),
    # Nothing is served unaudited: the client may retry once the audit database is back.
    (AuditError, HTTPStatus.SERVICE_UNAVAILABLE),
)


def http_status(exc: BaseException) -> HTTPStatus:
    """The status of the error answer for ``exc``; 500 for anything that is not the client's doing."""
    if isinstance(exc, RequestRejectedError):
        return exc.status_code
    for error_class, status in _STATUS_OF:
        if isinstance(exc, error_class):
            return status
    return HTTPStatus.INTERNAL_SERVER_ERROR


def retry_after_s(exc: BaseException, *, default_s: int) -> int | None:
    """The ``Retry-After`` to send with the answer for ``exc``, or None."""
    if isinstance(exc, RequestRejectedError) and exc.retry_after_s is not None:
        return exc.retry_after_s
    if http_status(exc) is HTTPStatus.SERVICE_UNAVAILABLE:
        return default_s
    return None
