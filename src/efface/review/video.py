"""A video in a review: the faces the tracker followed (tracks, each with its box on every frame it covers), the
frames the page shows, the tracks a person removes or adds, and the reviewed boxes of every frame for Apply.

The tracks come from the very detection schedule and tracker ``anonymize`` runs (``scan_video`` with
``on_tracked``). A track added by hand is a face boxed on one or more keyframes: its box is interpolated between
them and carried before the first and after the last as the tracker carries a detected face (``lookback_frames``
back and ``hold_span_frames`` on, grown by ``growth_per_frame`` a frame). Apply gives ``anonymize_video`` the
reviewed boxes of each frame through a detector stand-in and a tracker that carries nothing more
(``reviewed_policy``), so exactly those boxes are anonymized, with the policy's transform and floor.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efface.detection.models import DetectionModels
from efface.detection.multiscale import MultiScaleSpec
from efface.detection.tracking import TrackedFrame, TrackingSpec
from efface.media.video import VideoSource, open_video
from efface.pipeline.core import Policy, video_detectors
from efface.pipeline.video import EXACT_TRACKING, FrameRegions, scan_video, upright
from efface.records import BBox, Face, Uncertainty

__all__ = [
    "FrameBoxesModels",
    "FrameReader",
    "VideoScan",
    "VideoTrack",
    "manual_boxes",
    "reviewed_policy",
    "reviewed_regions",
    "scan_tracks",
]

XYXY = tuple[float, float, float, float]


@dataclass(slots=True)
class VideoTrack:
    """One face over frames.

    Attributes:
        track_id: ``t<N>`` for the tracker's track N, ``m...`` for one added by hand.
        is_manual: added by hand (its ``boxes`` are its keyframes).
        is_applied: whether Apply anonymizes it.
        boxes: frame number to box: every frame the tracker covered it on, or a hand-made track's keyframes.
        detected_frames: frames the detector found it on (a tracker's track).
        score: its best detection score (None for a hand-made track).
    """

    track_id: str
    is_manual: bool
    is_applied: bool
    boxes: dict[int, XYXY] = field(default_factory=dict)
    detected_frames: int = 0
    score: float | None = None

    @property
    def first(self) -> int:
        return min(self.boxes)

    @property
    def last(self) -> int:
        return max(self.boxes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "origin": "manual" if self.is_manual else "detected",
            "is_applied": self.is_applied,
            "first": self.first,
            "last": self.last,
            "frames": len(self.boxes),
            "detected_frames": self.detected_frames,
            "score": None if self.score is None else round(self.score, 4),
            "keyframes": [[frame, _rounded(box)] for frame, box in sorted(self.boxes.items())]
            if self.is_manual
            else None,
        }


def _rounded(box: XYXY) -> list[float]:
    return [round(value, 2) for value in box]


@dataclass(frozen=True, slots=True)
class VideoScan:
    """What a review needs of a video: its frames and tracks.

    Attributes:
        frames: frames decoded.
        fps: the average frame rate, where known.
        size_wh: the upright frame size.
        tracks: the tracker's tracks, in order of their first frame.
        uncertainty: what the detector was unsure of (faint candidates, bridged frames).
    """

    frames: int
    fps: float | None
    size_wh: tuple[int, int]
    tracks: tuple[VideoTrack, ...]
    uncertainty: Uncertainty


def scan_tracks(path: Path, *, models: DetectionModels, policy: Policy) -> VideoScan:
    """Detects and tracks every face of a video as ``anonymize`` would, writing nothing.

    Raises:
        InputError: the video cannot be decoded completely.
    """
    detect, detect_light = video_detectors(models, policy)
    tracks: dict[int, VideoTrack] = {}

    def on_tracked(frame: TrackedFrame) -> None:
        for face, track_id, is_detected in zip(frame.faces, frame.track_ids, frame.is_detected, strict=True):
            track = tracks.setdefault(track_id, VideoTrack(f"t{track_id}", is_manual=False, is_applied=True))
            track.boxes[frame.index] = face.box.xyxy
            if is_detected:
                track.detected_frames += 1
                track.score = max(track.score or 0.0, face.score)

    with open_video(path, options=policy.video) as video:
        info = video.info
        stats = scan_video(
            video, detect=detect, detect_light=detect_light, tracking=policy.tracking, on_tracked=on_tracked
        )
    is_turned = info.rotation_deg in (90, 270)
    size_wh = (info.height, info.width) if is_turned else (info.width, info.height)
    ordered = tuple(sorted(tracks.values(), key=lambda track: (track.first, track.track_id)))
    return VideoScan(stats.frames, info.fps, size_wh, ordered, detect.uncertainty(stats))


def manual_boxes(track: VideoTrack, *, spec: TrackingSpec, frames: int, size_wh: tuple[int, int]) -> dict[int, XYXY]:
    """A hand-made track's box on every frame it covers: its keyframes, interpolated between them, carried
    ``spec.lookback_frames`` before the first and ``spec.hold_span_frames`` after the last, grown as the tracker
    grows a carried box."""
    keyframes = sorted(track.boxes.items())
    if not keyframes:
        return {}
    boxes: dict[int, XYXY] = {}
    for (start, a), (end, b) in itertools.pairwise(keyframes):
        for frame in range(start, end):
            t = (frame - start) / (end - start)
            boxes[frame] = tuple((1 - t) * u + t * v for u, v in zip(a, b, strict=True))  # type: ignore[assignment]
    first, last = keyframes[0], keyframes[-1]
    boxes[last[0]] = last[1]
    for distance in range(1, spec.lookback_frames + 1):
        if first[0] - distance >= 0:
            boxes[first[0] - distance] = _grown(first[1], spec.growth_per_frame * distance)
    for distance in range(1, spec.hold_span_frames + 1):
        if last[0] + distance < frames:
            boxes[last[0] + distance] = _grown(last[1], spec.growth_per_frame * distance)
    width, height = size_wh
    return {frame: BBox(*box).clipped(width, height).xyxy for frame, box in boxes.items()}


def _grown(box: XYXY, growth: float) -> XYXY:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * (1 + growth) / 2, (y2 - y1) * (1 + growth) / 2
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def reviewed_regions(
    tracks: tuple[VideoTrack, ...], *, spec: TrackingSpec, frames: int, size_wh: tuple[int, int]
) -> dict[int, tuple[Face, ...]]:
    """The boxes to anonymize on each frame: every applied track's (a hand-made one's carried, ``manual_boxes``)."""
    regions: dict[int, list[Face]] = {}
    for track in tracks:
        if not track.is_applied:
            continue
        boxes = manual_boxes(track, spec=spec, frames=frames, size_wh=size_wh) if track.is_manual else track.boxes
        for frame, box in boxes.items():
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
                regions.setdefault(frame, []).append(Face(BBox(*box), track.score or 1.0))
    return {frame: tuple(faces) for frame, faces in regions.items()}


def reviewed_policy(policy: Policy) -> Policy:
    """The policy with a tracker that carries nothing: every frame is 'detected' (the reviewed boxes), nothing
    held, back-filled or interpolated beyond them; the transform, its floor and the codecs are the policy's."""
    return dataclasses.replace(policy, tracking=EXACT_TRACKING)


