"""WebDataset shards: a tar (or a gzipped tar) anonymized member by member, as one file of the run.

Every picture member is anonymized (``anonymize_bytes``), every video member through the video pipeline (by way
of a temporary file beside the shard's destination: that pipeline reads and writes files); every other member
(json, txt, cls, npy, ...) is kept byte for byte; names, order and metadata (mode, mtime, owner, pax headers) are
kept, only sizes change. The new shard is written to a temporary file beside its destination and staged
(``media.atomic``), so the audited run swaps it in as it swaps in any file, and a kill leaves only efface
temporaries that the next run sweeps.

Members are read one at a time with the standard ``tarfile`` module: at most one member is held in memory (a
picture or a video, to anonymize it; any other member is copied through in blocks). A member that cannot be
anonymized (a picture that does not decode, a format efface cannot write, a nested archive) fails the whole
shard, naming the member, and leaves it as it was; so does a truncated or corrupt archive, the end included
(``tarfile`` stops quietly at a damaged header, which would drop every member after it).
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import io
import logging
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO, Self, cast

from efface.detection.models import DetectionModels
from efface.errors import CorruptImageError, EffaceError, InputError, OutputError, UnsupportedFormatError
from efface.media.atomic import StagedFile, Stager, discard, stage_bytes
from efface.media.sniff import SNIFF_BYTES, UNSUPPORTED_SHARD_SUFFIXES, MediaKind, claimed_kind, sniff
from efface.pipeline import results
from efface.pipeline.core import (
    FileJob,
    Policy,
    StagedResult,
    _error_result,
    _is_done,
    _read_failure,
    _skipped,
    anonymize_part,
    video_detectors,
)
from efface.pipeline.rewrite import rewrite, staged_whole
from efface.records import AnonymizationResult, Outcome

__all__ = ["member_path", "stage_shard"]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_END_OF_ARCHIVE = tarfile.NUL * tarfile.BLOCKSIZE
_COPY_BYTES = 1 << 20
# What reading a damaged archive raises: tarfile's own errors, and gzip's and zlib's from a damaged stream.
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def member_path(shard: Path, name: str) -> Path:
    """The path a member is audited under: the shard's path, ``#``, the member's name."""
    return Path(f"{shard}#{name}")


@dataclass(frozen=True, slots=True)
class _Walked:
    """What a pass over a shard's members found.

    Attributes:
        members: one result per member, in order.
        is_changed: whether any member's bytes changed (an unchanged shard is not rewritten in place).
    """

    members: tuple[AnonymizationResult, ...]
    is_changed: bool


def stage_shard(job: FileJob, *, models: DetectionModels, policy: Policy) -> StagedResult:
    """Anonymizes a shard up to its replace (``core.stage_file`` for a shard). Never raises for a problem with it.

    Returns:
        The shard's result (``output_sha256`` the new shard's, ``details`` the member counts), its members'
        results, and the staged shard, or nothing staged when no member changed in place (the shard stays
        byte for byte), in a dry run, and on any failure (an error result naming the member; the shard untouched).
    """
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    is_gzip = False

    def run_pass(handle: BinaryIO, sink: BinaryIO | None) -> _Walked:
        nonlocal is_gzip
        is_gzip = handle.read(2) == _GZIP_MAGIC
        handle.seek(0)
        source = _reader(handle, job.source, is_gzip=is_gzip)
        if sink is None:
            return _walk(source, None, job, models=models, policy=policy)
        # No name and no time in the gzip header: the temporary's name is nobody's business.
        stream: BinaryIO | gzip.GzipFile = (
            gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) if is_gzip else sink
        )
        try:
            with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as out:
                return _walk(source, out, job, models=models, policy=policy)
        finally:
            if stream is not sink:
                stream.close()

    try:
        if _is_done(job, None):
            return StagedResult(_skipped(job, started_at=started_at, t0=t0))
        if job.source.name.lower().endswith(UNSUPPORTED_SHARD_SUFFIXES):
            raise UnsupportedFormatError(
                "a tar compressed other than with gzip: recompress it as .tar or .tar.gz to anonymize it",
                path=job.source,
            )
        done = rewrite(job, run_pass)
    except Exception as exc:
        if not isinstance(exc, EffaceError):  # a bug must fail this shard, not the whole batch
            logger.exception("unexpected error on %s", job.source)
        return StagedResult(_error_result(job, exc, started_at=started_at, t0=t0, processed=None))
    members = done.found.members
    videos = sum(1 for row in members if row.video is not None)
    pictures = sum(1 for row in members if row.image_format is not None) - videos
    return staged_whole(
        job,
        done,
        members,
        image_format="tar+gzip" if is_gzip else "tar",
        started_at=started_at,
        t0=t0,
        details={"members": len(members), "pictures": pictures, "videos": videos},
    )


def _reader(handle: BinaryIO, shard: Path, *, is_gzip: bool) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=handle, mode="r:gz" if is_gzip else "r:", tarinfo=_recording_tarinfo())
    except _DAMAGED as exc:
        raise CorruptImageError(f"not a valid {'gzipped ' if is_gzip else ''}tar shard: {exc}", path=shard) from exc


def _recording_tarinfo() -> type[tarfile.TarInfo]:
    """A TarInfo class that keeps the last header block read: where ``tarfile`` stops, it must be the end of
    the archive (a block of zeros), not a damaged or missing header, which ``tarfile`` takes for the end."""

    class Recording(tarfile.TarInfo):
        last_block: bytes | bytearray = b""

        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            cls.last_block = buf
            return super().frombuf(buf, encoding, errors)

    return Recording


def _walk(
    source: tarfile.TarFile, out: tarfile.TarFile | None, job: FileJob, *, models: DetectionModels, policy: Policy
) -> _Walked:
    """Every member of ``source`` in order: anonymized or kept, written to ``out`` (None: a dry run)."""
    members: list[AnonymizationResult] = []
    is_changed = False
    for info in _members(source, job.source):
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        name = info.name
        path = member_path(job.source, name)
        output_path = member_path(job.destination, name) if job.destination is not None else None
        if not info.isreg():
            if out is not None:
                _add(out, _copied_info(info, size=info.size), None, job)
            members.append(results.not_media(path, mode=job.mode, reason=f"{_entry_kind(info)}, kept as it is"))
            continue
        if info.issparse():
            raise UnsupportedFormatError(f"member {name}: sparse members are not supported", path=job.source)
        data = _extract(source, info, job.source)
        head = _read_exactly(data, SNIFF_BYTES, name=name, shard=job.source)
        sniffed = sniff(head)
        kind = sniffed.kind or claimed_kind(Path(name))
        if kind is MediaKind.SHARD:
            raise UnsupportedFormatError(f"member {name}: archives inside a shard are not supported", path=job.source)
        if kind is MediaKind.IMAGE or kind is MediaKind.VIDEO:
            content = head + _read_exactly(data, info.size - len(head), name=name, shard=job.source)
            anonymize = _picture if kind is MediaKind.IMAGE else _video
            row, output = anonymize(content, path, name, job, models=models, policy=policy, is_written=out is not None)
            if out is not None:
                _add(out, _copied_info(info, size=len(output)), io.BytesIO(output), job)
                is_changed = is_changed or output != content
                row = _with(row, output_path=output_path, output_sha256=hashlib.sha256(output).hexdigest())
        else:
            reason = f"{sniffed.format_name or 'not a picture'}, kept byte for byte"
            row = results.not_media(path, mode=job.mode, reason=reason)
            if out is not None:
                hashing = _Hashing(head, data)
                _add(out, _copied_info(info, size=info.size), cast(IO[bytes], hashing), job)
                row = _with(row, output_path=output_path, output_sha256=hashing.digest.hexdigest())
        members.append(_with(row, started_at=started_at, duration_s=time.perf_counter() - t0))
        # One member at a time: tarfile keeps every header it read, which a shard of millions would pile up.
        # (``members`` is tarfile's list of them, not in its stubs; ``getmembers`` would read the whole archive.)
        vars(source)["members"].clear()
    _check_end(source, job.source)
    return _Walked(members=tuple(members), is_changed=is_changed)


def _members(source: tarfile.TarFile, shard: Path) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            info = source.next()
        except _DAMAGED as exc:
            raise CorruptImageError(f"damaged tar shard: {exc}", path=shard) from exc
        except OSError as exc:
            raise _read_failure(shard, exc) from exc
        if info is None:
            return
        yield info


def _check_end(source: tarfile.TarFile, shard: Path) -> None:
    last = getattr(source.tarinfo, "last_block", None)  # the class ``_recording_tarinfo`` made
    if last != _END_OF_ARCHIVE:
        found = "it ends without one (truncated)" if not last else "a damaged member header is there"
        raise CorruptImageError(
            f"damaged tar shard: no end-of-archive block at byte {source.offset}: {found}", path=shard
        )


def _extract(source: tarfile.TarFile, info: tarfile.TarInfo, shard: Path) -> IO[bytes]:
    try:
        data = source.extractfile(info)
    except _DAMAGED as exc:
        raise CorruptImageError(f"member {info.name}: damaged tar shard: {exc}", path=shard) from exc
    if data is None:  # pragma: no cover - a regular member always has data
        raise CorruptImageError(f"member {info.name}: no data", path=shard)
    return data


def _read_exactly(data: IO[bytes], size: int, *, name: str, shard: Path) -> bytes:
    """Up to ``size`` bytes of a member (fewer only at its end); a damaged archive fails aloud."""
    try:
        return data.read(max(size, 0))
    except _DAMAGED as exc:
        raise CorruptImageError(f"member {name}: damaged tar shard: {exc}", path=shard) from exc
    except OSError as exc:
        raise _read_failure(shard, exc) from exc


def _picture(
    content: bytes,
    path: Path,
    name: str,
    job: FileJob,
    *,
    models: DetectionModels,
    policy: Policy,
    is_written: bool,
) -> tuple[AnonymizationResult, bytes]:
    return anonymize_part(
        content,
        path=path,
        label=f"member {name}",
        name=name,
        container=job.source,
        mode=job.mode,
        models=models,
        policy=policy,
        write=is_written,
    )


def _video(
    content: bytes,
    path: Path,
    name: str,
    job: FileJob,
    *,
    models: DetectionModels,
    policy: Policy,
    is_written: bool,
) -> tuple[AnonymizationResult, bytes]:
    """A video member's result and its new bytes, through the video pipeline, which reads and writes files: the
    member goes to an efface temporary beside the shard's destination (locked while it lives, deleted once read
    back; a kill leaves only temporaries, which the next run sweeps), and so does its output."""
    from efface.media.video import open_video
    from efface.pipeline.video import anonymize_video, scan_video

    stand_in = (job.destination or job.source).parent / (Path(name).name or "member")
    detect, detect_light = video_detectors(models, policy)
    member = stage_bytes(stand_in, content)
    stager = Stager()
    try:
        with open_video(member.temp_path, options=policy.video) as video:
            info = video.info
            if is_written:
                stats = anonymize_video(
                    video,
                    stand_in,
                    detect=detect,
                    detect_light=detect_light,
                    anonymize=policy.anonymizer.apply,
                    tracking=policy.tracking,
                    options=policy.video,
                    stager=stager,
                )
            else:
                stats = scan_video(video, detect=detect, detect_light=detect_light, tracking=policy.tracking)
        output = _read_back(stager.staged, stand_in) if stager.staged is not None else content
    except InputError as exc:
        raise type(exc)(f"member {name}: {exc.message}", path=job.source) from exc
    finally:
        discard(member)
        if stager.staged is not None:
            discard(stager.staged)
    row = AnonymizationResult(
        path=path,
        outcome=Outcome.of_processing(job.mode, faces_anonymized=stats.regions),
        mode=job.mode,
        started_at=datetime.now(UTC),
        duration_s=0.0,
        faces_anonymized=stats.detections if is_written else 0,
        image_format=f"video/{info.codec}",
        resolution_wh=info.resolution_wh,
        details={"rewritten": is_written, "dropped_streams": list(stats.dropped_streams)},
        video=stats,
        uncertainty=detect.uncertainty(stats),
    )
    return row, output


def _read_back(staged: StagedFile, stand_in: Path) -> bytes:
    try:
        return staged.temp_path.read_bytes()
    except OSError as exc:
        raise OutputError(f"cannot read back: {exc.strerror or exc}", path=stand_in) from exc


def _with(row: AnonymizationResult, **changes: object) -> AnonymizationResult:
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


def _copied_info(info: tarfile.TarInfo, *, size: int) -> tarfile.TarInfo:
    """The member's header as it was (name, mode, mtime, owner, pax headers), with its new size."""
    copied = copy.copy(info)
    copied.size = size
    # tarfile writes a pax size only where the field cannot hold it; a stale one would lie about the data.
    copied.pax_headers = {key: value for key, value in info.pax_headers.items() if key != "size"}
    return copied


def _add(out: tarfile.TarFile, info: tarfile.TarInfo, data: IO[bytes] | None, job: FileJob) -> None:
    try:
        out.addfile(info, data)
    except _DAMAGED as exc:  # reading the source member as it is copied
        raise CorruptImageError(f"member {info.name}: damaged tar shard: {exc}", path=job.source) from exc


class _Hashing:
    """A member's data read through, its head first (read already, to sniff it), hashed as it goes."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._head[:size] if size >= 0 else self._head
        self._head = self._head[len(chunk) :]
        if size < 0:
            chunk += self._rest.read()
        elif len(chunk) < size:
            chunk += self._rest.read(size - len(chunk))
        self.digest.update(chunk)
        return chunk


def _entry_kind(info: tarfile.TarInfo) -> str:
    if info.isdir():
        return "a folder entry"
    if info.issym() or info.islnk():
        return "a link"
    return "a special entry"
