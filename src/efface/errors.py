"""The efface error tree. Foreign errors (Pillow, OpenCV, onnxruntime, SQLAlchemy, OS) are translated
into these at one boundary per package with ``raise X(...) from exc``; nothing else escapes.

    EffaceError
    ├── ConfigurationError          settings that cannot work (bad URL, unknown provider, ...)
    │   └── WeakTransformError      a transform weaker than the legal floor
    ├── ModelError                  a detector or recognizer model cannot be found, loaded or run
    ├── InputError                  one input file cannot be anonymized (has ``.path``)
    │   ├── InputNotFoundError      no such file or folder, or a folder holding no image
    │   ├── UnreadableFileError     the OS refused to read it
    │   ├── UnsupportedFormatError  not a format efface can anonymize (yet)
    │   ├── CorruptImageError       the bytes are not a valid image or video (truncated, bad CRC, ...)
    │   ├── ImageTooLargeError      more pixels than allowed (decompression bombs)
    │   ├── HardLinkError           in place: another name of the file lies outside the walked paths
    │   └── SourceChangedError      in place: the file changed on disk while it was processed
    ├── OutputError                 the anonymized file could not be written (has ``.path``)
    ├── WorkerCrashedError          the process or Ray actor anonymizing a file died under it (has ``.path``)
    ├── AuditError                  the audit database cannot be opened, migrated or written
    ├── service.errors.RequestRejectedError   an HTTP request refused (its status code and Retry-After),
    │       with one subclass per cause: malformed request, invalid API key, upload too large or too
    │       slow, invalid option, rate limit, server busy, processing timeout
    └── client.ServiceError         what the Python client raises for an answer it cannot use:
            ServiceUnreachableError, AuthenticationError, RateLimitError, ServiceBusyError,
            RequestRejectedError

The service and client errors live beside the code that raises them (the edges); the core never sees them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from efface.text import path_text

if TYPE_CHECKING:
    from efface.records import Location

__all__ = [
    "AuditError",
    "ConfigurationError",
    "CorruptImageError",
    "EffaceError",
    "HardLinkError",
    "ImageTooLargeError",
    "InputError",
    "InputNotFoundError",
    "ModelError",
    "OutputError",
    "SourceChangedError",
    "UnreadableFileError",
    "UnsupportedFormatError",
    "VersionsLeftError",
    "WeakTransformError",
    "WorkerCrashedError",
]


class EffaceError(Exception):
    """Root of every error efface raises on purpose.

    Args:
        message: one line that says what went wrong, fit to show a user as is.
        path: the file concerned, where there is one.
    """

    def __init__(self, message: str, *, path: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{path_text(self.path)}: {self.message}" if self.path is not None else self.message


class ConfigurationError(EffaceError):
    """Settings that cannot work."""


class WeakTransformError(ConfigurationError):
    """A transform weaker than the floor of a Gaussian kernel 1/10 of the face box width."""


class ModelError(EffaceError):
    """A detector or recognizer model cannot be found, loaded or run."""


class InputError(EffaceError):
    """One input file cannot be anonymized; the file is left untouched."""


class InputNotFoundError(InputError):
    """No such file or folder, or a folder without any image."""


class UnreadableFileError(InputError):
    """The operating system refused to read the file."""


class UnsupportedFormatError(InputError):
    """The file is not in a format efface can anonymize."""


class CorruptImageError(InputError):
    """The file claims to be an image or a video but cannot be decoded completely."""


class ImageTooLargeError(InputError):
    """The image has more pixels than the configured limit (a decompression bomb guard)."""


class HardLinkError(InputError):
    """In place, a file with hard links whose other names are not all in the walked paths: replacing the names
    efface reaches would leave the original, faces and metadata included, under the others."""


class SourceChangedError(InputError):
    """In place, the file on disk is no longer the one that was read (rewritten, replaced or moved while it was
    processed): the anonymized old content must not overwrite it, so it is left as it now is."""


class OutputError(EffaceError):
    """The anonymized file could not be written; the original is left untouched."""


class VersionsLeftError(OutputError):
    """In an object store that keeps versions, the anonymized object is in place but earlier versions of it, which
    still hold the original, could not be deleted (no permission to): the object fails aloud, naming them."""


class WorkerCrashedError(EffaceError):
    """The process or Ray actor anonymizing a file died under it (killed, out of memory) as often as it was
    retried; the file was left as it was, or complete, by the atomic replace."""


class AuditError(EffaceError):
    """The audit database cannot be opened, migrated or written."""
