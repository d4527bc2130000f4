"""Video through the one pipeline: each frame is turned upright, detected (the full detection, a light pass or
nothing, as ``TemporalCover.detection_pass`` says), covered with the faces carried between frames
(``TemporalCover``), anonymized, turned back and encoded; audio and subtitles are copied.

``anonymize_file`` hands videos here; nothing else touches their frames. The tracker delays each frame by
its look-back (a few frames), so frames wait in a short queue until their cover is final: memory holds
that queue and never the video.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from efface.detection.tracking import DetectionPass, TemporalCover, TrackedFrame, TrackingSpec
from efface.errors import CorruptImageError
from efface.media.atomic import Original, Stager
from efface.media.video import VideoOptions
from efface.recognition.selection import IdentityCounts, Selection, TrackVotes
from efface.records import Face, VideoStats

if TYPE_CHECKING:  # the caller opened the video, so PyAV is loaded; a name for the type checker only
    from efface.media.video import VideoInfo, VideoSource

__all__ = [
    "EXACT_TRACKING",
    "FrameCallback",
    "FrameRegions",
    "PixelsCallback",
    "SelectiveVideo",
    "TrackedCallback",
    "anonymize_video",
    "anonymize_video_selectively",
    "scan_video",
    "upright",
]

# Frames decoded ahead of the one being tracked while the detector works on them.
_DETECT_AHEAD = 2

FrameCallback = Callable[[int, int | None], None]
"""Called after each frame with the frames done and the frames expected (None where unknown)."""

Detect = Callable[[np.ndarray], tuple[Face, ...]]
"""Faces on an upright RGB uint8 (H, W, 3) frame."""

TrackedCallback = Callable[[TrackedFrame], None]
"""Called with each final frame's faces and their tracks, in order (a review's timeline)."""

PixelsCallback = Callable[[np.ndarray, TrackedFrame], None]
"""Called with each final upright frame and its faces with their tracks, in order (selective anonymization)."""

EXACT_TRACKING = TrackingSpec(hold_frames=0, lookback_frames=0, detect_every=1, light_passes=False)
"""A tracker that carries nothing: with ``FrameRegions`` as the detector, exactly the given boxes are anonymized."""


class FrameRegions:
    """A ``Detect`` that gives boxes decided beforehand, frame by frame, frames asked for in order (from 0).

    Run under ``EXACT_TRACKING``, on one detection thread, as ``anonymize_video`` runs its detector. ``frames``
    counts the frames asked for, so that a caller can tell that the video had as many as when it was decided.
    """

    def __init__(self, regions: dict[int, tuple[Face, ...]]) -> None:
        self._regions = regions
        self.frames = 0

    def __call__(self, image: np.ndarray) -> tuple[Face, ...]:
        faces = self._regions.get(self.frames, ())
        self.frames += 1
        return faces


@dataclass(slots=True)
class _FaceCounts:
    """Faces detected and regions anonymized, counted frame by frame."""

    frames: int = 0
    frames_detected: int = 0
    detections: int = 0
    regions: int = 0
    frames_with_faces: int = 0
    regions_min: int | None = None
    regions_max: int = 0

    def count_detections(self, faces: tuple[Face, ...] | None) -> None:
        if faces is not None:
            self.frames_detected += 1
            self.detections += len(faces)

    def count_regions(self, regions: int) -> None:
        self.frames += 1
        self.regions += regions
        self.frames_with_faces += regions > 0
        self.regions_min = regions if self.regions_min is None else min(self.regions_min, regions)
        self.regions_max = max(self.regions_max, regions)


def upright(frame: np.ndarray, rotation_deg: int) -> np.ndarray:
    """A frame as stored, turned upright (``VideoInfo.rotation_deg``): what detection and every box work on."""
    return _upright(frame, rotation_deg)


def _upright(frame: np.ndarray, rotation_deg: int) -> np.ndarray:
    return frame if rotation_deg == 0 else np.ascontiguousarray(np.rot90(frame, k=rotation_deg // 90))


def _stored(upright: np.ndarray, rotation_deg: int) -> np.ndarray:
    return upright if rotation_deg == 0 else np.ascontiguousarray(np.rot90(upright, k=-(rotation_deg // 90)))


class _Coverer:
    """Turns decoded frames into upright frames with their final regions, counting as it goes."""

    def __init__(
        self,
        *,
        detect: Detect,
        detect_light: Detect | None,
        tracking: TrackingSpec,
        on_tracked: TrackedCallback | None = None,
        on_pixels: PixelsCallback | None = None,
    ) -> None:
        if tracking.light_passes and tracking.detect_every > 1 and detect_light is None:
            raise ValueError("tracking asks for light passes between detections, but no light detector was given")
        self._detectors = {DetectionPass.FULL: detect, DetectionPass.LIGHT: detect_light}
        self._tracking = tracking
        self._cover: TemporalCover | None = None
        self._on_tracked = on_tracked
        self._on_pixels = on_pixels
        self.counts = _FaceCounts()

    def frames(
        self, decoded: Iterator[np.ndarray], *, rotation_deg: int
    ) -> Iterator[tuple[np.ndarray, tuple[Face, ...]]]:
        """Each upright frame with its final regions, in order, ``lookback_frames`` behind the decoder.

        Detection runs on a thread of its own, up to ``_DETECT_AHEAD`` frames ahead, so that decoding,
        anonymizing and encoding (here) overlap with inference (there; onnxruntime releases the GIL).
        """
        waiting: deque[np.ndarray] = deque()  # frames whose cover is not final yet
        detecting: deque[tuple[np.ndarray, Future[tuple[Face, ...]] | None]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="efface-detect") as pool:
            for index, frame in enumerate(decoded):
                upright = _upright(frame, rotation_deg)
                if self._cover is None:
                    self._cover = TemporalCover(self._tracking, width=upright.shape[1], height=upright.shape[0])
                detector = self._detectors.get(self._cover.detection_pass(index))
                detecting.append((upright, pool.submit(detector, upright) if detector is not None else None))
                if len(detecting) > _DETECT_AHEAD:
                    yield from self._track(*detecting.popleft(), waiting=waiting)
            while detecting:
                yield from self._track(*detecting.popleft(), waiting=waiting)
        if self._cover is not None:
            for final in self._cover.flush_tracked():
                upright = waiting.popleft()
                yield upright, self._final(final, upright)

    def _track(
        self, upright: np.ndarray, detection: Future[tuple[Face, ...]] | None, *, waiting: deque[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, tuple[Face, ...]]]:
        assert self._cover is not None  # set on the first frame, before any detection is queued
        faces = detection.result() if detection is not None else None
        self.counts.count_detections(faces)
        waiting.append(upright)
        for frame in self._cover.push_tracked(faces):
            upright = waiting.popleft()
            yield upright, self._final(frame, upright)

    def _final(self, frame: TrackedFrame, upright: np.ndarray) -> tuple[Face, ...]:
        self.counts.count_regions(len(frame.faces))
        if self._on_tracked is not None:
            self._on_tracked(frame)
        if self._on_pixels is not None:
            self._on_pixels(upright, frame)
        return frame.faces

    def counted(self, stats: VideoStats) -> VideoStats:
        """``stats`` with the face counts of the frames that went through, and the tracker's."""
        counts = self.counts
        return replace(
            stats,
            frames_detected=counts.frames_detected,
            detections=counts.detections,
            regions=counts.regions,
            frames_with_faces=counts.frames_with_faces,
            regions_per_frame_min=counts.regions_min or 0,
            regions_per_frame_max=counts.regions_max,
            tracking=self._cover.stats.as_dict() if self._cover is not None else {},
        )


