"""Carries faces between video frames, so that no face flashes through unanonymized where the detector misses it.

A per-frame detector misses a face now and then (motion blur, a turning head, a hand in front). On a photo
that is a recall figure; in a video it is a frame that shows the face in the clear. ``TemporalCover`` closes
those gaps with a small IoU tracker:

- association: each live track predicts its box on the new frame (its last detected box moved by the
  centre's velocity, damped per missed detection opportunity); predictions and detections are paired
  greedily, highest IoU first, down to ``match_iou``, then what is left by centre distance, nearest first (a
  face that moves most of its width between two detections, e.g. with ``detect_every`` > 1, overlaps
  nothing). Every detection left over starts a track: there is no confirmation, because a missed face is
  the failure we fear and a false positive costs only some blur.
- hold-over: a track unmatched for ``k`` frames still covers its predicted box, grown by
  ``growth_per_frame * k``, until it has missed ``hold_frames`` detection opportunities.
- backward fill: the output lags the input by ``lookback_frames``, so a new track's box is also put on the
  frames before its first detection (once its velocity is known, a second time, moved back along it), and a
  track detected again after a gap puts the interpolated box on the gap frames still buffered.
- detection on every Nth frame (``detect_every``), optionally with a light pass on the frames in between
  (``light_passes``): ``detection_pass`` says which runs on a frame; the tracker takes whatever was detected
  the same way, so a light pass's large faces start and steer tracks while the small faces it cannot see are
  held over as on a frame without detection.

Detections are always covered unchanged; carried boxes only ever add cover. Pure Python and numpy: detections
go in, regions come out, no pixels, no model.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from efface.detection.postprocess import pairwise_iou
from efface.records import BBox, Face

__all__ = [
    "DetectionPass",
    "TemporalCover",
    "TrackedFrame",
    "TrackingSpec",
    "TrackingStats",
    "center_distances",
    "cover_frames",
    "match_greedy",
]

# Weight of a new velocity measurement against the running estimate: halves a detector's box jitter while
# still following a face that speeds up within a few detections.
_VELOCITY_SMOOTHING = 0.5
# A carried box at least this much inside one box already on the frame adds no cover worth a second region:
# the carried box is itself grown past the face it stands for.
_REDUNDANT_FRACTION = 0.95
# A detection more than this many times larger or smaller (in width) than a track is not matched by distance.
_MAX_SIZE_RATIO = 2.0
# Carried boxes thinner than this after clipping to the frame are dropped (the face has left the frame).
_MIN_SIDE_PX = 1.0


@dataclass(frozen=True, slots=True)
class TrackingSpec:
    """How faces are carried between the frames of a video.

    Attributes:
        match_iou: a track's predicted box and a detection are the same face when their IoU is at least
            this (in (0, 1]).
        match_distance_boxes: tracks and detections left unpaired by IoU are the same face when the
            detection's centre is at most this many box widths (and heights) from the predicted centre and
            its size is within a factor 2; 0 matches by IoU only.
        hold_frames: detection opportunities a track may miss and still be covered. With
            ``detect_every = N`` a track is covered through ``(hold_frames + 1) * N - 1`` frames after its last
            detection (``hold_span_frames``): the skipped frames up to the next opportunity, then
            ``hold_frames`` more opportunities. 0 with ``N = 1`` carries nothing forward.
        growth_per_frame: a carried box ``k`` frames away from the detection it comes from is grown by
            ``growth_per_frame * k`` of its width and height, about its centre (prediction gets less sure).
        lookback_frames: frames before a track's first detection that get its box too. The output lags the
            input by this many frames. They first get the box unmoved (grown); once the track's velocity is
            known, at its second detection, those still buffered also get it moved back along the motion.
            With ``detect_every = N``, at least ``N - 1`` lets the frames between two detections of a track be
            interpolated as well as predicted.
        velocity_damping: the predicted motion per frame is multiplied by this factor for every missed
            detection opportunity (1: constant velocity; 0: the box stays where it was last seen).
        detect_every: detection runs on frames 0, N, 2N, ...; the frames in between are covered by
            prediction (and by interpolation, where they are still buffered when the next detection comes).
            The default 3, with light passes, covers as many face-frames as detection on every frame
            (``bench/video.py`` on the crowd clip: 0.975 against 0.974, the same longest flash-through and
            the same faces never covered) at about half the detection time.
        light_passes: with ``detect_every`` > 1, the frames in between get a light pass (a single cheap
            detection, see ``DetectionPass.LIGHT``) instead of none. Its faces are pushed like any others:
            they start tracks (a large face walking in need not wait for the next full detection) and
            update them; the small faces it cannot see are carried by their tracks as without it. Hold-over
            is counted in frames (``hold_span_frames``), so a light pass that misses a face never ends its
            track sooner. No effect with ``detect_every = 1``.
    """

    match_iou: float = 0.3
    match_distance_boxes: float = 1.0
    hold_frames: int = 8
    growth_per_frame: float = 0.04
    lookback_frames: int = 8
    velocity_damping: float = 0.8
    detect_every: int = 3
    light_passes: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.match_iou) and 0.0 < self.match_iou <= 1.0):
            raise ValueError(f"match_iou must be in (0, 1], got {self.match_iou}")
        if not (math.isfinite(self.match_distance_boxes) and self.match_distance_boxes >= 0.0):
            raise ValueError(f"match_distance_boxes must be a finite number >= 0, got {self.match_distance_boxes}")
        for name, minimum in (("hold_frames", 0), ("lookback_frames", 0), ("detect_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not isinstance(self.light_passes, bool):
            raise ValueError(f"light_passes must be a bool, got {self.light_passes!r}")
        if not (math.isfinite(self.growth_per_frame) and 0.0 <= self.growth_per_frame <= 1.0):
            raise ValueError(f"growth_per_frame must be in [0, 1], got {self.growth_per_frame}")
        if not (math.isfinite(self.velocity_damping) and 0.0 <= self.velocity_damping <= 1.0):
            raise ValueError(f"velocity_damping must be in [0, 1], got {self.velocity_damping}")

    @property
    def hold_span_frames(self) -> int:
        """Frames after its last detection through which an unmatched track is still covered."""
        return (self.hold_frames + 1) * self.detect_every - 1

    def as_dict(self) -> dict[str, object]:
        return {
            "match_iou": self.match_iou,
            "match_distance_boxes": self.match_distance_boxes,
            "hold_frames": self.hold_frames,
            "growth_per_frame": self.growth_per_frame,
            "lookback_frames": self.lookback_frames,
            "velocity_damping": self.velocity_damping,
            "detect_every": self.detect_every,
            "light_passes": self.light_passes,
        }


@dataclass(frozen=True, slots=True)
class TrackingStats:
    """What a ``TemporalCover`` has done, over the frames it has returned so far.

    Attributes:
        frames: frames returned.
        frames_with_detections: frames with at least one detected face.
        frames_covered: frames with at least one region to anonymize (detected or carried).
        held_boxes: boxes added by hold-over (prediction after the last detection).
        backfilled_boxes: boxes added before a track's first detection.
        interpolated_boxes: boxes added between two detections of a track.
        tracks: tracks started (on frames pushed so far).
    """

    frames: int = 0
    frames_with_detections: int = 0
    frames_covered: int = 0
    held_boxes: int = 0
    backfilled_boxes: int = 0
    interpolated_boxes: int = 0
    tracks: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "frames_with_detections": self.frames_with_detections,
            "frames_covered": self.frames_covered,
            "held_boxes": self.held_boxes,
            "backfilled_boxes": self.backfilled_boxes,
            "interpolated_boxes": self.interpolated_boxes,
            "tracks": self.tracks,
        }


def match_greedy(scores: npt.NDArray[np.floating], *, min_score: float) -> list[tuple[int, int]]:
    """Pairs rows with columns, highest score first, each at most once, down to ``min_score``.

    Args:
        scores: float (N, M), e.g. ``pairwise_iou(tracks, detections)``; NaN never pairs.
        min_score: pairs scoring below this are never made.

    Returns:
        ``(row, column)`` pairs, highest score first; ties go to the lower row, then the lower column.
    """
    if scores.size == 0:
        return []
    columns = scores.shape[1]
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=None, kind="stable")
    used_rows: set[int] = set()
    used_columns: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for flat in order.tolist():
        row, column = divmod(flat, columns)
        if not scores[row, column] >= min_score:
            break
        if row in used_rows or column in used_columns:
            continue
        used_rows.add(row)
        used_columns.add(column)
        pairs.append((row, column))
    return pairs


def center_distances(
    tracks_xyxy: npt.NDArray[np.floating], detections_xyxy: npt.NDArray[np.floating]
) -> npt.NDArray[np.floating]:
    """How far each detection's centre is from each track box's centre, in that track box's sizes.

    Args:
        tracks_xyxy: float (N, 4) predicted track boxes.
        detections_xyxy: float (M, 4) detected boxes.

    Returns:
        float (N, M): ``max(|dx| / width, |dy| / height)`` of the track box (sides under 1 px count as 1 px);
        NaN where the two widths differ by more than a factor 2.
    """
    track_wh = np.maximum(tracks_xyxy[:, 2:] - tracks_xyxy[:, :2], 1.0)
    detection_wh = np.maximum(detections_xyxy[:, 2:] - detections_xyxy[:, :2], 1.0)
    offset = (
        detections_xyxy[None, :, :2]
        + detections_xyxy[None, :, 2:]
        - tracks_xyxy[:, None, :2]
        - tracks_xyxy[:, None, 2:]
    ) / 2
    distances = np.abs(offset / track_wh[:, None, :]).max(axis=2)
    ratio = detection_wh[None, :, 0] / track_wh[:, None, 0]
    return np.where((ratio <= _MAX_SIZE_RATIO) & (ratio >= 1 / _MAX_SIZE_RATIO), distances, np.nan)


class DetectionPass(StrEnum):
    """What runs on a frame of a video: the full detection, a light pass, or nothing (tracking only)."""

    FULL = "full"
    LIGHT = "light"
    NONE = "none"


class _Kind(StrEnum):
    """Why a box was carried onto a frame; the value is its counter in ``TrackingStats``."""

    HELD = "held_boxes"
    BACKFILLED = "backfilled_boxes"
    INTERPOLATED = "interpolated_boxes"


class _Track:
    """One face being followed: its last detection, its first, and the velocity of its box centre."""

    __slots__ = (
        "box",
        "detections",
        "first_box",
        "first_frame",
        "first_score",
        "last_frame",
        "score",
        "track_id",
        "velocity_xy",
    )

    def __init__(self, box: BBox, score: float, frame_index: int, track_id: int) -> None:
        self.track_id = track_id
        self.box = box
        self.score = score
        self.last_frame = frame_index
        self.first_box = box
        self.first_frame = frame_index
        self.first_score = score
        self.velocity_xy = (0.0, 0.0)
        self.detections = 1


class _Frame:
    """A pushed frame not yet returned: its detections (and the track each belongs to) and the boxes carried onto
    it so far."""

    __slots__ = ("carried", "detection_tracks", "detections", "index")

    def __init__(self, index: int, detections: tuple[Face, ...]) -> None:
        self.index = index
        self.detections = detections
        self.detection_tracks: list[int] = [-1] * len(detections)
        self.carried: list[tuple[Face, _Kind, int]] = []

    def boxes(self) -> list[BBox]:
        return [f.box for f in self.detections] + [f.box for f, _, _ in self.carried]


@dataclass(frozen=True, slots=True)
class TrackedFrame:
    """A final frame with the track of each of its faces (``TemporalCover.push_tracked``).

    Attributes:
        index: the frame's number, from 0.
        faces: the faces to cover, as ``push`` returns them: the detections, then the carried boxes.
        track_ids: the track of each face (a track is one face followed over frames, numbered from 0).
        is_detected: for each face, whether it was detected on this frame (else carried by its track).
    """

    index: int
    faces: tuple[Face, ...]
    track_ids: tuple[int, ...]
    is_detected: tuple[bool, ...]


class TemporalCover:
    """Turns per-frame detections into per-frame regions to anonymize, with a delay of ``lookback_frames``.

    Push every frame's detections in order, then ``flush`` at the end of the stream. Each frame comes back
    exactly once, in order, as ``(frame_index, faces)``: first the frame's detections, unchanged and in the
    given order, then the carried boxes (clipped to the frame, without landmarks). A carried face keeps the
    score of the detection it is carried from (the lower of the two for an interpolated one), so a score
    threshold applied downstream treats it like that detection.

    Args:
        spec: the tracking settings.
        width: frame width in pixels.
        height: frame height in pixels.

    Example:
        >>> cover = TemporalCover(TrackingSpec(lookback_frames=1), width=100, height=100)
        >>> face = Face(BBox(10, 10, 30, 30), score=0.9)
        >>> cover.push((face,))
        []
        >>> [(i, len(faces)) for i, faces in cover.push(())]  # frame 0 is final: one later frame pushed
        [(0, 1)]
        >>> [(i, len(faces)) for i, faces in cover.flush()]  # frame 1: the face is held over
        [(1, 1)]
    """

    def __init__(self, spec: TrackingSpec, *, width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be at least 1x1, got {width}x{height}")
        self.spec = spec
        self.width = width
        self.height = height
        self._tracks: list[_Track] = []
        self._pending: deque[_Frame] = deque()
        self._next_index = 0
        self._is_flushed = False
        self._counts = {f.name: 0 for f in fields(TrackingStats)}
        self._next_track_id = 0

    @property
    def stats(self) -> TrackingStats:
        return TrackingStats(**self._counts)

    def detection_pass(self, frame_index: int) -> DetectionPass:
        """What should run on this frame: the full detection on frames 0, N, 2N, ... for ``detect_every = N``;
        on the others a light pass where ``light_passes`` is set, else nothing."""
        if frame_index < 0:
            raise ValueError(f"frame_index must be >= 0, got {frame_index}")
        if frame_index % self.spec.detect_every == 0:
            return DetectionPass.FULL
        return DetectionPass.LIGHT if self.spec.light_passes else DetectionPass.NONE

    def push(self, faces: tuple[Face, ...] | None) -> list[tuple[int, tuple[Face, ...]]]:
        """Takes the next frame's detections and returns the frames that are now final (``push_tracked``, without
        the tracks)."""
        return [(frame.index, frame.faces) for frame in self.push_tracked(faces)]

    def push_tracked(self, faces: tuple[Face, ...] | None) -> list[TrackedFrame]:
        """Takes the next frame's detections and returns the frames that are now final.

        Args:
            faces: the faces detected on the next frame (possibly none), by a full or a light pass, or None
                when detection did not run on it. Detections are used on any frame given them, not only where
                ``detection_pass`` says.

        Returns:
            Every frame that became final (its faces to cover, with their tracks), oldest first: a frame is
            final once ``lookback_frames`` later frames have been pushed.

        Raises:
            RuntimeError: after ``flush``.
        """
        if self._is_flushed:
            raise RuntimeError("push after flush: the stream has ended")
        index = self._next_index
        self._next_index += 1
        frame = _Frame(index, tuple(faces) if faces is not None else ())
        self._pending.append(frame)
        matched_tracks: set[int] = set()
        unmatched = list(range(len(frame.detections)))
        if frame.detections and self._tracks:
            predicted = np.asarray([self._predicted(t, index, is_grown=False).xyxy for t in self._tracks])
            detected = np.asarray([f.box.xyxy for f in frame.detections])
            pairs = self._associate(predicted, detected)
            for row, column in pairs:
                self._update(self._tracks[row], frame.detections[column], index)
                frame.detection_tracks[column] = self._tracks[row].track_id
                matched_tracks.add(row)
            matched_detections = {column for _, column in pairs}
            unmatched = [c for c in unmatched if c not in matched_detections]
        survivors: list[_Track] = []
        for row, track in enumerate(self._tracks):
            if row in matched_tracks:
                survivors.append(track)
            elif index - track.last_frame <= self.spec.hold_span_frames:
                self._carry(frame, self._predicted(track, index, is_grown=True), track, _Kind.HELD)
                survivors.append(track)
        for column in unmatched:
            track = _Track(frame.detections[column].box, frame.detections[column].score, index, self._next_track_id)
            self._next_track_id += 1
            frame.detection_tracks[column] = track.track_id
            self._backfill(track, velocity_xy=(0.0, 0.0))
            survivors.append(track)
            self._counts["tracks"] += 1
        self._tracks = survivors
        return self._emit(keep=self.spec.lookback_frames)

    def flush(self) -> list[tuple[int, tuple[Face, ...]]]:
        """Returns every frame not yet returned, oldest first, and ends the stream."""
        return [(frame.index, frame.faces) for frame in self.flush_tracked()]

    def flush_tracked(self) -> list[TrackedFrame]:
        """``flush``, with the tracks."""
        self._is_flushed = True
        return self._emit(keep=0)

    def _associate(
        self, predicted_xyxy: npt.NDArray[np.float64], detected_xyxy: npt.NDArray[np.float64]
    ) -> list[tuple[int, int]]:
        pairs = match_greedy(pairwise_iou(predicted_xyxy, detected_xyxy), min_score=self.spec.match_iou)
        if self.spec.match_distance_boxes == 0:
            return pairs
        rows = np.setdiff1d(np.arange(len(predicted_xyxy)), [r for r, _ in pairs])
        columns = np.setdiff1d(np.arange(len(detected_xyxy)), [c for _, c in pairs])
        if len(rows) == 0 or len(columns) == 0:
            return pairs
        closeness = -center_distances(predicted_xyxy[rows], detected_xyxy[columns])
        for row, column in match_greedy(closeness, min_score=-self.spec.match_distance_boxes):
            pairs.append((int(rows[row]), int(columns[column])))
        return pairs

    def _predicted(self, track: _Track, frame_index: int, *, is_grown: bool) -> BBox:
        frames = frame_index - track.last_frame
        travel = _travel_frames(frames, damping=self.spec.velocity_damping, detect_every=self.spec.detect_every)
        vx, vy = track.velocity_xy
        growth = self.spec.growth_per_frame * frames if is_grown else 0.0
        return _moved(track.box, vx * travel, vy * travel, growth=growth)

    def _update(self, track: _Track, face: Face, frame_index: int) -> None:
        gap = frame_index - track.last_frame
        (x0, y0), (x1, y1) = track.box.center_xy, face.box.center_xy
        measured = ((x1 - x0) / gap, (y1 - y0) / gap)
        if track.detections == 1:
            track.velocity_xy = measured
            # The first velocity of a track: its backfill can now follow the motion back in time.
            self._backfill(track, velocity_xy=measured)
        else:
            a = _VELOCITY_SMOOTHING
            track.velocity_xy = (
                a * measured[0] + (1 - a) * track.velocity_xy[0],
                a * measured[1] + (1 - a) * track.velocity_xy[1],
            )
        # Gap frames still buffered get the box between the two detections, sure by distance to the nearer.
        score = min(track.score, face.score)
        for j in range(track.last_frame + 1, frame_index):
            pending = self._pending_frame(j)
            if pending is None:
                continue
            t = (j - track.last_frame) / gap
            box = _interpolated(track.box, face.box, t)
            growth = self.spec.growth_per_frame * min(j - track.last_frame, frame_index - j)
            self._carry(pending, _moved(box, 0.0, 0.0, growth=growth), track, _Kind.INTERPOLATED, score=score)
        track.box = face.box
        track.score = face.score
        track.last_frame = frame_index
        track.detections += 1

    def _backfill(self, track: _Track, *, velocity_xy: tuple[float, float]) -> None:
        vx, vy = velocity_xy
        for distance in range(1, self.spec.lookback_frames + 1):
            pending = self._pending_frame(track.first_frame - distance)
            if pending is None:
                break
            box = _moved(track.first_box, -vx * distance, -vy * distance, growth=self.spec.growth_per_frame * distance)
            self._carry(pending, box, track, _Kind.BACKFILLED, score=track.first_score)

    def _carry(self, frame: _Frame, box: BBox, track: _Track, kind: _Kind, *, score: float | None = None) -> None:
        clipped = box.clipped(self.width, self.height)
        if clipped.width < _MIN_SIDE_PX or clipped.height < _MIN_SIDE_PX:
            return
        # A detection (or a carried box) that already holds nearly all of it leaves nothing to add; an
        # overlap alone is not enough: the detection may be another face crossing this one.
        if any(clipped.intersection_area(b) >= _REDUNDANT_FRACTION * clipped.area for b in frame.boxes()):
            return
        frame.carried.append((Face(clipped, track.score if score is None else score), kind, track.track_id))

    def _pending_frame(self, frame_index: int) -> _Frame | None:
        if not self._pending or frame_index < self._pending[0].index:
            return None
        offset = frame_index - self._pending[0].index
        return self._pending[offset] if offset < len(self._pending) else None

    def _emit(self, *, keep: int) -> list[TrackedFrame]:
        out: list[TrackedFrame] = []
        while len(self._pending) > keep:
            frame = self._pending.popleft()
            faces = frame.detections + tuple(face for face, _, _ in frame.carried)
            counts = self._counts
            counts["frames"] += 1
            counts["frames_with_detections"] += bool(frame.detections)
            counts["frames_covered"] += bool(faces)
            for _, kind, _ in frame.carried:
                counts[kind.value] += 1
            track_ids = (*frame.detection_tracks, *(track_id for _, _, track_id in frame.carried))
            is_detected = (True,) * len(frame.detections) + (False,) * len(frame.carried)
            out.append(TrackedFrame(frame.index, faces, track_ids, is_detected))
        return out


def cover_frames(
    detections: Iterable[tuple[Face, ...] | None], spec: TrackingSpec, *, width: int, height: int
) -> list[tuple[Face, ...]]:
    """``TemporalCover`` over a whole sequence: the faces to cover on each frame, one entry per input frame.

    Args:
        detections: per frame, the detected faces, or None where detection did not run.
        spec: the tracking settings.
        width: frame width in pixels.
        height: frame height in pixels.
    """
    cover = TemporalCover(spec, width=width, height=height)
    out: list[tuple[Face, ...]] = []
    for faces in detections:
        out.extend(faces for _, faces in cover.push(faces))
    out.extend(faces for _, faces in cover.flush())
    return out


def _travel_frames(frames: int, *, damping: float, detect_every: int) -> float:
    """How many frames' worth of velocity a track moves in ``frames`` frames without a detection.

    Full speed up to the next detection opportunity, then ``damping`` times slower for each one missed.
    """
    return sum(damping ** (i // detect_every) for i in range(frames))


def _moved(box: BBox, dx: float, dy: float, *, growth: float) -> BBox:
    cx, cy = box.center_xy
    half_w, half_h = box.width * (1 + growth) / 2, box.height * (1 + growth) / 2
    return BBox(cx + dx - half_w, cy + dy - half_h, cx + dx + half_w, cy + dy + half_h)


def _interpolated(a: BBox, b: BBox, t: float) -> BBox:
    return BBox(*((1 - t) * u + t * v for u, v in zip(a.xyxy, b.xyxy, strict=True)))
