"""Reading a video: the container is opened once and inspected once, then demuxed in one pass.

Inspection decodes up to the first frame (its size, pixel format, colour tags and display matrix are
what the encoder is set up to match). The packets it read are kept, with the frames they decoded to,
and handed out again at the start of the pass: nothing is read twice and the decoder never restarts.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer
from av.packet import Packet
from av.sidedata.sidedata import Type as SideDataType
from av.stream import Disposition, Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from efface.errors import (
    CorruptImageError,
    ImageTooLargeError,
    InputNotFoundError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from efface.media.video._errors import input_error, not_a_video
from efface.media.video._options import VideoOptions

__all__ = ["DecodeTally", "Demuxer", "FrameTiming", "Layout", "VideoInfo", "describe_stream", "open_container"]

_AV_TIME_BASE = 1_000_000
_NOT_VIDEO_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf", "image2"})
# A track may end this much earlier than its declared duration before the file counts as truncated.
_END_TOLERANCE_S = 0.1


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video file holds, as its inspection found it (declared values, and the first frame's).

    Attributes:
        container: FFmpeg's name of the container format (e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``).
        width: stored frame width in pixels (before rotation).
        height: stored frame height in pixels (before rotation).
        declared_frames: the frame count the file declares, or None where it declares none.
        fps: the average frame rate, or None where unknown.
        duration_s: the declared duration of the video stream (else of the file), or None where unknown.
        codec: the video codec (e.g. ``"h264"``).
        pixel_format: the decoded pixel format (e.g. ``"yuv420p"``).
        rotation_deg: how far to turn stored frames counter-clockwise to show them upright: 0, 90, 180
            or 270 (``np.rot90(frame, k=rotation_deg // 90)``), from the display matrix.
        audio_streams: audio streams, all copied to the output.
        subtitle_streams: subtitle streams, all copied to the output.
    """

    container: str
    width: int
    height: int
    declared_frames: int | None
    fps: float | None
    duration_s: float | None
    codec: str
    pixel_format: str
    rotation_deg: int
    audio_streams: int
    subtitle_streams: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"width and height must be >= 1, got {self.width}x{self.height}")
        if self.rotation_deg not in (0, 90, 180, 270):
            raise ValueError(f"rotation_deg must be 0, 90, 180 or 270, got {self.rotation_deg}")

    @property
    def resolution_wh(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass(frozen=True, slots=True)
class Layout:
    """How the first frame is laid out; the encoder is set up to match it."""

    pixel_format: str
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    display_matrix: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class FrameTiming:
    pts: int
    duration: int


@dataclass(slots=True)
class DecodeTally:
    """Counts and timestamps kept during the pass, checked once the source is exhausted.

    ``timings`` queues each decoded frame's timing until the encoder pairs it with the processed frame.
    """

    packets: int = 0
    decodable_packets: int = 0
    decoded: int = 0
    last_pts: int | None = None
    first_pts: int | None = None
    end_pts: int | None = None
    min_interval: int | None = None
    max_interval: int | None = None
    timings: deque[FrameTiming] = field(default_factory=deque)

    def duration_s(self, time_base: Fraction | None) -> float | None:
        """From the first frame's start to the last frame's end, or None without timestamps."""
        if not time_base or self.first_pts is None or self.end_pts is None:
            return None
        return float((self.end_pts - self.first_pts) * time_base)

    @property
    def is_vfr(self) -> bool:
        """Whether the frame intervals vary by more than rounding.

        A 29.97 fps video in a 1/15360 time base alternates 512 and 513 ticks: that is constant.
        """
        if self.min_interval is None or self.max_interval is None:
            return False
        return self.max_interval > self.min_interval * 1.01 + 1


def open_container(path: Path) -> InputContainer:
    """Opens ``path`` for demuxing, refusing what is not a video file.

    Raises:
        InputNotFoundError: no such file.
        UnreadableFileError: the OS refused to read it.
        UnsupportedFormatError: a folder, or not a container FFmpeg reads as a video.
        CorruptImageError: empty, or named like a video but not one.
    """
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise UnsupportedFormatError("is a folder, not a video file", path=path)
        with path.open("rb"):
            pass
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise InputNotFoundError("no such file", path=path) from exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    if size == 0:
        raise CorruptImageError("empty file (0 bytes)", path=path)
    try:
        container = av.open(str(path), "r", metadata_errors="replace")
    except av.InvalidDataError as exc:
        raise not_a_video(path) from exc
    except (av.FFmpegError, OSError) as exc:
        raise input_error(exc, path=path) from exc
    demuxer = container.format.name
    # FFmpeg reads a picture as a one-frame video and renders a text file as ANSI art ("tty").
    if demuxer in _NOT_VIDEO_DEMUXERS or demuxer.endswith("_pipe"):
        container.close()
        raise not_a_video(path, read_as=demuxer)
    return container


def describe_stream(stream: Stream) -> str:
    """``"stream #1 (audio, aac)"``: for messages."""
    codec = stream.codec_context.name if stream.codec_context is not None else "unknown codec"
    return f"stream #{stream.index} ({stream.type}, {codec})"


class Demuxer:
    """An open container, inspected on construction, then read in one pass by ``frames``.

    Args:
        container: the open input; the caller closes it.
        path: the file (for errors).
        options: limits (``max_pixels``).

    Attributes:
        info: what inspection found.
        layout: the first frame's layout.
        video: the stream anonymized: the first video stream that is not a cover picture.
        carried: the audio and subtitle streams, copied packet for packet.
        dropped: one line per other stream, saying why it is left out.

    Raises:
        InputError: as ``open_video``.
    """

    def __init__(self, container: InputContainer, *, path: Path, options: VideoOptions) -> None:
        self.path = path
        self.container = container
        self.video = _main_video_stream(container, path=path)
        _check_size(self.video.codec_context.width, self.video.codec_context.height, path=path, options=options)
        self.carried, self.dropped = _sort_streams(container, self.video)
        self.video.codec_context.thread_type = "AUTO"
        self._demuxed = container.demux([self.video, *self.carried])
        # Packets inspection read, with the frames each decoded to (None: not a video packet).
        self._peeked: deque[tuple[Packet[Stream], list[VideoFrame] | None]] = deque()
        self._is_read = False
        first = self._first_frame()
        _check_size(first.width, first.height, path=path, options=options)
        matrix = _display_matrix(first)
        self.info = VideoInfo(
            container=container.format.name,
            width=first.width,
            height=first.height,
            declared_frames=self.video.frames or None,
            fps=float(self.video.average_rate) if self.video.average_rate else None,
            duration_s=_declared_duration_s(container, self.video),
            codec=self.video.codec_context.name,
            pixel_format=first.format.name,
            rotation_deg=round(first.rotation / 90) * 90 % 360 if matrix is not None else 0,
            audio_streams=len(container.streams.audio),
            subtitle_streams=len(container.streams.subtitles),
        )
        self.layout = Layout(
            pixel_format=first.format.name,
            color_range=first.color_range,
            colorspace=first.colorspace,
            color_primaries=first.color_primaries,
            color_trc=first.color_trc,
            display_matrix=matrix,
        )

    @property
    def is_read(self) -> bool:
        """Whether the pass has begun (it is made once)."""
        return self._is_read

    def _first_frame(self) -> VideoFrame:
        try:
            for packet in self._demuxed:
                is_video = packet.stream.index == self.video.index
                frames = self.video.decode(packet) if is_video else None
                self._peeked.append((packet, frames))
                if frames:
                    return frames[0]
        except (av.FFmpegError, OSError) as exc:
            raise input_error(exc, path=self.path) from exc
        raise CorruptImageError("the video stream holds no decodable frame", path=self.path)

    def _packets(self) -> Iterator[tuple[Packet[Stream], list[VideoFrame] | None]]:
        """Every packet in file order: those inspection read first, then the rest of the file."""
        while self._peeked:
            yield self._peeked.popleft()
        while True:
            try:
                packet = next(self._demuxed, None)
            except (av.FFmpegError, OSError) as exc:
                raise input_error(exc, path=self.path) from exc
            if packet is None:
                return
            yield packet, None

    def _decode(self, packet: Packet[Stream]) -> list[VideoFrame]:
        try:
            return self.video.decode(packet)
        except (av.FFmpegError, OSError) as exc:
            raise input_error(exc, path=self.path) from exc

    def frames(
        self, tally: DecodeTally, *, copy_packet: Callable[[Packet[Stream]], None] | None = None
    ) -> Generator[np.ndarray, None, None]:
        """Demuxes in one pass: yields each video frame as RGB and hands the ``carried`` streams' packets
        to ``copy_packet`` as they come.

        Each frame's timing is queued in ``tally.timings`` before the frame is handed out; the consumer pairs
        the k-th anonymized frame with the k-th timing. Once the source is exhausted, refuses it if frames
        are missing.

        Raises:
            RuntimeError: the pass was already made (a container is read once).
        """
        if self._is_read:
            raise RuntimeError(f"the frames of {self.path} were already read; open it again to reread them")
        self._is_read = True
        video, info, source = self.video, self.info, self.path
        time_base = video.time_base or Fraction(1, 90_000)
        rate = video.average_rate or video.guessed_rate
        default_interval = max(1, round(1 / (rate * time_base))) if rate else 1
        for packet, decoded in self._packets():
            if packet.stream.index != video.index:
                if copy_packet is not None and packet.size:
                    copy_packet(packet)
                continue
            if packet.size:
                tally.packets += 1
                tally.decodable_packets += not packet.is_discard
            for frame in decoded if decoded is not None else self._decode(packet):
                tally.decoded += 1
                if frame.is_corrupt:
                    raise CorruptImageError(f"video frame {tally.decoded} is corrupt", path=source)
                if (frame.width, frame.height) != (info.width, info.height):
                    raise UnsupportedFormatError(
                        f"frame size changes from {info.width}x{info.height} to {frame.width}x{frame.height}"
                        f" at frame {tally.decoded}",
                        path=source,
                    )
                tally.timings.append(_timing(frame, tally, default_interval=default_interval, source=source))
                yield frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
        _check_complete(video, tally, time_base=time_base, source=source)


def _main_video_stream(container: InputContainer, *, path: Path) -> VideoStream:
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    kinds = ", ".join(f"{s.type} ({s.codec_context.name if s.codec_context else 'unknown'})" for s in container.streams)
    raise UnsupportedFormatError(f"no video stream (streams: {kinds or 'none'})", path=path)


def _sort_streams(container: InputContainer, video: VideoStream) -> tuple[tuple[Stream, ...], tuple[str, ...]]:
    """The audio and subtitle streams, to copy; and why each other stream is left out."""
    carried: list[Stream] = []
    dropped: list[str] = []
    for stream in container.streams:
        if stream.index == video.index:
            continue
        if stream.type in ("audio", "subtitle"):
            carried.append(stream)
        elif stream.type == "video" and stream.disposition & Disposition.attached_pic:
            dropped.append(f"{describe_stream(stream)}: cover picture, not anonymized")
        elif stream.type == "video":
            dropped.append(f"{describe_stream(stream)}: only the first video stream is anonymized")
        else:
            dropped.append(f"{describe_stream(stream)}: data and attachments are not copied")
    return tuple(carried), tuple(dropped)


def _check_size(width: int, height: int, *, path: Path, options: VideoOptions) -> None:
    if width * height > options.max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} frames have more than the allowed {options.max_pixels:,} pixels", path=path
        )


