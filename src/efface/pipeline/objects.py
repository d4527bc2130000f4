"""Objects in an S3-compatible store, anonymized as files are: planned from a URL, read into a private local work
folder, anonymized there by ``core.stage_file`` (pictures, videos, shards and tables alike), and written back under
their keys by the audited run.

The write back (``push``) is what a file's atomic replace is on a local disk:

1. the object is written in one PUT (or an upload in parts, aborted if it does not complete), conditional on its
   ETag being the one read (``If-Match``): an object rewritten meanwhile is failed aloud, not overwritten;
2. in a bucket that keeps versions, the version read, and every version older than it, still holds an image
   efface did not anonymize: each is deleted by its version id and the ids are recorded; where the credentials may
   not delete versions, the object fails aloud (``VersionsLeftError``) naming the versions that remain.

The local copies are originals too. They live in a work folder of the run (``WorkFolder``: mode 0700 under the
temporary folder, locked by the run that owns it), deleted as each object is done and with the folder at the end;
a folder whose run was killed is deleted, and audited, by the next run that starts (``sweep_work_folders``). On a
Ray cluster every actor has a work folder of its own on its machine: the object is read, anonymized and written back
there, the driver only recording it (``PendingUpload.host``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from efface.errors import (
    EffaceError,
    OutputError,
    UnsupportedFormatError,
    VersionsLeftError,
)
from efface.media.atomic import discard
from efface.media.sniff import claimed_kind, refusal, sniff_file
from efface.pipeline import results
from efface.pipeline.core import FileJob, Policy, StagedResult, stage_file
from efface.records import AnonymizationResult, Location, ObjectURL, Outcome, WriteMode

if TYPE_CHECKING:
    from efface.detection.models import DetectionModels
    from efface.pipeline.video import FrameCallback
    from efface.storage import S3Store, StoredVersion

__all__ = [
    "ObjectJob",
    "ObjectPlan",
    "PendingUpload",
    "UploadHost",
    "WorkFolder",
    "discard_upload",
    "plan_objects",
    "push",
    "stage_object",
    "sweep_work_folders",
]

logger = logging.getLogger(__name__)

_WORK_PREFIX = "efface-objects-"
_LOCK_NAME = ".lock"
# The characters of a key's suffix kept on the local copy (``.tar.gz`` says a gzipped shard).
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,8}){1,2}$")


@dataclass(frozen=True, slots=True)
class ObjectJob:
    """One object to anonymize.

    Attributes:
        source: the object.
        destination: where its output goes: ``source`` itself in place, an object under an output URL or a file in
            a local output folder; None for a dry run.
        store: the store that holds it (and the output, when that is an object too).
        work_folder: the run's private local folder, where the object is read and anonymized.
        done_sha256: outputs earlier runs with the same settings recorded for it at its destination (it is skipped
            when the destination holds one of them).
    """

    source: ObjectURL
    destination: Location | None
    store: S3Store
    work_folder: Path
    done_sha256: frozenset[str] = frozenset()

    @property
    def target(self) -> Location | None:
        return self.destination

    @property
    def is_video(self) -> bool:
        return False  # known only once read: progress shows it as one file

    @property
    def mode(self) -> WriteMode:
        if self.destination is None:
            return WriteMode.DRY_RUN
        return WriteMode.IN_PLACE if self.destination == self.source else WriteMode.OUTPUT_DIR


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """An object's output, ready in the work folder, to be written by the audited run (``push``).

    Attributes:
        store: where it goes.
        target: the object it is written as.
        local_path: the file to upload (the staged output, or the source's local copy where it goes out unchanged).
        if_match: in place, the ETag of the object as read (the write is conditional on it); None for a new object.
        version_read: in place, the version read (None where the bucket keeps no versions).
        source_copy: the source's local copy, deleted once the object is done (None when already deleted).
        host: the process whose machine holds these local files, where it is not this one (a Ray actor's work
            folder on another node): ``push`` and ``discard_upload`` run there; None: here.
    """

    store: S3Store
    target: ObjectURL
    local_path: Path
    if_match: str | None
    version_read: str | None
    source_copy: Path | None = None
    host: UploadHost | None = None


class UploadHost(Protocol):
    """A process that holds an object's local files on its own machine, and writes or deletes them there."""

    def push(self, upload: PendingUpload) -> dict[str, object]:
        """``push`` there (``upload.host`` None); raises as ``push`` does."""
        ...

    def discard(self, done: StagedResult) -> None:
        """``discard_upload`` there."""
        ...


class WorkFolder:
    """The run's private local folder for object copies: mode 0700, locked while the run lives, deleted on close."""

    def __init__(self, parent: Path | None = None) -> None:
        root = _work_root(parent)
        self.path = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        self._lock = os.open(self.path / _LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._lock)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _work_root(parent: Path | None) -> Path:
    root = (parent or Path(tempfile.gettempdir())) / f"{_WORK_PREFIX}{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def sweep_work_folders(*, mode: WriteMode, parent: Path | None = None) -> list[AnonymizationResult]:
    """Deletes the work folders that killed runs left (their lock is free), each audited as a leftover: they may
    hold local copies of originals."""
    swept: list[AnonymizationResult] = []
    root = _work_root(parent)
    for folder in sorted(root.iterdir()):
        lock_path = folder / _LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None  # a folder whose run died before it locked it, or half deleted
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run's
            started_at = datetime.now(UTC)
            try:
                leftovers = sorted(path for path in folder.iterdir() if path.name != _LOCK_NAME)
            except FileNotFoundError:
                continue  # deleted meanwhile by another sweep (another process of this machine)
            for leftover in leftovers:
                try:
                    leftover.unlink() if not leftover.is_dir() else shutil.rmtree(leftover)
                except FileNotFoundError:
                    continue
                swept.append(results.leftover_removed(leftover, mode=mode, started_at=started_at))
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if fd is not None:
                os.close(fd)
    return swept


@dataclass(frozen=True, slots=True)
class ObjectPlan:
    """What a run over object URLs will do, listed lazily by ``items``.

    Attributes:
        mode: in place, output or dry run.
        urls: the URLs given.
        store: their store.
        work_folder: the run's local folder for copies.
        output: where outputs go instead of in place: an object URL (a prefix) or a local folder.
    """

    mode: WriteMode
    urls: tuple[ObjectURL, ...]
    store: S3Store
    work_folder: Path
    output: Location | None = None

    def items(self) -> Iterator[ObjectJob | AnonymizationResult]:
        """Leftover work folders of killed runs (deleted and audited), then each URL's objects in key order, a
        listing page at a time; a URL that cannot be listed is a failed result."""
        yield from sweep_work_folders(mode=self.mode, parent=self.work_folder.parent.parent)
        seen: set[ObjectURL] = set()
        for url in self.urls:
            try:
                for info in self.store.walk(url):
                    if info.url in seen:
                        continue
                    seen.add(info.url)
                    yield self._job(url, info.url)
            except EffaceError as exc:
                yield results.failed(url, exc, mode=self.mode)

    def _job(self, given: ObjectURL, url: ObjectURL) -> ObjectJob | AnonymizationResult:
        if self.mode is WriteMode.DRY_RUN:
            destination: Location | None = None
        elif self.output is None:
            destination = url
        else:
            try:
                destination = _mirrored(given, url, self.output)
            except OutputError as exc:
                return results.failed(url, exc, mode=self.mode)
        return ObjectJob(source=url, destination=destination, store=self.store, work_folder=self.work_folder)


def plan_objects(
    urls: Sequence[ObjectURL],
    *,
    store: S3Store,
    work_folder: Path,
    output: Location | None = None,
    dry_run: bool = False,
) -> ObjectPlan:
    """Plans a run over objects (every object under a URL that names a prefix)."""
    mode = WriteMode.DRY_RUN if dry_run else (WriteMode.OUTPUT_DIR if output is not None else WriteMode.IN_PLACE)
    return ObjectPlan(mode=mode, urls=tuple(urls), store=store, work_folder=work_folder, output=output)


def _mirrored(given: ObjectURL, url: ObjectURL, output: Location) -> Location:
    """Where ``url``, found under the URL given, goes in the output: under the given prefix's last part (as a folder
    input maps to ``OUTPUT/folder/...``), or by its own name when the URL given names it."""
    if url == given:
        relative = url.name
    else:
        base = given.key.rstrip("/")
        anchor = base.rpartition("/")[2]
        rest = url.key[len(base) :].lstrip("/") if base else url.key
        relative = f"{anchor}/{rest}" if anchor else rest
    if isinstance(output, ObjectURL):
        prefix = output.key if not output.key or output.key.endswith("/") else output.key + "/"
        return output.child(prefix + relative)
    parts = relative.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise OutputError(
            "its key cannot be mirrored as a local path (an empty, '.' or '..' part): not written", path=url
        )
    return output.joinpath(*parts)


def stage_object(
    job: ObjectJob, *, models: DetectionModels, policy: Policy, on_frame: FrameCallback | None = None
) -> StagedResult:
    """Reads an object into the work folder and anonymizes it there up to its write back (``core.stage_file`` for an
    object). Never raises for a problem with this one object.

    Returns:
        The object's result (paths the URLs; a shard's or table's members ``URL#MEMBER``) and, when there is
        something to write, the staged output with the ``PendingUpload`` that writes it.
    """
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    url = job.source
    local = _local_copy_path(job.work_folder, url)
    try:
        read = job.store.download(url, local)
    except EffaceError as exc:
        local.unlink(missing_ok=True)
        return StagedResult(results.failed(url, exc, mode=job.mode, started_at=started_at))
    try:
        done = _stage_local(job, local, read_sha256=read.sha256, models=models, policy=policy, on_frame=on_frame)
    except BaseException:
        local.unlink(missing_ok=True)
        raise
    details = {"etag_read": read.etag, "version_read": read.version_id, "size_bytes": read.size_bytes}
    result = _as_object(done.result, job, local, started_at=started_at, t0=t0, details=details)
    members = tuple(_as_object(member, job, local, started_at=None, t0=None, details={}) for member in done.members)
    upload = _upload_for(job, done, local, read.etag, read.version_id)
    if upload is None or upload.source_copy is None:
        local.unlink(missing_ok=True)  # the original's copy: not kept a moment longer than needed
    return dataclasses.replace(done, result=result, members=members, upload=upload, source_sha256=read.sha256)


def _stage_local(
    job: ObjectJob,
    local: Path,
    *,
    read_sha256: str,
    models: DetectionModels,
    policy: Policy,
    on_frame: FrameCallback | None,
) -> StagedResult:
    """The object's local copy, sniffed and anonymized as a file (in place on the copy, or into a local output)."""
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    mode = job.mode
    if mode is WriteMode.IN_PLACE and read_sha256 in job.done_sha256:
        return StagedResult(
            results.skipped(
                local, mode=mode, output_path=local, started_at=started_at, duration_s=time.perf_counter() - t0
            )
        )
    name = Path(job.source.name or "object")
    sniffed = sniff_file(local)
    kind = sniffed.kind or claimed_kind(name)
    if kind is None:
        reason = sniffed.format_name or "content not recognised as a picture or video"
        return StagedResult(results.not_media(local, mode=mode, reason=reason))
    refused = refusal(sniffed, name)
    if refused is not None:
        return StagedResult(results.failed(local, UnsupportedFormatError(refused, path=local), mode=mode))
    if isinstance(job.destination, Path):
        inner = FileJob(source=local, destination=job.destination, kind=kind, done_sha256=job.done_sha256)
    elif job.destination is None:
        inner = FileJob(source=local, destination=None, kind=kind)
    else:
        inner = FileJob(source=local, destination=local, kind=kind)
        if job.destination != job.source and job.done_sha256:
            current = job.store.sha256(job.destination)
            if current is not None and current in job.done_sha256:
                duration_s = time.perf_counter() - t0
                return StagedResult(
                    results.skipped(local, mode=mode, output_path=local, started_at=started_at, duration_s=duration_s)
                )
    return stage_file(inner, models=models, policy=policy, on_frame=on_frame)


def _local_copy_path(folder: Path, url: ObjectURL) -> Path:
    match = _SUFFIX.search(url.name)
    fd, name = tempfile.mkstemp(prefix="object-", suffix=match.group(0).lower() if match else "", dir=folder)
    os.close(fd)
    os.unlink(name)  # the download creates it (exclusively)
    return Path(name)


def _as_object(
    result: AnonymizationResult,
    job: ObjectJob,
    local: Path,
    *,
    started_at: datetime | None,
    t0: float | None,
    details: Mapping[str, object],
) -> AnonymizationResult:
    """A result about the local copy (or one of its members) restated about the object."""
    path = _object_location(result.path, job.source, local)
    output = None if result.output_path is None else _object_location(result.output_path, job.destination, local)
    if result.outcome is Outcome.SKIPPED:
        output = job.destination
    message = result.error_message
    return dataclasses.replace(
        result,
        path=path,
        output_path=output,
        mode=job.mode,
        details={**result.details, **details},
        started_at=started_at if started_at is not None else result.started_at,
        duration_s=time.perf_counter() - t0 if t0 is not None else result.duration_s,
        error_message=message.replace(str(local), str(job.source)) if message is not None else None,
    )


def _object_location(location: Location | None, base: Location | None, local: Path) -> Location | None:
    """``local`` (or ``local#member``) as ``base`` (or ``base#member``); any other location as it is."""
    if location is None or base is None:
        return location
    text = os.fspath(location)
    if text != str(local) and not text.startswith(f"{local}#"):
        return location
    rest = text[len(str(local)) :]
    if isinstance(base, ObjectURL):
        return base.child(base.key + rest)
    return Path(f"{base}{rest}")


def _upload_for(
    job: ObjectJob, done: StagedResult, local: Path, etag: str, version_id: str | None
) -> PendingUpload | None:
    """What the run is to write: the staged output; to an output object, the source as it is when it needs no
    rewrite; nothing in a dry run, on a failure, for a local output (staged beside it as any file) or for an object
    left as it was in place."""
    destination = job.destination
    if not isinstance(destination, ObjectURL) or done.result.outcome in {Outcome.ERROR, Outcome.SKIPPED}:
        return None
    if done.result.outcome is Outcome.NOT_MEDIA:
        return None
    in_place = destination == job.source
    if done.staged is not None:
        return PendingUpload(
            job.store,
            destination,
            done.staged.temp_path,
            if_match=etag if in_place else None,
            version_read=version_id if in_place else None,
        )
    if in_place:
        return None
    return PendingUpload(job.store, destination, local, if_match=None, version_read=None, source_copy=local)


def discard_upload(done: StagedResult) -> None:
    """Deletes what an object's result holds in the work folder (its staged output, its source's copy)."""
    if done.upload is not None and done.upload.host is not None:
        done.upload.host.discard(dataclasses.replace(done, upload=dataclasses.replace(done.upload, host=None)))
        return
    if done.staged is not None:
        discard(done.staged)
    if done.upload is not None:
        done.upload.local_path.unlink(missing_ok=True)
        if done.upload.source_copy is not None:
            done.upload.source_copy.unlink(missing_ok=True)


def push(upload: PendingUpload) -> dict[str, object]:
    """Writes an object's output and deletes the versions that hold its original (see the module docstring).

    Returns:
        What was done, for the audit row: the version written, the versions deleted, the parts.

    Raises:
        SourceChangedError: the object changed since it was read; nothing written.
        OutputError: the write failed; nothing written.
        VersionsLeftError: written, but versions holding the original could not be deleted (they are named).
    """
    if upload.host is not None:
        return upload.host.push(dataclasses.replace(upload, host=None))
    written = upload.store.upload(upload.target, upload.local_path, if_match=upload.if_match)
    facts: dict[str, object] = {"version_written": written.version_id, "upload_parts": written.parts}
    if upload.if_match is None:
        return facts  # a new object in an output location: no original under it
    deleted = delete_earlier_versions(upload.store, upload.target, written=written.version_id, read=upload.version_read)
    facts["deleted_versions"] = deleted
    return facts


def delete_earlier_versions(
    store: S3Store, url: ObjectURL, *, written: str | None, read: str | None = None
) -> list[str]:
    """Deletes every version of ``url`` older than the one written (``written``; None: the latest), each holding an
    image efface did not anonymize, and returns their ids. Given the version ``read``, it is that one and every
    version listed after it or last modified no later than it, whatever the listing's order of versions written
    within the same second (never the one written).

    Raises:
        VersionsLeftError: some could not be deleted, or the versions could not be listed; the message names them.
    """
    try:
        versions = store.versions(url)
    except EffaceError as exc:
        raise VersionsLeftError(
            f"written, but its versions cannot be listed ({exc.message}): earlier versions may still hold the "
            "original; give the credentials s3:ListBucketVersions and s3:DeleteObjectVersion, or check by hand",
            path=url,
        ) from exc
    earlier = _holding_original(versions, written=written, read=read)
    deleted: list[str] = []
    left: list[str] = []
    reason = ""
    for version in earlier:
        try:
            store.delete_version(url, version.version_id)
        except EffaceError as exc:
            left.append(version.version_id)
            reason = exc.message
            continue
        deleted.append(version.version_id)
    if left:
        raise VersionsLeftError(
            f"anonymized, but {len(left)} earlier version(s) still hold the original and could not be deleted "
            f"({reason}): {', '.join(left)}; delete them (s3:DeleteObjectVersion) or anonymize from an account "
            "that may",
            path=url,
        )
    return deleted


def _holding_original(versions: list[StoredVersion], *, written: str | None, read: str | None) -> list[StoredVersion]:
    """The versions that hold the original: the one read and those older than it (see ``delete_earlier_versions``);
    without a version read (or once it is gone), those listed after the one written."""
    index = next((i for i, v in enumerate(versions) if read is not None and v.version_id == read), None)
    if index is None or read in (None, "null"):
        return _older_than(versions, written)
    read_at = versions[index].last_modified
    return [
        version
        for position, version in enumerate(versions)
        if version.version_id != written
        and (
            position >= index
            or (read_at is not None and version.last_modified is not None and version.last_modified <= read_at)
        )
    ]


def _older_than(versions: list[StoredVersion], written: str | None) -> list[StoredVersion]:
    """The versions listed after the one written (the listing is newest first); a version written later by someone
    else, listed before it, is not efface's to delete."""
    if written is None or written == "null":
        written_index = next((i for i, v in enumerate(versions) if v.is_latest), None)
        if written is None and written_index is None:
            return []
        if written_index is None:
            written_index = next((i for i, v in enumerate(versions) if v.version_id == "null"), 0)
    else:
        written_index = next((i for i, v in enumerate(versions) if v.version_id == written), None)
        if written_index is None:
            raise VersionsLeftError(
                f"written as version {written}, which the store does not list: cannot tell which versions hold "
                "the original",
                path=None,
            )
    return versions[written_index + 1 :]


def settle_object(job: ObjectJob, *, since: datetime) -> str | None:
    """For a replace an earlier run left unconfirmed: aborts its unfinished uploads in parts (started since it
    recorded its intent) and returns the object's sha256 now (None: gone)."""
    target = job.destination
    if not isinstance(target, ObjectURL):
        return None
    for upload_id, initiated in job.store.unfinished_uploads(target):
        if initiated is None or initiated >= since:
            job.store.abort_upload(target, upload_id)
            logger.warning("%s: aborted the unfinished upload %s of an interrupted run", target, upload_id)
    return job.store.sha256(target)
