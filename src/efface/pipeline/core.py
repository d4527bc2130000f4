"""The one orchestration path: one file in, one ``AnonymizationResult`` out.

The CLI, the HTTP service and the Ray workers all call ``stage_file`` or ``anonymize_file`` (or
``anonymize_bytes`` for content that never touches the disk); nothing else decodes, detects, transforms and
writes. ``stage_file`` stops short of the replace: the output lies complete beside its destination, and an
audited run swaps it in once it has recorded that it is about to (``run.py``); ``anonymize_file`` swaps it in
at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from efface.detection.base import FaceDetector, detect_with_faint
from efface.detection.models import DetectionModels
from efface.detection.multiscale import MultiScaleSpec
from efface.detection.presets import DEFAULT_PRESET, light_pass_spec, preset_spec
from efface.detection.tracking import TrackingSpec
from efface.digests import file_sha256
from efface.errors import (
    EffaceError,
    InputError,
    InputNotFoundError,
    OutputError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from efface.media.atomic import Original, StagedFile, Stager, claim, discard, original_of, stage_bytes
from efface.media.images import CodecOptions, DecodedImage, decode_image, encode_image
from efface.media.sniff import SNIFF_BYTES, MediaKind, claimed_kind, refusal, sniff
from efface.media.video import VideoOptions, is_video_path
from efface.pipeline import results
from efface.recognition.selection import IdentityCounts, Selection, choose_faces
from efface.records import (
    FAINT_SIZES,
    AnonymizationResult,
    Face,
    Location,
    Outcome,
    TransformSpec,
    Uncertainty,
    VideoStats,
    WriteMode,
    faint_size,
)
from efface.transforms.core import Anonymizer

if TYPE_CHECKING:
    from efface.media.video import VideoInfo
    from efface.pipeline.objects import ObjectJob, PendingUpload
    from efface.pipeline.video import Detect, FrameCallback

__all__ = [
    "FaintTally",
    "FileJob",
    "Policy",
    "Processed",
    "StagedResult",
    "anonymize_bytes",
    "anonymize_file",
    "anonymize_part",
    "stage_file",
    "video_detectors",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FileJob:
    """One file to anonymize.

    Attributes:
        source: the file to read (absolute).
        destination: where the anonymized file goes: ``source`` itself in place, a path in the output
            tree, or None for a dry run.
        done_sha256: outputs that earlier runs with the same settings recorded for this file at its ``target``:
            when the target (the file itself in place, the one in the output tree) hashes to one of them, it is
            done and is skipped, not anonymized twice.
        dry_run_target: in a dry run, where the same command without ``--dry-run`` writes, so that the dry run
            skips what that run skips (None otherwise).
        hard_links: in place, the file's other names (hard links, all of them in the walked paths): each is
            replaced with the anonymized file too, so that no name keeps the original.
        kind: a picture, a video or a shard, as the plan sniffed its content; None to go by the file's name.
    """

    source: Path
    destination: Path | None
    done_sha256: frozenset[str] = frozenset()
    dry_run_target: Path | None = None
    hard_links: tuple[Path, ...] = ()
    kind: MediaKind | None = None

    @property
    def target(self) -> Path | None:
        """Where the command writes this file (the destination; for a dry run, where it would write)."""
        return self.destination if self.destination is not None else self.dry_run_target

    @property
    def is_video(self) -> bool:
        return self.kind is MediaKind.VIDEO if self.kind is not None else is_video_path(self.source)

    @property
    def is_shard(self) -> bool:
        return self.kind is MediaKind.SHARD if self.kind is not None else claimed_kind(self.source) is MediaKind.SHARD

    @property
    def is_table(self) -> bool:
        return self.kind is MediaKind.TABLE if self.kind is not None else claimed_kind(self.source) is MediaKind.TABLE

    @property
    def mode(self) -> WriteMode:
        if self.destination is None:
            return WriteMode.DRY_RUN
        return WriteMode.IN_PLACE if self.destination == self.source else WriteMode.OUTPUT_DIR


@dataclass(frozen=True, slots=True)
class Policy:
    """How files are anonymized: cheap settings, built per option set (a CLI run, each HTTP request) and used with
    a process's loaded models. ``Policy()`` is efface's defaults; ``build_policy(settings)`` makes one from settings.

    Attributes:
        detection: the detector passes and thresholds (run on the process's ``DetectionModels``).
        anonymizer: transforms faces (strength already checked).
        codec: decoding limits and encoding choices for images.
        video: encoding choices and limits for videos.
        tracking: how faces are carried between video frames.
        image_columns: in a table, the columns that hold pictures (every cell of theirs must be one); empty: those
            typed as ``datasets`` images, and binary columns by their cells' content (``pipeline.tables``).
        identity: selective anonymization (``--keep-person``, ``--only-person``): whose faces are left visible;
            None: every face is anonymized.
    """

    detection: MultiScaleSpec = field(default_factory=lambda: preset_spec(DEFAULT_PRESET))
    anonymizer: Anonymizer = field(default_factory=lambda: Anonymizer(TransformSpec()))
    codec: CodecOptions = field(default_factory=CodecOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    image_columns: tuple[str, ...] = ()
    identity: Selection | None = None


@dataclass(frozen=True, slots=True)
class Processed:
    """The result of anonymizing decoded content.

    Attributes:
        decoded: the source image.
        faces: what the detector found.
        faces_anonymized: how many face regions were changed.
        data: the encoded output, or None when the source needs no rewrite (no face, and the file holds nothing
            but the image efface checked and would write: ``DecodedImage.needs_rewrite``).
        faint: the candidates below the operating threshold, not anonymized (``detect_with_faint``).
        identity: under selective anonymization, how its faces were decided (None: every face anonymized).
    """

    decoded: DecodedImage
    faces: tuple[Face, ...]
    faces_anonymized: int
    data: bytes | None
    faint: tuple[Face, ...] = ()
    identity: IdentityCounts | None = None

    @property
    def details(self) -> dict[str, object]:
        """What the audit row's details say of it: whether it was rewritten, the decoder's notes, the identities."""
        identity = {"identity": self.identity.as_dict()} if self.identity is not None else {}
        return {"rewritten": self.data is not None, **self.decoded.audit_details, **identity}


@dataclass(frozen=True, slots=True)
class StagedResult:
    """A file anonymized up to its replace.

    Attributes:
        result: what is audited once the output is in place (its ``output_sha256`` is the staged output's).
        staged: the complete output beside the destination, still to be swapped in (``media.atomic.claim``,
            then ``commit``); None when there is nothing to write (a dry run, a failure, a skipped file, an
            image left as it was).
        source_sha256: the source's sha256 as it was read, when an output is staged (a later run tells by it
            whether a replace that was never confirmed happened).
        members: for a shard, one result per member (path ``SHARD#MEMBER``), for a table one per picture cell
            (``TABLE#row=N,col=C``), audited with ``result`` once the file is in place; empty for any other file,
            and for one that failed.
        upload: for an object, what the run writes back to the store (``objects.push``): ``staged`` is then the
            output in the run's local work folder, not beside a destination of its own.
    """

    result: AnonymizationResult
    staged: StagedFile | None = None
    source_sha256: str | None = None
    members: tuple[AnonymizationResult, ...] = ()
    upload: PendingUpload | None = None

    @property
    def rows(self) -> list[AnonymizationResult]:
        """The audit rows of the file once in place: its members' (a shard's), then its own."""
        return [*self.members, self.result]

    def failed(self, error: EffaceError) -> AnonymizationResult:
        """The file's result when its staged output could not be swapped in (nothing was replaced)."""
        result = self.result
        return results.failed(
            result.path,
            error,
            mode=result.mode,
            started_at=result.started_at,
            duration_s=result.duration_s,
            faces=result.faces,
            image_format=result.image_format,
            resolution_wh=result.resolution_wh,
        )


def anonymize_bytes(
    content: bytes, *, name: Path, models: DetectionModels, policy: Policy, write: bool = True
) -> Processed:
    """Decodes, detects, anonymizes and re-encodes an image held in memory.

    Args:
        content: the image file's bytes.
        name: its name (for the format guess in errors and for messages).
        models: the process's loaded detection models.
        policy: detection spec, anonymizer and codec options.
        write: encode the output; False for a dry run.

    Raises:
        InputError: the content is not an image efface can anonymize.
        ModelError: the detector failed.
    """
    decoded = decode_image(content, path=name, options=policy.codec)
    faces, faint = detect_with_faint(models.detector(policy.detection), decoded.pixels)
    chosen, identity = faces, None
    if policy.identity is not None:
        selected = choose_faces(decoded.pixels, faces, selection=policy.identity)
        chosen, identity = selected.anonymized, selected.counts
    pixels: np.ndarray = decoded.pixels
    anonymized = 0
    if chosen and write:
        pixels, anonymized = policy.anonymizer.apply(decoded.pixels, chosen)
    needs_rewrite = anonymized > 0 or decoded.needs_rewrite
    data = encode_image(decoded, pixels, options=policy.codec) if write and needs_rewrite else None
    return Processed(
        decoded=decoded, faces=faces, faces_anonymized=anonymized, data=data, faint=faint, identity=identity
    )


def anonymize_part(
    content: bytes,
    *,
    path: Location,
    label: str,
    name: str,
    container: Location,
    mode: WriteMode,
    models: DetectionModels,
    policy: Policy,
    write: bool,
) -> tuple[AnonymizationResult, bytes]:
    """A picture inside a file (a shard's member, a table's cell): its result and its new bytes (its own bytes
    when it needs no rewrite).

    Args:
        content: the picture's bytes.
        path: what its row is audited under (``SHARD#MEMBER``, ``TABLE#row=N,col=C``).
        label: what error messages call it (``"member a.jpg"``).
        name: its own name, for what its suffix says (a camera raw file is refused).
        container: the file (or object) it is in, which an error names.
        mode: the run's write mode.
        write: encode the output; False for a dry run.

    Raises:
        InputError: the picture cannot be anonymized (the message names it); the whole file then fails.
    """
    refused = refusal(sniff(content[:SNIFF_BYTES]), Path(name))
    if refused is not None:
        raise UnsupportedFormatError(f"{label}: {refused}", path=container)
    try:
        processed = anonymize_bytes(content, name=Path(name), models=models, policy=policy, write=write)
    except InputError as exc:
        # The file fails, named with the part: its other pictures are not left half done.
        raise type(exc)(f"{label}: {exc.message}", path=container) from exc
    row = AnonymizationResult(
        path=path,
        outcome=Outcome.of_processing(mode, faces_anonymized=processed.faces_anonymized),
        mode=mode,
        started_at=datetime.now(UTC),
        duration_s=0.0,
        faces=processed.faces,
        faces_anonymized=processed.faces_anonymized,
        image_format=processed.decoded.image_format.value,
        resolution_wh=processed.decoded.resolution_wh,
        details=processed.details,
        uncertainty=Uncertainty.of_faces(processed.faint),
    )
    return row, processed.data if processed.data is not None else content


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's content and its status when opened (to tell, before an in-place replace, that it is unchanged)."""
    try:
        with path.open("rb") as handle:
            return handle.read(), os.fstat(handle.fileno())
    except OSError as exc:
        raise _read_failure(path, exc) from exc


def _read_failure(path: Path, exc: OSError) -> EffaceError:
    """What an OS error reading an input file is, for the audit log."""
    if isinstance(exc, FileNotFoundError):
        return InputNotFoundError("no such file", path=path)
    if isinstance(exc, IsADirectoryError):
        return UnreadableFileError("is a folder, not a file", path=path)
    return UnreadableFileError(f"cannot read: {exc.strerror or exc}", path=path)


def anonymize_file(
    job: FileJob, *, models: DetectionModels, policy: Policy, on_frame: FrameCallback | None = None
) -> AnonymizationResult:
    """Anonymizes one file, its output swapped in at once, and says what happened (``stage_file``, then the
    swap). Never raises for a problem with this one file; see ``stage_file``.
    """
    done = stage_file(job, models=models, policy=policy, on_frame=on_frame)
    if done.staged is None:
        return done.result
    try:
        claim(done.staged).commit()
    except EffaceError as exc:
        discard(done.staged)
        return done.failed(exc)
    return done.result


def stage_file(
    job: FileJob | ObjectJob, *, models: DetectionModels, policy: Policy, on_frame: FrameCallback | None = None
) -> StagedResult:
    """Anonymizes one file up to its replace and says what happened. Never raises for a problem with this one file.

    In place, the anonymized bytes atomically replace the original; into an output folder, the source
    is left untouched. An image without faces that holds nothing but its image (no metadata, nothing after
    it, no profile to rebuild) is not rewritten in place (it is copied byte for byte to an output folder); a
    video is always re-encoded (its container metadata goes).

    Args:
        job: the source and destination (a file, or an object in a store: ``objects.stage_object``).
        models: the process's loaded detection models.
        policy: detection spec, anonymizer and codec options.
        on_frame: for videos, called after each frame with the frames done and expected (progress).

    Returns:
        The result, and the staged output that is to replace the destination (in place: under every name of
        the source, once it is checked unchanged). The result's ``outcome`` is ``error`` with the error's class
        and message when the file failed, in which case nothing is staged and the source is byte-for-byte
        unchanged.
    """
    if not isinstance(job, FileJob):
        from efface.pipeline.objects import stage_object  # imports this module

        return stage_object(job, models=models, policy=policy, on_frame=on_frame)
    if job.is_video:
        return _anonymize_video_file(job, models=models, policy=policy, on_frame=on_frame)
    if job.is_shard:
        from efface.pipeline.shards import stage_shard  # imports this module

        return stage_shard(job, models=models, policy=policy)
    if job.is_table:
        from efface.pipeline.tables import stage_table  # imports this module

        return stage_table(job, models=models, policy=policy)
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    mode = job.mode
    processed: Processed | None = None
    staged: StagedFile | None = None
    try:
        content, status = _read(job.source)
        if _is_done(job, content):
            return StagedResult(_skipped(job, started_at=started_at, t0=t0))
        write = mode is not WriteMode.DRY_RUN
        processed = anonymize_bytes(content, name=job.source, models=models, policy=policy, write=write)
        output_sha256 = None
        if job.destination is not None:
            data = processed.data
            if data is None and mode is WriteMode.OUTPUT_DIR:
                data = content
            if data is not None:
                _make_parent(job.destination)
                if mode is WriteMode.IN_PLACE:
                    staged = stage_bytes(job.destination, data, replacing=_original(job, status))
                else:
                    staged = stage_bytes(job.destination, data, permissions_from=job.source)
            output_sha256 = hashlib.sha256(data if data is not None else content).hexdigest()
    except EffaceError as exc:
        return StagedResult(_error_result(job, exc, started_at=started_at, t0=t0, processed=processed))
    except Exception as exc:  # a bug must fail this file, not the whole batch
        logger.exception("unexpected error on %s", job.source)
        if staged is not None:
            discard(staged)
        return StagedResult(_error_result(job, exc, started_at=started_at, t0=t0, processed=processed))
    result = AnonymizationResult(
        path=job.source,
        outcome=Outcome.of_processing(mode, faces_anonymized=processed.faces_anonymized),
        mode=mode,
        started_at=started_at,
        duration_s=time.perf_counter() - t0,
        output_path=job.destination,
        faces=processed.faces,
        faces_anonymized=processed.faces_anonymized if mode is not WriteMode.DRY_RUN else 0,
        output_sha256=output_sha256,
        image_format=processed.decoded.image_format.value,
        resolution_wh=processed.decoded.resolution_wh,
        details={**processed.details, **_hard_link_details(job)},
        uncertainty=Uncertainty.of_faces(processed.faint),
    )
    source_sha256 = hashlib.sha256(content).hexdigest() if staged is not None else None
    return StagedResult(result, staged, source_sha256)


def _original(job: FileJob, status: os.stat_result) -> Original:
    return original_of(status, other_names=job.hard_links)


def _hard_link_details(job: FileJob) -> dict[str, object]:
    """The names a hard-linked file was replaced under (one result for the file, however many names)."""
    if not job.hard_links:
        return {}
    return {"hard_links": sorted(str(name) for name in (job.source, *job.hard_links))}


def _anonymize_video_file(
    job: FileJob, *, models: DetectionModels, policy: Policy, on_frame: FrameCallback | None
) -> StagedResult:
    # PyAV and the frame pipeline are loaded by the first video, not by every run on photos.
    from efface.media.video import open_video
    from efface.pipeline.video import SelectiveVideo, anonymize_video, anonymize_video_selectively, scan_video

    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    detect, detect_light = video_detectors(models, policy)
    stager = Stager()
    try:
        status = _stat(job.source)
        if _is_done(job, None):
            return StagedResult(_skipped(job, started_at=started_at, t0=t0))
        if job.destination is not None:
            _make_parent(job.destination)
        permissions_from = job.source if job.mode is WriteMode.OUTPUT_DIR else None
        replacing = _original(job, status) if job.mode is WriteMode.IN_PLACE else None
        identity: SelectiveVideo | None = None
        if policy.identity is not None:
            identity = anonymize_video_selectively(
                lambda: open_video(job.source, options=policy.video),
                job.destination,
                selection=policy.identity,
                detect=detect,
                detect_light=detect_light,
                anonymize=policy.anonymizer.apply,
                tracking=policy.tracking,
                options=policy.video,
                on_frame=on_frame,
                permissions_from=permissions_from,
                replacing=replacing,
                stager=stager,
            )
            stats, info = identity.stats, identity.info
        else:
            with open_video(job.source, options=policy.video) as video:
                if job.destination is None:
                    stats = scan_video(
                        video, detect=detect, detect_light=detect_light, tracking=policy.tracking, on_frame=on_frame
                    )
                else:
                    stats = anonymize_video(
                        video,
                        job.destination,
                        detect=detect,
                        detect_light=detect_light,
                        anonymize=policy.anonymizer.apply,
                        tracking=policy.tracking,
                        options=policy.video,
                        on_frame=on_frame,
                        permissions_from=permissions_from,
                        replacing=replacing,
                        stager=stager,
                    )
            info = video.info
        staged = stager.staged
        output_sha256 = _file_sha256(staged.temp_path) if staged is not None else None
        source_sha256 = _file_sha256(job.source) if staged is not None else None
    except EffaceError as exc:
        if stager.staged is not None:
            discard(stager.staged)
        return StagedResult(_error_result(job, exc, started_at=started_at, t0=t0, processed=None))
    except Exception as exc:  # a bug must fail this file, not the whole batch
        logger.exception("unexpected error on %s", job.source)
        if stager.staged is not None:
            discard(stager.staged)
        return StagedResult(_error_result(job, exc, started_at=started_at, t0=t0, processed=None))
    result = _video_result(job, info, stats, started_at=started_at, t0=t0, output_sha256=output_sha256)
    if identity is not None:
        result = dataclasses.replace(
            result,
            faces_anonymized=identity.detections_anonymized if job.mode is not WriteMode.DRY_RUN else 0,
            details={**result.details, "identity": identity.counts.as_dict()},
        )
    return StagedResult(dataclasses.replace(result, uncertainty=detect.uncertainty(stats)), staged, source_sha256)


def video_detectors(models: DetectionModels, policy: Policy) -> tuple[FaintTally, Detect | None]:
    """The full detection a video runs on its detected frames (counting their faint candidates), and the light
    passes between them (None: off)."""
    detect = FaintTally(models.detector(policy.detection))
    detect_light = models.detector(light_pass_spec(policy.detection)).detect if policy.tracking.light_passes else None
    return detect, detect_light


class FaintTally:
    """A video's full detection (a ``Detect``) that counts, frame by frame, the faint candidates it leaves.

    Called from one detection thread at a time (``pipeline.video``).
    """

    def __init__(self, detector: FaceDetector) -> None:
        self._detector = detector
        self._by_size = dict.fromkeys(FAINT_SIZES, 0)
        self._frames = 0

    def __call__(self, frame: np.ndarray) -> tuple[Face, ...]:
        faces, faint = detect_with_faint(self._detector, frame)
        if faint:
            self._frames += 1
            for face in faint:
                self._by_size[faint_size(face.box.height)] += 1
        return faces

    def uncertainty(self, stats: VideoStats) -> Uncertainty:
        """The video's: its faint candidates, and the frames and boxes its tracker carried (``stats.tracking``)."""
        tracking = stats.tracking
        bridged = tracking.get("frames_covered", 0) - tracking.get("frames_with_detections", 0)
        return Uncertainty(
            faint_candidates=sum(self._by_size.values()),
            faint_by_size=dict(self._by_size),
            frames_with_faint=self._frames,
            bridged_frames=max(0, bridged),
            interpolated_boxes=tracking.get("interpolated_boxes", 0),
        )


def _video_result(
    job: FileJob, info: VideoInfo, stats: VideoStats, *, started_at: datetime, t0: float, output_sha256: str | None
) -> AnonymizationResult:
    return AnonymizationResult(
        path=job.source,
        outcome=Outcome.of_processing(job.mode, faces_anonymized=stats.regions),
        mode=job.mode,
        started_at=started_at,
        duration_s=time.perf_counter() - t0,
        output_path=job.destination,
        faces_anonymized=stats.detections if job.mode is not WriteMode.DRY_RUN else 0,
        output_sha256=output_sha256,
        image_format=f"video/{info.codec}",
        resolution_wh=info.resolution_wh,
        details={
            "rewritten": job.mode is not WriteMode.DRY_RUN,
            "dropped_streams": list(stats.dropped_streams),
            **_hard_link_details(job),
        },
        video=stats,
    )


def _stat(path: Path) -> os.stat_result:
    """The status of a video before it is opened (the decoder opens it by name)."""
    try:
        return os.stat(path)
    except FileNotFoundError as exc:
        raise InputNotFoundError("no such file", path=path) from exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot stat: {exc.strerror or exc}", path=path) from exc


def _is_done(job: FileJob, content: bytes | None) -> bool:
    """Whether an earlier run already wrote this file's output (the bytes of the source, when read)."""
    target = job.target
    if not job.done_sha256 or target is None:
        return False
    if target == job.source and content is not None:
        return hashlib.sha256(content).hexdigest() in job.done_sha256
    try:
        return _file_sha256(target) in job.done_sha256
    except OutputError:  # no output yet
        return False


def _skipped(job: FileJob, *, started_at: datetime, t0: float) -> AnonymizationResult:
    duration_s = time.perf_counter() - t0
    return results.skipped(
        job.source, mode=job.mode, output_path=job.destination, started_at=started_at, duration_s=duration_s
    )


def _file_sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise OutputError(f"cannot read back: {exc.strerror or exc}", path=path) from exc


def _make_parent(destination: Path) -> None:
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder: {exc.strerror or exc}", path=destination.parent) from exc


def _error_result(
    job: FileJob, exc: Exception, *, started_at: datetime, t0: float, processed: Processed | None
) -> AnonymizationResult:
    return results.failed(
        job.source,
        exc,
        mode=job.mode,
        started_at=started_at,
        duration_s=time.perf_counter() - t0,
        faces=processed.faces if processed else (),
        image_format=processed.decoded.image_format.value if processed else None,
        resolution_wh=processed.decoded.resolution_wh if processed else None,
    )
