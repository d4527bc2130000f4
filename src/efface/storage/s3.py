"""S3 and S3-compatible object stores, through s3fs (fsspec's S3 filesystem) and its botocore client.

What efface needs of a store that a file system gives for free, and how it is had here:

- **An atomic replace** for readers: an S3 PUT is one (a reader sees the old object or the new one, never a mix).
- **Not overwriting a change**: the PUT carries ``If-Match`` with the ETag of the object as it was read, so an
  object rewritten meanwhile is not overwritten with the anonymized old content (412, ``SourceChangedError``).
  Outputs of ``part_bytes`` or more go up in parts, the condition on the completing request (and checked by a HEAD
  just before it, for servers that ignore it there); an upload that does not complete is aborted.
- **No original kept**: in a bucket that keeps versions, the version read still holds the original after the PUT.
  ``earlier_versions`` lists every version older than the one written, which the caller deletes by version id.

Credentials and the endpoint come from where botocore looks (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, the config
and credentials files, instance roles; ``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3`` for an S3-compatible
server); ``options`` go to ``s3fs.S3FileSystem`` as they are (``--storage-option K=V``). Every call is made through
s3fs's client on its event loop; every error is translated here into efface's (``_translated``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efface.errors import (
    ConfigurationError,
    EffaceError,
    InputNotFoundError,
    OutputError,
    SourceChangedError,
    UnreadableFileError,
)
from efface.records import ObjectURL

if TYPE_CHECKING:
    from s3fs import S3FileSystem

__all__ = ["ObjectInfo", "ReadObject", "S3Store", "StoredVersion", "Written", "open_store_for"]

logger = logging.getLogger(__name__)

SCHEMES = frozenset({"s3", "s3a"})
# One PUT holds up to 5 GiB; above this, parts (each at least 5 MiB but the last, at most 10,000 of them).
DEFAULT_PART_BYTES = 64 << 20
_CHUNK_BYTES = 1 << 20
_PAGE_KEYS = 1000
# The codes that mean: the object (or bucket) is not there, the caller may not, the condition did not hold.
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchVersion"})
_DENIED = frozenset(
    {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
_CHANGED = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object as a listing shows it.

    Attributes:
        url: where it is.
        size_bytes: its size.
        etag: its ETag as the store gives it (quotes included).
    """

    url: ObjectURL
    size_bytes: int
    etag: str


