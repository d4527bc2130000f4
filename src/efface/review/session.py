"""A review of pictures before their faces are applied: what the detector found and what it was unsure of, boxes a
person keeps, removes or adds, and Apply, which anonymizes the accepted files with exactly those boxes through the
one pipeline (``stage_file``, then the audited run's replace: atomic, the same strength floor).

Nothing of a picture is written anywhere before Apply: the page gets the original and the anonymized preview
encoded in memory (sent with ``Cache-Control: no-store``); the session keeps boxes, never pixels. The state of each
file (its boxes, whether it was accepted) is saved in the audit database (``audit.reviews``) as it changes, so a
review closed half way is resumed where it was, for the same content of the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from efface.audit import AuditStore
from efface.audit.reviews import ReviewStore
from efface.detection.base import detect_with_faint
from efface.detection.models import DetectionModels
from efface.detection.static import StaticDetector, StaticModels
from efface.digests import file_sha256
from efface.errors import EffaceError, InputError, SourceChangedError
from efface.media.atomic import discard
from efface.media.images import decode_image
from efface.media.sniff import MediaKind
from efface.pipeline import results
from efface.pipeline.core import FileJob, Policy, StagedResult, stage_file
from efface.pipeline.jobs import plan_jobs
from efface.pipeline.run import AuditedRun
from efface.records import AnonymizationResult, BBox, Face, Outcome, WriteMode
from efface.review.video import (
    FrameBoxesModels,
    FrameReader,
    VideoScan,
    VideoTrack,
    manual_boxes,
    reviewed_policy,
    reviewed_regions,
    scan_tracks,
)
from efface.text import path_text

__all__ = ["BoxOrigin", "FileState", "ReviewBox", "ReviewFile", "ReviewSession"]

logger = logging.getLogger(__name__)

# The JPEG quality of what the page is sent (the file itself is written as Apply writes any file).
_PAGE_JPEG_QUALITY = 90
# A box drawn by hand is at least this many pixels wide and tall.
_MIN_BOX_PX = 2.0


class BoxOrigin(StrEnum):
    """Where a box on the page comes from."""

    DETECTED = "detected"  # at or above the operating threshold: anonymized unless removed
    FAINT = "faint"  # a candidate below it: left unless a person turns it on
    MANUAL = "manual"  # drawn by a person


class FileState(StrEnum):
    """Where a file is in its review."""

    DETECTING = "detecting"
    TO_REVIEW = "to_review"
    ACCEPTED = "accepted"
    APPLIED = "applied"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ReviewBox:
    """A box on the page.

    Attributes:
        box_id: unique within its file (``d0``, ``f3``: detected and faint, by rank; ``m...``: drawn).
        xyxy: the box in pixels of the upright image.
        origin: where it comes from.
        is_applied: whether Apply anonymizes it.
        score: the detector's score; None for a box drawn by hand.
    """

    box_id: str
    xyxy: tuple[float, float, float, float]
    origin: BoxOrigin
    is_applied: bool
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "box_id": self.box_id,
            "xyxy": [round(value, 2) for value in self.xyxy],
            "origin": self.origin.value,
            "is_applied": self.is_applied,
            "score": None if self.score is None else round(self.score, 4),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReviewBox:
        xyxy = tuple(float(value) for value in data["xyxy"])
        if len(xyxy) != 4:
            raise ValueError(f"a box needs 4 coordinates, got {len(xyxy)}")
        score = data.get("score")
        return cls(
            box_id=str(data["box_id"]),
            xyxy=(xyxy[0], xyxy[1], xyxy[2], xyxy[3]),
            origin=BoxOrigin(data["origin"]),
            is_applied=bool(data["is_applied"]),
            score=None if score is None else float(score),
        )


@dataclass(slots=True)
class ReviewFile:
    """One picture or video of the review.

    Attributes:
        file_id: its number on the page.
        path: the file.
        state: where it is in its review.
        source_sha256: its content when it was read for the review (None before).
        resolution_wh: the upright image's size.
        boxes: what Apply will and will not anonymize.
        found: the boxes as the detector gave them (what the audit compares the review with).
        result: what Apply did, once it ran.
        error: why it cannot be reviewed or applied.
        video: a video's frames and tracks as found (None for a picture).
        tracks: a video's tracks as reviewed: the tracker's, each applied or not, and those added by hand.
    """

    file_id: int
    path: Path
    state: FileState = FileState.DETECTING
    source_sha256: str | None = None
    resolution_wh: tuple[int, int] | None = None
    boxes: tuple[ReviewBox, ...] = ()
    found: tuple[ReviewBox, ...] = ()
    result: AnonymizationResult | None = None
    error: str | None = None
    job: FileJob | None = field(default=None, repr=False)
    video: VideoScan | None = field(default=None, repr=False)
    tracks: tuple[VideoTrack, ...] = ()

    @property
    def is_video(self) -> bool:
        return self.job is not None and self.job.is_video

    @property
    def faint(self) -> int:
        if self.video is not None:
            return self.video.uncertainty.count
        return sum(box.origin is BoxOrigin.FAINT for box in self.found)

    @property
    def uncertainty_key(self) -> tuple[int, float, str]:
        """Sorts the most uncertain first: most faint candidates, then the strongest of them, then by path."""
        strongest = max((box.score or 0.0 for box in self.found if box.origin is BoxOrigin.FAINT), default=0.0)
        return (-self.faint, -strongest, path_text(self.path))

    def as_dict(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "path": path_text(self.path),
            "name": path_text(self.path.name),
            "state": self.state.value,
            "resolution_wh": list(self.resolution_wh) if self.resolution_wh else None,
            "kind": "video" if self.is_video else "picture",
            "faces": len(self.video.tracks) if self.video else sum(b.origin is BoxOrigin.DETECTED for b in self.found),
            "faint": self.faint,
            "frames": self.video.frames if self.video else None,
            "fps": self.video.fps if self.video else None,
            "tracks": [track.as_dict() for track in self.tracks],
            "applied_boxes": sum(box.is_applied for box in self.boxes),
            "boxes": [box.as_dict() for box in self.boxes],
            "outcome": self.result.outcome.value if self.result is not None else None,
            "error": self.error,
        }


def _is_reviewable(job: FileJob) -> bool:
    if job.kind is not None:
        return job.kind in (MediaKind.IMAGE, MediaKind.VIDEO)
    return not (job.is_shard or job.is_table)


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=_PAGE_JPEG_QUALITY)
    return buffer.getvalue()


def _xyxy(box: Sequence[Any]) -> tuple[float, float, float, float]:
    values = [float(value) for value in box]
    if len(values) != 4:
        raise ValueError(f"a box needs 4 coordinates, got {len(values)}")
    return (values[0], values[1], values[2], values[3])


def _face(box: ReviewBox) -> Face:
    return Face(BBox(*box.xyxy), box.score if box.score is not None else 1.0)


class ReviewSession:
    """The files of one ``efface review``, their boxes, previews and Apply. Thread-safe (the page's requests and the
    detection thread share it).

    Args:
        paths: files and folders, as ``anonymize`` takes them (pictures are reviewed; anything else is listed as
            not reviewable, with the reason).
        models: the loaded detection models.
        policy: how faces are found and anonymized (the run's settings).
        store: the audit log, which keeps the review state and audits Apply.
        reviewer: who reviews (the OS user, or ``--reviewer``).
        settings: the audited settings of Apply's run.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        models: DetectionModels,
        policy: Policy,
        store: AuditStore,
        reviewer: str,
        settings: dict[str, object],
    ) -> None:
        self._models = models
        self._policy = policy
        self._store = store
        self._reviews = ReviewStore(store)
        self.reviewer = reviewer
        self._settings = settings
        self._lock = threading.RLock()
        self._detect_lock = threading.Lock()  # one detection at a time on the process's models
        self._apply_lock = threading.Lock()  # one Apply at a time: a file is never applied twice
        self._frame_lock = threading.Lock()  # one frame decoded at a time
        self._frames: tuple[int, FrameReader] | None = None  # the video being shown, positioned at a frame
        self.files: list[ReviewFile] = []
        self.refused: list[dict[str, str]] = []
        self._plan(paths)
        self._thread: threading.Thread | None = None

    def _plan(self, paths: Sequence[Path]) -> None:
        for item in plan_jobs(list(paths)).items():
            if isinstance(item, FileJob) and _is_reviewable(item):
                self.files.append(ReviewFile(file_id=len(self.files), path=item.source, job=item))
            elif isinstance(item, FileJob):
                kind = f"a {item.kind.value}" if item.kind else "not a picture or a video"
                reason = f"{kind}: only pictures and videos are reviewed (shards and tables: efface anonymize)"
                self.refused.append({"path": path_text(item.source), "reason": reason})
            elif isinstance(item, AnonymizationResult) and item.path is not None:
                reason = item.error_message or str(item.outcome)
                self.refused.append({"path": path_text(item.path), "reason": reason})

    # --- detection ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Detects every file on a thread of its own (the page lists them as they come)."""
        self._thread = threading.Thread(target=self._detect_all, name="efface-review-detect", daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float | None = None) -> None:
        """Waits for the detection of every file (tests, and a caller that reviews in code)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _detect_all(self) -> None:
        for review in list(self.files):
            try:
                self._detect(review)
            except Exception:  # a bug must fail this file, not the review
                logger.exception("unexpected error on %s", review.path)
                with self._lock:
                    review.state, review.error = FileState.FAILED, "unexpected error (see the log)"

    def _read(self, review: ReviewFile) -> tuple[bytes, np.ndarray]:
        content = review.path.read_bytes()
        return content, decode_image(content, path=review.path, options=self._policy.codec).pixels

    def _detect(self, review: ReviewFile) -> None:
        if review.is_video:
            self._detect_video(review)
            return
        try:
            content, pixels = self._read(review)
        except (OSError, InputError) as exc:
            message = exc.message if isinstance(exc, EffaceError) else (exc.strerror or str(exc))
            with self._lock:
                review.state, review.error = FileState.FAILED, message
            return
        with self._detect_lock:
            faces, faint = detect_with_faint(self._models.detector(self._policy.detection), pixels)
        found = tuple(
            ReviewBox(f"d{rank}", face.box.xyxy, BoxOrigin.DETECTED, True, face.score)
            for rank, face in enumerate(faces)
        ) + tuple(
            ReviewBox(f"f{rank}", face.box.xyxy, BoxOrigin.FAINT, False, face.score) for rank, face in enumerate(faint)
        )
        sha256 = _sha256(content)
        saved = self._reviews.get(path_text(review.path))
        with self._lock:
            review.source_sha256 = sha256
            review.resolution_wh = (pixels.shape[1], pixels.shape[0])
            review.found = found
            review.boxes = found
            review.state = FileState.TO_REVIEW
            if saved is not None and saved.source_sha256 == sha256:  # resumed: the same content as reviewed
                review.boxes = tuple(ReviewBox.from_dict(box) for box in saved.state.get("boxes", []))
                if saved.applied_run_id is not None:
                    review.state = FileState.APPLIED
                elif saved.state.get("is_accepted"):
                    review.state = FileState.ACCEPTED

    def _detect_video(self, review: ReviewFile) -> None:
        try:
            sha256 = file_sha256(review.path)
            with self._detect_lock:
                scan = scan_tracks(review.path, models=self._models, policy=self._policy)
        except (OSError, InputError) as exc:
            message = exc.message if isinstance(exc, EffaceError) else (exc.strerror or str(exc))
            with self._lock:
                review.state, review.error = FileState.FAILED, message
            return
        saved = self._reviews.get(path_text(review.path))
        with self._lock:
            review.source_sha256 = sha256
            review.resolution_wh = scan.size_wh
            review.video = scan
            review.tracks = tuple(dataclasses.replace(track, boxes=dict(track.boxes)) for track in scan.tracks)
            review.state = FileState.TO_REVIEW
            if saved is not None and saved.source_sha256 == sha256:
                review.tracks = self._tracks_from(review, saved.state)
                if saved.applied_run_id is not None:
                    review.state = FileState.APPLIED
                elif saved.state.get("is_accepted"):
                    review.state = FileState.ACCEPTED

    def _tracks_from(self, review: ReviewFile, state: dict[str, Any]) -> tuple[VideoTrack, ...]:
        """A video's tracks as a saved (or sent) state has them: the tracker's applied or not, and those by hand."""
        assert review.video is not None
        applied = state.get("applied", {})
        tracks = [
            dataclasses.replace(track, boxes=dict(track.boxes), is_applied=bool(applied.get(track.track_id, True)))
            for track in review.video.tracks
        ]
        for manual in state.get("manual", []):
            keyframes = {int(frame): _xyxy(box) for frame, box in manual["keyframes"]}
            if keyframes:
                tracks.append(VideoTrack(str(manual["track_id"]), is_manual=True, is_applied=True, boxes=keyframes))
        return tuple(tracks)

    # --- the page -------------------------------------------------------------------------------------

    def listed(self) -> list[ReviewFile]:
        """The files, the most uncertain first (those still being detected last)."""
        with self._lock:
            return sorted(self.files, key=lambda f: (f.state is FileState.DETECTING, *f.uncertainty_key))

    @property
    def detecting(self) -> int:
        with self._lock:
            return sum(review.state is FileState.DETECTING for review in self.files)

    def get(self, file_id: int) -> ReviewFile:
        """A file by its number.

        Raises:
            KeyError: no such file.
        """
        if not 0 <= file_id < len(self.files):
            raise KeyError(file_id)
        return self.files[file_id]

    def original(self, file_id: int) -> bytes:
        """The upright picture as the page shows it (JPEG, in memory)."""
        return _jpeg(self._read(self.get(file_id))[1])

    def preview(self, file_id: int, boxes: Sequence[ReviewBox]) -> bytes:
        """The picture anonymized with the boxes that are applied (JPEG, in memory; nothing is written)."""
        pixels = self._read(self.get(file_id))[1]
        faces = tuple(_face(box) for box in boxes if box.is_applied)
        if faces:
            pixels = self._policy.anonymizer.apply(pixels, faces)[0]
        return _jpeg(pixels)

    def _reader(self, review: ReviewFile) -> FrameReader:
        with self._lock:
            if self._frames is None or self._frames[0] != review.file_id:
                if self._frames is not None:
                    self._frames[1].close()
                self._frames = (review.file_id, FrameReader(review.path, policy=self._policy))
            return self._frames[1]

    def _video(self, file_id: int) -> ReviewFile:
        review = self.get(file_id)
        if review.video is None:
            raise ValueError(f"{review.path.name} is not a video ready for review")
        return review

    def frame(self, file_id: int, index: int) -> bytes:
        """Frame ``index`` of a video, upright, as the page shows it (JPEG, in memory).

        Raises:
            KeyError: no such file. ValueError: not a video ready for review. IndexError: no such frame.
        """
        review = self._video(file_id)
        with self._frame_lock:
            return _jpeg(self._reader(review).frame(index))

    def frame_boxes(self, file_id: int, index: int) -> list[dict[str, Any]]:
        """The boxes of a video's frame: each track's there (a hand-made one's carried as Apply carries it)."""
        review = self._video(file_id)
        assert review.video is not None
        spec, frames, size_wh = self._policy.tracking, review.video.frames, review.video.size_wh
        found = []
        with self._lock:
            tracks = review.tracks
        for track in tracks:
            boxes = manual_boxes(track, spec=spec, frames=frames, size_wh=size_wh) if track.is_manual else track.boxes
            if index in boxes:
                found.append(
                    {
                        "box_id": track.track_id,
                        "xyxy": [round(value, 2) for value in boxes[index]],
                        "origin": "manual" if track.is_manual else "detected",
                        "is_applied": track.is_applied,
                        "is_keyframe": track.is_manual and index in track.boxes,
                        "score": None if track.score is None else round(track.score, 4),
                    }
                )
        return found

    def frame_preview(self, file_id: int, index: int) -> bytes:
        """A video's frame anonymized with the boxes Apply would use there (JPEG, in memory)."""
        review = self._video(file_id)
        assert review.video is not None
        with self._lock:
            tracks = review.tracks
        regions = reviewed_regions(
            tracks, spec=self._policy.tracking, frames=review.video.frames, size_wh=review.video.size_wh
        ).get(index, ())
        with self._frame_lock:
            pixels = self._reader(review).frame(index)
        if regions:
            pixels = self._policy.anonymizer.apply(pixels, regions)[0]
        return _jpeg(pixels)

    def update_video(self, file_id: int, state: dict[str, Any], *, is_accepted: bool) -> ReviewFile:
        """Sets a video's tracks (``{"applied": {track_id: bool}, "manual": [{"track_id", "keyframes": [[frame,
        xyxy], ...]}]}``) and whether it is accepted, and saves them.

        Raises:
            ValueError: not a video open for review, an unknown track, or a keyframe outside the video.
            AuditError: the state cannot be saved.
        """
        review = self._video(file_id)
        assert review.video is not None
        known = {track.track_id for track in review.video.tracks}
        unknown = set(state.get("applied", {})) - known
        if unknown:
            raise ValueError(f"no track {sorted(unknown)[0]} in {review.path.name}")
        width, height = review.video.size_wh
        manual = []
        for track in state.get("manual", []):
            track_id = str(track["track_id"])
            if not track_id.startswith("m") or track_id in known:
                raise ValueError(f"a track added by hand is named m..., got {track_id!r}")
            keyframes = []
            for frame, box in track["keyframes"]:
                x1, y1, x2, y2 = _xyxy(box)
                if not (0 <= int(frame) < review.video.frames):
                    raise ValueError(f"track {track_id}: no frame {frame} (the video has {review.video.frames})")
                if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height) or min(x2 - x1, y2 - y1) < _MIN_BOX_PX:
                    raise ValueError(f"track {track_id}: box {list(box)} is not inside the {width}x{height} frame")
                keyframes.append([int(frame), [x1, y1, x2, y2]])
            manual.append({"track_id": track_id, "keyframes": keyframes})
        checked = {"applied": {k: bool(v) for k, v in state.get("applied", {}).items()}, "manual": manual}
        with self._lock:
            if review.state not in (FileState.TO_REVIEW, FileState.ACCEPTED):
                raise ValueError(f"{review.path.name} is {review.state.value}, not open for review")
            assert review.source_sha256 is not None
            self._reviews.save(
                path_text(review.path),
                source_sha256=review.source_sha256,
                reviewer=self.reviewer,
                state={**checked, "is_accepted": is_accepted},
            )
            review.tracks = self._tracks_from(review, checked)
            review.state = FileState.ACCEPTED if is_accepted else FileState.TO_REVIEW
            return review

    def update(self, file_id: int, boxes: Sequence[ReviewBox], *, is_accepted: bool) -> ReviewFile:
        """Sets a file's boxes and whether it is accepted, and saves them.

        Raises:
            KeyError: no such file.
            ValueError: the file is not ready for review, a box is out of the picture or too small, or two boxes
                share an id.
            AuditError: the state cannot be saved.
        """
        review = self.get(file_id)
        with self._lock:
            if review.state not in (FileState.TO_REVIEW, FileState.ACCEPTED) or review.resolution_wh is None:
                raise ValueError(f"{review.path.name} is {review.state.value}, not open for review")
            checked = tuple(self._checked(box, review) for box in boxes)
            if len({box.box_id for box in checked}) != len(checked):
                raise ValueError("two boxes share an id")
            state = {"boxes": [box.as_dict() for box in checked], "is_accepted": is_accepted}
            assert review.source_sha256 is not None  # set with resolution_wh
            self._reviews.save(
                path_text(review.path), source_sha256=review.source_sha256, reviewer=self.reviewer, state=state
            )
            review.boxes = checked
            review.state = FileState.ACCEPTED if is_accepted else FileState.TO_REVIEW
            return review

    def _checked(self, box: ReviewBox, review: ReviewFile) -> ReviewBox:
        assert review.resolution_wh is not None
        width, height = review.resolution_wh
        x1, y1, x2, y2 = box.xyxy
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ValueError(f"box {box.box_id} {list(box.xyxy)} is not inside the {width}x{height} picture")
        if x2 - x1 < _MIN_BOX_PX or y2 - y1 < _MIN_BOX_PX:
            raise ValueError(f"box {box.box_id} is under {_MIN_BOX_PX:g} px")
        known = {found.box_id: found for found in review.found}
        if box.origin is BoxOrigin.MANUAL:
            return dataclasses.replace(
                box, box_id=box.box_id if box.box_id.startswith("m") else f"m{uuid.uuid4().hex[:8]}", score=None
            )
        original = known.get(box.box_id)
        if original is None or original.origin is not box.origin:
            raise ValueError(f"box {box.box_id} is not one the detector found")
        return dataclasses.replace(original, is_applied=box.is_applied)  # a detector's box is not moved

    # --- Apply ----------------------------------------------------------------------------------------

    def apply(self, *, on_result: Callable[[AnonymizationResult], None] | None = None) -> list[AnonymizationResult]:
        """Anonymizes every accepted file with its reviewed boxes, in one audited run (command ``review``).

        Each file's row says which boxes were added and removed by hand, by whom and when. A file changed on disk
        since it was read for the review fails aloud and is left as it now is.

        Returns:
            One result per file applied (none when no file is accepted).

        Raises:
            AuditError: the audit log failed (nothing more is replaced).
        """
        with self._apply_lock:
            return self._apply(on_result)

    def _apply(self, on_result: Callable[[AnonymizationResult], None] | None) -> list[AnonymizationResult]:
        with self._lock:
            accepted = [review for review in self.files if review.state is FileState.ACCEPTED]
        if not accepted:
            return []
        done: list[AnonymizationResult] = []
        run = AuditedRun.begin(
            self._store,
            command="review",
            mode=WriteMode.IN_PLACE,
            models=self._models,
            settings={**self._settings, "reviewer": self.reviewer},
            on_result=on_result,
        )
        with run:
            for review in accepted:
                result = self._apply_one(review, run)
                done.append(result)
        return done

    def _apply_one(self, review: ReviewFile, run: AuditedRun) -> AnonymizationResult:
        assert review.job is not None
        if review.video is not None:
            regions = reviewed_regions(
                review.tracks, spec=self._policy.tracking, frames=review.video.frames, size_wh=review.video.size_wh
            )
            frame_models = FrameBoxesModels(regions, name=self._models.name, weights_sha256=self._models.weights_sha256)
            staged = stage_file(review.job, models=frame_models, policy=reviewed_policy(self._policy))
            details = self._video_review(review)
        else:
            faces = tuple(_face(box) for box in review.boxes if box.is_applied)
            models = StaticModels(StaticDetector(faces, name=self._models.name))
            staged = stage_file(review.job, models=models, policy=self._policy)
            details = self._picture_review(review)
        staged = self._checked_source(review, staged)
        review_details = {
            "reviewer": self.reviewer,
            "reviewed_at": datetime.now(UTC).isoformat(),
            "source_sha256": review.source_sha256,
            **details,
        }
        result = dataclasses.replace(staged.result, details={**staged.result.details, "review": review_details})
        staged = dataclasses.replace(staged, result=result)
        run.commit(staged)
        result = staged.result
        with self._lock:
            review.result = result
            if result.outcome is Outcome.ERROR:
                review.state, review.error = FileState.FAILED, result.error_message
            else:
                review.state = FileState.APPLIED
                self._reviews.mark_applied(path_text(review.path), run_id=run.run_id)
        return result

    def _checked_source(self, review: ReviewFile, done: StagedResult) -> StagedResult:
        """The staged result, or a failure when what was staged is not the content that was reviewed."""
        if done.staged is None or done.source_sha256 == review.source_sha256:
            return done
        discard(done.staged)
        error = SourceChangedError("changed on disk since it was reviewed: left as it now is; review it again")
        return StagedResult(
            results.failed(review.path, error, mode=WriteMode.IN_PLACE, started_at=done.result.started_at)
        )

    def _video_review(self, review: ReviewFile) -> dict[str, object]:
        removed = [
            {"track_id": t.track_id, "first": t.first, "last": t.last, "frames": len(t.boxes)}
            for t in review.tracks
            if not t.is_manual and not t.is_applied
        ]
        added = [
            {"track_id": t.track_id, "keyframes": [[f, [round(v, 2) for v in b]] for f, b in sorted(t.boxes.items())]}
            for t in review.tracks
            if t.is_manual and t.is_applied
        ]
        return {
            "tracks_removed_by_hand": removed,
            "tracks_added_by_hand": added,
            "tracks_applied": sum(track.is_applied for track in review.tracks),
        }

    def _picture_review(self, review: ReviewFile) -> dict[str, object]:
        found = {box.box_id: box for box in review.found}
        added = [box.as_dict() for box in review.boxes if box.origin is BoxOrigin.MANUAL and box.is_applied]
        turned_on = [box.as_dict() for box in review.boxes if box.origin is BoxOrigin.FAINT and box.is_applied]
        removed = [
            found[box.box_id].as_dict()
            for box in review.boxes
            if box.origin is BoxOrigin.DETECTED and not box.is_applied and box.box_id in found
        ]
        return {
            "added_by_hand": added,
            "faint_turned_on": turned_on,
            "removed_by_hand": removed,
            "boxes_applied": sum(box.is_applied for box in review.boxes),
        }