def anonymize_video(
    video: VideoSource,
    destination: Path,
    *,
    detect: Detect,
    detect_light: Detect | None = None,
    anonymize: Callable[[np.ndarray, tuple[Face, ...]], tuple[np.ndarray, int]],
    tracking: TrackingSpec,
    options: VideoOptions,
    on_frame: FrameCallback | None = None,
    permissions_from: Path | None = None,
    replacing: Original | None = None,
    stager: Stager | None = None,
) -> VideoStats:
    """Anonymizes every frame of ``video`` into ``destination`` (atomically; it may be the source file).

    Args:
        video: the open source; its frames are read here, and it is closed once written.
        destination: where the anonymized video goes; its suffix picks the container.
        detect: faces on an upright RGB frame (the full detection).
        detect_light: the light pass run between full detections where ``tracking.light_passes`` asks for it.
        anonymize: the frame with the given regions anonymized, and how many were.
        tracking: how faces are carried between frames.
        options: codec, quality and metadata choices.
        on_frame: progress, after each encoded frame.
        permissions_from: a file whose permission bits the output takes.
        replacing: in place, the source as it was opened (``atomic_write_with``).
        stager: stage the output there instead of swapping it in (``media.atomic.Stager``).

    Returns:
        What was written and the faces counted on the way.

    Raises:
        InputError: the video cannot be decoded completely.
        ConfigurationError: the encoder settings cannot work for this container.
        SourceChangedError: in place, the source changed on disk meanwhile; it was left as it now is.
        OutputError: the output could not be written.
        ValueError: ``tracking`` asks for light passes and no ``detect_light`` is given.
    """
    info = video.info
    coverer = _Coverer(detect=detect, detect_light=detect_light, tracking=tracking)

    def process(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for upright, regions in coverer.frames(frames, rotation_deg=info.rotation_deg):
            pixels = anonymize(upright, regions)[0] if regions else upright
            yield _stored(pixels, info.rotation_deg)

    def frame_done(done: int) -> None:
        if on_frame is not None:
            on_frame(done, info.declared_frames)

    written = video.transcode(
        destination,
        process,
        options=options,
        on_frame=frame_done,
        permissions_from=permissions_from,
        replacing=replacing,
        stager=stager,
    )
    return coverer.counted(written)


def scan_video(
    video: VideoSource,
    *,
    detect: Detect,
    detect_light: Detect | None = None,
    tracking: TrackingSpec,
    on_frame: FrameCallback | None = None,
    on_tracked: TrackedCallback | None = None,
    on_pixels: PixelsCallback | None = None,
) -> VideoStats:
    """A dry run: decodes and detects every frame of ``video``, counts what would be anonymized, writes nothing.

    ``detect`` and ``detect_light`` are as for ``anonymize_video``; ``on_tracked`` gets every frame's faces with
    their tracks, ``on_pixels`` the upright frame with them.

    Raises:
        InputError: the video cannot be decoded completely.
        ValueError: ``tracking`` asks for light passes and no ``detect_light`` is given.
    """
    info = video.info
    coverer = _Coverer(
        detect=detect, detect_light=detect_light, tracking=tracking, on_tracked=on_tracked, on_pixels=on_pixels
    )
    for _frame in coverer.frames(video.frames(), rotation_deg=info.rotation_deg):
        if on_frame is not None:
            on_frame(coverer.counts.frames, info.declared_frames)
    return coverer.counted(VideoStats(frames=coverer.counts.frames, fps=info.fps, duration_s=info.duration_s))


@dataclass(frozen=True, slots=True)
class SelectiveVideo:
    """A video anonymized selectively (``anonymize_video_selectively``).

    Attributes:
        stats: what was written (a dry run: scanned), with the regions of the boxes chosen to be anonymized.
        counts: how its tracks were decided.
        info: what the video is.
        detections_anonymized: the detected faces (not the carried boxes) of the tracks anonymized.
    """

    stats: VideoStats
    counts: IdentityCounts
    info: VideoInfo
    detections_anonymized: int


def anonymize_video_selectively(
    open_source: Callable[[], VideoSource],
    destination: Path | None,
    *,
    selection: Selection,
    detect: Detect,
    detect_light: Detect | None,
    anonymize: Callable[[np.ndarray, tuple[Face, ...]], tuple[np.ndarray, int]],
    tracking: TrackingSpec,
    options: VideoOptions,
    on_frame: FrameCallback | None = None,
    permissions_from: Path | None = None,
    replacing: Original | None = None,
    stager: Stager | None = None,
) -> SelectiveVideo:
    """A video under selective anonymization, in two passes over ``open_source()``: the first detects, tracks and
    embeds, and decides each track whole (``TrackVotes``); the second anonymizes exactly the boxes of the tracks to
    anonymize on every frame (a track is kept on all its frames or on none). ``destination`` None: the first pass
    only (a dry run). The other arguments are ``anonymize_video``'s.

    Raises:
        CorruptImageError: the second pass decoded another number of frames than the first (nothing is kept).
        InputError, ConfigurationError, SourceChangedError, OutputError: as ``anonymize_video``.
    """
    votes = TrackVotes(selection)
    frames: list[TrackedFrame] = []

    def on_pixels(pixels: np.ndarray, frame: TrackedFrame) -> None:
        votes.add(frame.index, pixels, frame.faces, frame.track_ids, frame.is_detected)
        frames.append(frame)

    with open_source() as video:
        scanned = scan_video(
            video,
            detect=detect,
            detect_light=detect_light,
            tracking=tracking,
            on_frame=None if destination is not None else on_frame,
            on_pixels=on_pixels,
        )
    hidden = votes.anonymized()
    regions = {
        frame.index: tuple(
            face for face, track in zip(frame.faces, frame.track_ids, strict=True) if track < 0 or track in hidden
        )
        for frame in frames
    }
    kept = sum(len(frame.faces) for frame in frames) - sum(len(faces) for faces in regions.values())
    counts = votes.counts(boxes_kept=kept)
    detections = sum(
        detected and (track < 0 or track in hidden)
        for frame in frames
        for track, detected in zip(frame.track_ids, frame.is_detected, strict=True)
    )
    chosen = _chosen_counts(scanned, regions)
    if destination is None:
        return SelectiveVideo(chosen, counts, video.info, detections)
    given = FrameRegions(regions)
    with open_source() as video:
        written = anonymize_video(
            video,
            destination,
            detect=given,
            anonymize=anonymize,
            tracking=EXACT_TRACKING,
            options=options,
            on_frame=on_frame,
            permissions_from=permissions_from,
            replacing=replacing,
            stager=stager,
        )
    if given.frames != scanned.frames or written.frames != scanned.frames:
        raise CorruptImageError(
            f"decoded {scanned.frames} frames to decide whose faces to keep, then {written.frames} to anonymize",
            path=video.path,
        )
    stats = replace(
        written,
        frames_detected=scanned.frames_detected,
        detections=scanned.detections,
        regions=chosen.regions,
        frames_with_faces=chosen.frames_with_faces,
        regions_per_frame_min=chosen.regions_per_frame_min,
        regions_per_frame_max=chosen.regions_per_frame_max,
        tracking=scanned.tracking,
    )
    return SelectiveVideo(stats, counts, video.info, detections)


def _chosen_counts(scanned: VideoStats, regions: dict[int, tuple[Face, ...]]) -> VideoStats:
    """The scan's stats with the region counts of the boxes chosen to be anonymized."""
    per_frame = [len(regions.get(index, ())) for index in range(scanned.frames)]
    return replace(
        scanned,
        regions=sum(per_frame),
        frames_with_faces=sum(count > 0 for count in per_frame),
        regions_per_frame_min=min(per_frame, default=0),
        regions_per_frame_max=max(per_frame, default=0),
    )