@dataclass(frozen=True, slots=True)
class ReadObject:
    """An object as it was read, in one GET: what a conditional write and the version clean-up go by.

    Attributes:
        etag: the ETag of the content read (quotes included).
        version_id: the version read, where the bucket keeps versions (None, or ``"null"``, where it does not).
        size_bytes: bytes read.
        sha256: of the content read.
    """

    etag: str
    version_id: str | None
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Written:
    """What a PUT (or a completed upload in parts) made.

    Attributes:
        etag: the new object's ETag.
        version_id: its version, where the bucket keeps versions.
        parts: how many parts it went up in (1: a single PUT).
    """

    etag: str | None
    version_id: str | None
    parts: int


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of an object (``list_object_versions``).

    Attributes:
        version_id: its id (``"null"`` for the version written while versioning was off or suspended).
        is_latest: whether it is the current version.
        last_modified: when it was written.
    """

    version_id: str
    is_latest: bool
    last_modified: datetime | None


def open_store_for(url: ObjectURL, options: Mapping[str, object]) -> S3Store:
    """The store that holds ``url``.

    Raises:
        ConfigurationError: efface cannot write to this kind of store safely (only S3-compatible stores are
            supported: they make the write conditional and the replaced versions deletable), or the S3 extra is not
            installed.
    """
    if url.scheme not in SCHEMES:
        raise ConfigurationError(
            f"{url.scheme}:// is not supported: efface reads local files and folders, and S3-compatible object "
            "stores (s3://), where it can make each write conditional and delete the versions that hold the original; "
            "save a stream or a download to a file first"
        )
    return S3Store(options)


_FILESYSTEMS: dict[tuple[int, str], S3FileSystem] = {}
_FILESYSTEMS_LOCK = threading.Lock()


class S3Store:
    """One S3 endpoint and its credentials. Pickles without its client (a process pool builds its own).

    Args:
        options: keyword arguments of ``s3fs.S3FileSystem`` (``endpoint_url``, ``key``, ``secret``, ``anon``, ...).
        part_bytes: outputs of this size or more go up in parts of this size.
    """

    def __init__(self, options: Mapping[str, object] | None = None, *, part_bytes: int = DEFAULT_PART_BYTES) -> None:
        if part_bytes < 5 << 20:
            raise ValueError(f"part_bytes must be at least 5 MiB (S3's smallest part), got {part_bytes}")
        self._options = dict(options or {})
        self.part_bytes = part_bytes
        self._fs: S3FileSystem | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"options": self._options, "part_bytes": self.part_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._options = state["options"]
        self.part_bytes = state["part_bytes"]
        self._fs = None

    @property
    def _filesystem(self) -> S3FileSystem:
        if self._fs is None:
            try:
                import s3fs
            except ImportError as exc:
                raise ConfigurationError("s3:// needs the S3 extra: pip install 'efface[s3]' (s3fs)") from exc
            # One instance per process and options (its client is slow to build: a store unpickled for every job
            # of a pool or a Ray actor would otherwise build one per object), never s3fs's own cache, which a forked
            # process inherits with the parent's event loop.
            # The AWS environment is part of the key: credentials and endpoint are read from it when a client is built.
            aws = sorted((name, value) for name, value in os.environ.items() if name.startswith("AWS_"))
            key = (os.getpid(), json.dumps([self._options, aws], sort_keys=True, default=str))
            with _FILESYSTEMS_LOCK:
                filesystem = _FILESYSTEMS.get(key)
                if filesystem is None:
                    filesystem = s3fs.S3FileSystem(skip_instance_cache=True, **self._options)
                    _FILESYSTEMS[key] = filesystem
            self._fs = filesystem
        return self._fs

    def _call(self, method: str, url: ObjectURL, *, doing: str, **kwargs: object) -> dict[str, Any]:
        """One S3 call, made on s3fs's loop, its errors translated."""
        from fsspec.asyn import sync

        fs = self._filesystem
        try:
            response: dict[str, Any] = sync(fs.loop, fs._call_s3, method, **kwargs)
        except EffaceError:
            raise
        except Exception as exc:
            raise _translated(exc, url, doing=doing) from exc
        return response

    def walk(self, url: ObjectURL) -> Iterator[ObjectInfo]:
        """The objects at ``url``: the object itself when its key names one, else every object under the key as a
        prefix (``photos`` and ``photos/`` both list ``photos/...``), in key order, a page at a time.

        Raises:
            InputNotFoundError: no such bucket, or nothing under the prefix.
            UnreadableFileError: the listing was refused (credentials, permissions).
        """
        if url.key and not url.key.endswith("/"):
            head = self.head(url)
            if head is not None:
                yield head
                return
        prefix = url.key if not url.key or url.key.endswith("/") else url.key + "/"
        token: str | None = None
        found = False
        while True:
            page = {"ContinuationToken": token} if token else {}
            listing = self._call(
                "list_objects_v2", url, doing="list", Bucket=url.bucket, Prefix=prefix, MaxKeys=_PAGE_KEYS, **page
            )
            for entry in listing.get("Contents", []):
                found = True
                yield ObjectInfo(url.child(entry["Key"]), int(entry.get("Size", 0)), str(entry.get("ETag", "")))
            token = listing.get("NextContinuationToken")
            if not listing.get("IsTruncated") or not token:
                break
        if not found:
            raise InputNotFoundError("no such object, and no objects under it as a prefix", path=url)

    def head(self, url: ObjectURL) -> ObjectInfo | None:
        """The object's size and ETag, or None when there is no such object."""
        try:
            response = self._call("head_object", url, doing="read", Bucket=url.bucket, Key=url.key)
        except InputNotFoundError:
            return None
        return ObjectInfo(url, int(response.get("ContentLength", 0)), str(response.get("ETag", "")))

    def download(self, url: ObjectURL, destination: Path) -> ReadObject:
        """Reads the object, in one GET, into ``destination`` (a new local file), a chunk at a time.

        Raises:
            InputNotFoundError: it is gone.
            UnreadableFileError: the read was refused or broke off.
        """
        from fsspec.asyn import sync

        fs = self._filesystem

        async def read() -> ReadObject:
            response = await fs._call_s3("get_object", Bucket=url.bucket, Key=url.key)
            body = response["Body"]
            digest = hashlib.sha256()
            size = 0
            try:
                with destination.open("xb") as out:
                    while chunk := await body.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            finally:
                body.close()
            return ReadObject(str(response.get("ETag", "")), response.get("VersionId"), size, digest.hexdigest())

        try:
            read_object: ReadObject = sync(fs.loop, read)
        except EffaceError:
            raise
        except Exception as exc:
            raise _translated(exc, url, doing="read") from exc
        return read_object

    def upload(self, url: ObjectURL, source: Path, *, if_match: str | None) -> Written:
        """Writes the local file ``source`` as the object, replacing it atomically for readers.

        Args:
            url: the object to write.
            source: its new content.
            if_match: write only if the object's ETag is still this (as read); None writes unconditionally (a new
                object in an output location).

        Raises:
            SourceChangedError: the object changed since it was read (the condition failed): nothing was written.
            OutputError: the write was refused or failed; nothing was written (an upload in parts is aborted).
        """
        size = source.stat().st_size
        condition = {"IfMatch": if_match} if if_match else {}
        if size < self.part_bytes:
            body = source.read_bytes()
            response = self._call(
                "put_object", url, doing="write", Bucket=url.bucket, Key=url.key, Body=body, **condition
            )
            return Written(response.get("ETag"), response.get("VersionId"), parts=1)
        return self._upload_in_parts(url, source, condition=condition)

    def _upload_in_parts(self, url: ObjectURL, source: Path, *, condition: dict[str, str]) -> Written:
        started = self._call("create_multipart_upload", url, doing="write", Bucket=url.bucket, Key=url.key)
        upload_id = str(started["UploadId"])
        parts: list[dict[str, object]] = []
        try:
            with source.open("rb") as handle:
                while chunk := handle.read(self.part_bytes):
                    number = len(parts) + 1
                    part = self._call(
                        "upload_part",
                        url,
                        doing="write",
                        Bucket=url.bucket,
                        Key=url.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"PartNumber": number, "ETag": part["ETag"]})
            if condition:
                # Checked here too: some S3-compatible servers ignore If-Match on the completing request (moto does),
                # which leaves this check, made after the parts are up, as the last word there.
                current = self.head(url)
                if current is None or current.etag != condition["IfMatch"]:
                    raise SourceChangedError(
                        "the object changed since it was read: not overwritten, left as it now is", path=url
                    )
            response = self._call(
                "complete_multipart_upload",
                url,
                doing="write",
                Bucket=url.bucket,
                Key=url.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
        except BaseException:
            # Ctrl-C included: parts left behind are billed and, for a store that lists them, hold the content.
            self.abort_upload(url, upload_id)
            raise
        return Written(response.get("ETag"), response.get("VersionId"), parts=len(parts))

    def abort_upload(self, url: ObjectURL, upload_id: str) -> bool:
        """Aborts an upload in parts; False (logged) when the store refuses or it is gone already."""
        try:
            self._call("abort_multipart_upload", url, doing="write", Bucket=url.bucket, Key=url.key, UploadId=upload_id)
        except EffaceError as exc:
            logger.warning("%s: cannot abort the unfinished upload %s: %s", url, upload_id, exc.message)
            return False
        return True

    def unfinished_uploads(self, url: ObjectURL) -> list[tuple[str, datetime | None]]:
        """The uploads in parts of exactly this key that were started and neither completed nor aborted."""
        found: list[tuple[str, datetime | None]] = []
        markers: dict[str, object] = {}
        while True:
            listing = self._call(
                "list_multipart_uploads", url, doing="list", Bucket=url.bucket, Prefix=url.key, **markers
            )
            found += [
                (str(upload["UploadId"]), upload.get("Initiated"))
                for upload in listing.get("Uploads", [])
                if upload.get("Key") == url.key
            ]
            if not listing.get("IsTruncated"):
                return found
            markers = {"KeyMarker": listing.get("NextKeyMarker"), "UploadIdMarker": listing.get("NextUploadIdMarker")}

    def versions(self, url: ObjectURL) -> list[StoredVersion]:
        """Every version of exactly this key that holds content, newest first, as the store lists them (one,
        ``"null"``, in a bucket that never kept versions). Delete markers hold no content and are not listed.

        Raises:
            UnreadableFileError: the listing was refused.
        """
        found: list[StoredVersion] = []
        markers: dict[str, object] = {}
        while True:
            listing = self._call(
                "list_object_versions", url, doing="list versions of", Bucket=url.bucket, Prefix=url.key, **markers
            )
            found += [
                StoredVersion(
                    str(entry.get("VersionId", "null")), bool(entry.get("IsLatest")), entry.get("LastModified")
                )
                for entry in listing.get("Versions", [])
                if entry.get("Key") == url.key
            ]
            if not listing.get("IsTruncated"):
                return found
            markers = {
                "KeyMarker": listing.get("NextKeyMarker"),
                "VersionIdMarker": listing.get("NextVersionIdMarker"),
            }

    def delete_version(self, url: ObjectURL, version_id: str) -> None:
        """Deletes one version of the object for good (not a delete marker).

        Raises:
            OutputError: refused (no ``s3:DeleteObjectVersion`` permission) or failed.
        """
        self._call(
            "delete_object", url, doing="delete a version of", Bucket=url.bucket, Key=url.key, VersionId=version_id
        )

    def sha256(self, url: ObjectURL) -> str | None:
        """The current object's sha256 (read whole, a chunk at a time); None when there is no such object."""
        from fsspec.asyn import sync

        fs = self._filesystem

        async def digest() -> str:
            response = await fs._call_s3("get_object", Bucket=url.bucket, Key=url.key)
            body = response["Body"]
            hashed = hashlib.sha256()
            try:
                while chunk := await body.read(_CHUNK_BYTES):
                    hashed.update(chunk)
            finally:
                body.close()
            return hashed.hexdigest()

        try:
            found: str = sync(fs.loop, digest)
        except Exception as exc:
            error = _translated(exc, url, doing="read")
            if isinstance(error, InputNotFoundError):
                return None
            raise error from exc
        return found


def _code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (s3fs raises it as the cause of an ``OSError``)."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            code = error.get("Code") if isinstance(error, dict) else None
            if code:
                return str(code)
    if isinstance(exc, FileNotFoundError):
        return "NoSuchKey"
    if isinstance(exc, PermissionError):
        return "AccessDenied"
    return None


def _translated(exc: BaseException, url: ObjectURL, *, doing: str) -> EffaceError:
    """The efface error for a failed S3 call: one line, the store's code in it."""
    code = _code(exc)
    detail = f"{code}: {_message(exc)}" if code else _message(exc)
    if code in _NOT_FOUND:
        return InputNotFoundError(f"no such object or bucket ({detail})", path=url)
    if code in _CHANGED and doing == "write":
        return SourceChangedError(
            f"the object changed since it was read ({detail}): not overwritten, left as it now is", path=url
        )
    error_type: Callable[..., EffaceError] = (
        OutputError if doing in {"write", "delete a version of"} else UnreadableFileError
    )
    if code in _DENIED:
        return error_type(
            f"the store refused to {doing} it ({detail}): check the credentials and permissions", path=url
        )
    return error_type(f"cannot {doing} it: {detail}", path=url)


def _message(exc: BaseException) -> str:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    response = getattr(cause, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        message = response["Error"].get("Message")
        if message:
            return str(message).splitlines()[0]
    text = str(cause) or type(cause).__name__
    return text.splitlines()[0]