class _FrameBoxes:
    """A detector stand-in that gives the reviewed boxes of each frame (``FrameRegions``), named as the models."""

    def __init__(self, regions: dict[int, tuple[Face, ...]], *, name: str, weights_sha256: str) -> None:
        self.detect = FrameRegions(regions)
        self.name = name
        self.weights_sha256 = weights_sha256


@dataclass(frozen=True, slots=True)
class FrameBoxesModels:
    """Models whose detector gives a video's reviewed boxes frame by frame (``reviewed_policy`` runs it on every
    frame, in order, on one thread); named as the models that found them."""

    regions: dict[int, tuple[Face, ...]]
    name: str
    weights_sha256: str

    def detector(self, spec: MultiScaleSpec) -> _FrameBoxes:
        return _FrameBoxes(self.regions, name=self.name, weights_sha256=self.weights_sha256)


class FrameReader:
    """The upright frames of one video for the page, decoded forward from the last one shown (a frame before it
    reopens the video). Holds one frame at most."""

    def __init__(self, path: Path, *, policy: Policy) -> None:
        self._path = path
        self._policy = policy
        self._video: VideoSource | None = None
        self._frames: Iterator[np.ndarray] | None = None
        self._index = -1
        self._frame: np.ndarray | None = None

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index``, upright.

        Raises:
            IndexError: the video has fewer frames.
            InputError: it cannot be decoded.
        """
        if index < 0:
            raise IndexError(index)
        if self._frames is None or index < self._index:
            self.close()
            self._video = open_video(self._path, options=self._policy.video)
            self._frames = self._video.frames()
            self._index, self._frame = -1, None
        while self._index < index:
            stored = next(self._frames, None)
            if stored is None:
                self.close()
                raise IndexError(index)
            assert self._video is not None
            self._frame, self._index = upright(stored, self._video.info.rotation_deg), self._index + 1
        assert self._frame is not None
        return self._frame

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
        self._video, self._frames, self._index, self._frame = None, None, -1, None