def _declared_duration_s(container: InputContainer, video: VideoStream) -> float | None:
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    if container.duration:
        return container.duration / _AV_TIME_BASE
    return None


def _display_matrix(frame: VideoFrame) -> tuple[int, ...] | None:
    # PyAV 18 made Frame.side_data a mapping from side-data type to side data.
    side_data = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    if side_data is None:
        return None
    return tuple(int(v) for v in np.frombuffer(bytes(side_data), dtype=np.int32))


def _declared_duration_tag(stream: Stream) -> Fraction | None:
    """The ``HH:MM:SS.nnnnnnnnn`` duration tag FFmpeg writes for each Matroska track.

    Only the plain "DURATION" key counts: FFmpeg rewrites it on every mux, whereas statistics tags with a
    language suffix ("DURATION-eng", "NUMBER_OF_FRAMES-eng" from mkvmerge) survive a cut by another tool
    unchanged and may describe a longer track than the file now holds.
    """
    value = {key.lower(): v for key, v in stream.metadata.items()}.get("duration", "")
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", value.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)


def _declared_end(stream: Stream) -> Fraction | None:
    """Where the stream says its last frame ends, in seconds, or None where it does not say."""
    if stream.duration and stream.time_base:
        start = stream.start_time or 0
        return (start + stream.duration) * stream.time_base
    return _declared_duration_tag(stream)


