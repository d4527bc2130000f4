"""The one place results other than a processed file are made: a failure (an error of any kind, with its
one-line message), a file skipped because an earlier run did it, a leftover temporary file removed.

The CLI's batch, the pool, Ray and the HTTP service all build these through here, so a failure reads the same
in the audit log wherever it happened.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from efface.errors import EffaceError
from efface.records import AnonymizationResult, Face, Location, Outcome, Uncertainty, WriteMode
from efface.text import printable

__all__ = ["answered", "error_message", "failed", "leftover_removed", "not_media", "skipped"]


def error_message(error: BaseException) -> str:
    """The one line an error is shown and audited as: an efface error's own message (without its path, which
    the result holds), otherwise the exception's text, or its class name when it has none; control characters
    and undecodable bytes escaped (an OS error's text holds the file name)."""
    if isinstance(error, EffaceError):
        return printable(error.message)
    return printable(str(error) or type(error).__name__)


def failed(
    path: Location | None,
    error: BaseException,
    *,
    mode: WriteMode,
    started_at: datetime | None = None,
    duration_s: float = 0.0,
    faces: tuple[Face, ...] = (),
    image_format: str | None = None,
    resolution_wh: tuple[int, int] | None = None,
    details: dict[str, object] | None = None,
    request_id: str | None = None,
) -> AnonymizationResult:
    """A file (or request) that failed; nothing was written for it.

    Args:
        path: the file, as given or planned; None for a request.
        error: what went wrong; its class name and one-line message are recorded.
        mode: the run's write mode.
        started_at: when work on it began (default: now).
        duration_s: how long it took until it failed.
        faces: faces found before the failure, if any.
        image_format: the format, when the file was decoded before failing.
        resolution_wh: its size, likewise.
        details: further audited facts.
        request_id: the request, for content that is not a file (the HTTP service, ``Session.anonymize_bytes``).
    """
    return AnonymizationResult(
        path=path,
        outcome=Outcome.ERROR,
        mode=mode,
        started_at=started_at or datetime.now(UTC),
        duration_s=duration_s,
        faces=faces,
        image_format=image_format,
        resolution_wh=resolution_wh,
        error_class=type(error).__name__,
        error_message=error_message(error),
        details=details or {},
        request_id=request_id,
    )


def answered(
    request_id: str,
    *,
    mode: WriteMode,
    started_at: datetime,
    duration_s: float,
    faces: tuple[Face, ...],
    faces_anonymized: int,
    output_sha256: str | None,
    image_format: str,
    resolution_wh: tuple[int, int],
    details: dict[str, object],
    uncertainty: Uncertainty | None = None,
) -> AnonymizationResult:
    """Content processed in memory and handed back, not a file (a request to the service, ``anonymize_bytes``
    of a ``Session``): recorded by its request id, with no path.

    Args:
        request_id: the request.
        mode: ``RESPONSE`` when the anonymized image went back, ``DRY_RUN`` when faces were only detected.
        started_at: when it was taken up.
        duration_s: how long it took.
        faces: the faces detected.
        faces_anonymized: face regions changed.
        output_sha256: sha256 of the image handed back (None when none was).
        image_format: the content's format.
        resolution_wh: its upright size.
        details: further audited facts.
        uncertainty: what the detector was unsure of (None where it did not run: boxes given by the client).
    """
    return AnonymizationResult(
        path=None,
        request_id=request_id,
        uncertainty=uncertainty,
        outcome=Outcome.of_processing(mode, faces_anonymized=faces_anonymized),
        mode=mode,
        started_at=started_at,
        duration_s=duration_s,
        faces=faces,
        faces_anonymized=faces_anonymized,
        output_sha256=output_sha256,
        image_format=image_format,
        resolution_wh=resolution_wh,
        details=details,
    )


def skipped(
    path: Location, *, mode: WriteMode, output_path: Location | None, started_at: datetime, duration_s: float
) -> AnonymizationResult:
    """A file that an earlier run with the same settings already anonymized: it hashes to an output recorded for it
    (in a dry run: a file the same command without ``--dry-run`` skips)."""
    return AnonymizationResult(
        path=path,
        outcome=Outcome.SKIPPED,
        mode=mode,
        started_at=started_at,
        duration_s=duration_s,
        output_path=output_path,
        details={
            "reason": "already anonymized by an earlier run with the same settings and model (its sha256 matches "
            "the output that run recorded)"
        },
    )


def leftover_removed(path: Path, *, mode: WriteMode, started_at: datetime) -> AnonymizationResult:
    """A temporary file of an interrupted run, found and deleted."""
    return AnonymizationResult(
        path=path, outcome=Outcome.LEFTOVER_REMOVED, mode=mode, started_at=started_at, duration_s=0.0
    )


def not_media(path: Location, *, mode: WriteMode, reason: str) -> AnonymizationResult:
    """A file looked at and left as it is: its content is neither a picture nor a video.

    Args:
        path: the file.
        mode: the run's write mode.
        reason: what it was found to be (``"WAV audio"``, ``"empty file"``, ``"content not recognised"``).
    """
    return AnonymizationResult(
        path=path,
        outcome=Outcome.NOT_MEDIA,
        mode=mode,
        started_at=datetime.now(UTC),
        duration_s=0.0,
        details={"reason": printable(reason)},
    )