def _timing(frame: VideoFrame, tally: DecodeTally, *, default_interval: int, source: Path) -> FrameTiming:
    """The frame's own timestamp; one frame interval after the previous frame where it has none."""
    pts = frame.pts
    if pts is None:
        pts = 0 if tally.last_pts is None else tally.last_pts + default_interval
    if tally.last_pts is not None:
        interval = pts - tally.last_pts
        if interval <= 0:
            raise CorruptImageError(
                f"video timestamps do not increase at frame {tally.decoded} ({tally.last_pts} then {pts})", path=source
            )
        tally.min_interval = interval if tally.min_interval is None else min(tally.min_interval, interval)
        tally.max_interval = interval if tally.max_interval is None else max(tally.max_interval, interval)
    if tally.first_pts is None:
        tally.first_pts = pts
    duration = frame.duration or tally.max_interval or default_interval
    tally.last_pts = pts
    tally.end_pts = pts + duration
    return FrameTiming(pts=pts, duration=duration)


def _check_complete(video: VideoStream, tally: DecodeTally, *, time_base: Fraction, source: Path) -> None:
    if tally.decoded < tally.decodable_packets:
        missing = tally.decodable_packets - tally.decoded
        raise CorruptImageError(
            f"{missing} of {tally.decodable_packets} video frames could not be decoded", path=source
        )
    if tally.decoded == 0:
        raise CorruptImageError("the video stream holds no decodable frame", path=source)
    declared = video.frames
    if declared:
        if tally.packets < declared:
            raise CorruptImageError(
                f"truncated or damaged: {tally.packets} of the {declared} video frames it declares are present",
                path=source,
            )
        return
    declared_end = _declared_end(video)
    if declared_end is None or tally.end_pts is None:
        return
    end = tally.end_pts * time_base
    # One frame interval of slack: writers disagree on whether the last frame's duration counts.
    slack = Fraction(_END_TOLERANCE_S).limit_denominator(1000) + (tally.max_interval or 0) * time_base
    if end + slack < declared_end:
        raise CorruptImageError(
            f"truncated or damaged: the video track ends at {float(end):.3f} s"
            f" of the {float(declared_end):.3f} s it declares",
            path=source,
        )
