"""Videos: probe, then decode, anonymize and re-encode the first video stream frame by frame, with the
audio and subtitle streams copied packet for packet. PyAV is used only here; its errors are translated
into efface's.

What is kept: every frame and its exact timestamp (variable frame rates stay variable), the resolution,
the pixel format where the encoder supports it, the colour tags, the display matrix (rotation), the
audio and subtitle packets byte for byte, and stream languages and dispositions.

Metadata policy: unless ``keep_metadata`` is on, the output carries no container or stream tags
(title, comment, artist, location/GPS, device make and model, creation time, encoder) beyond each
stream's language. What else could show a face or a place is dropped whatever the option: video
streams after the first (a second camera angle would not be anonymized), cover art, data tracks
(timecode, GoPro GPS telemetry), attachments, and per-frame side data such as SEI messages and closed
captions.

A decode failure anywhere, a frame count short of what the file declares or a track that ends early
refuses the whole file: an output with frames silently missing is never written.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.codec import find_best_pix_fmt_of_list
from av.container import InputContainer, OutputContainer
from av.sidedata.sidedata import Type as SideDataType
from av.stream import Disposition, Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from efface.errors import (
    ConfigurationError,
    CorruptImageError,
    ImageTooLargeError,
    InputError,
    InputNotFoundError,
    OutputError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from efface.media.atomic import atomic_write_with

__all__ = [
    "VIDEO_SUFFIXES",
    "X264_PRESETS",
    "FrameProcessor",
    "VideoInfo",
    "VideoOptions",
    "VideoReport",
    "is_video_path",
    "probe_video",
    "read_frames",
    "transcode_video",
]

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"})
# The muxer that writes each suffix (FFmpeg's names; ".m4v" is Apple's flavour of MP4).
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".m4v": "ipod", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
# Automatic choice, best first: H.264 plays everywhere; the rest are for containers that refuse it
# (WebM takes only VP8, VP9 and AV1) or builds without it. Hardware encoders are left out on purpose:
# their output differs from machine to machine.
_AUTO_ENCODERS = ("libx264", "libopenh264", "libvpx-vp9", "libsvtav1", "libaom-av1", "libvpx", "mpeg4")
_CRF_MAX = 51
# Encoders whose quality scale runs 0-63 rather than x264's 0-51, with their lowest accepted value.
_CRF63_MINIMUM = {"libvpx-vp9": 0, "libvpx": 4, "libsvtav1": 1, "libaom-av1": 0}
_FF_QP2LAMBDA = 118
# Stream tags that describe the old encoding, not the content; the muxer writes fresh ones.
_STALE_STREAM_TAGS = frozenset({"duration", "encoder", "number_of_frames", "number_of_bytes", "bps"})
_AV_TIME_BASE = 1_000_000
_NOT_VIDEO_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf", "image2"})
# An empty MP4 text sample: a gap between subtitles. The MP4 muxer writes its own, so copying the
# source's as well would double them.
_EMPTY_MOV_TEXT = b"\x00\x00"
# A track may end this much earlier than its declared duration before the file counts as truncated.
_END_TOLERANCE_S = 0.1


@dataclass(frozen=True, slots=True)
class VideoOptions:
    """Decoding limits and encoding choices.

    Attributes:
        codec: the video encoder (FFmpeg's name, e.g. ``"libx264"``), or None to pick one: H.264 where
            the container holds it, else the best encoder the container takes (VP9 for WebM).
        crf: quality on x264's constant-rate-factor scale, 0 (lossless) to 51 (worst); mapped onto
            the chosen encoder's own quality setting.
        preset: x264's speed preset name, mapped onto the encoder's speed setting where it has one.
        keep_metadata: keep container and stream tags (title, location, creation time, ...).
        max_pixels: videos whose frames have more pixels are refused.
    """

    codec: str | None = None
    crf: int = 18
    preset: str = "medium"
    keep_metadata: bool = False
    max_pixels: int = 8192 * 8192

    def __post_init__(self) -> None:
        if self.codec is not None and not self.codec.strip():
            raise ValueError("codec must be an encoder name or None, got an empty string")
        if not 0 <= self.crf <= _CRF_MAX:
            raise ValueError(f"crf must be in [0, {_CRF_MAX}], got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video file holds, as read from it.

    Attributes:
        container: FFmpeg's name of the container format (e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``).
        width: stored frame width in pixels (before rotation).
        height: stored frame height in pixels (before rotation).
        frames: the frame count the file declares, or None where it declares none.
        fps: the average frame rate, or None where unknown.
        duration_s: the video stream's duration (else the file's), or None where unknown.
        codec: the video codec (e.g. ``"h264"``).
        pixel_format: the decoded pixel format (e.g. ``"yuv420p"``).
        rotation_deg: how far to turn stored frames counter-clockwise to show them upright: 0, 90, 180
            or 270 (``np.rot90(frame, k=rotation_deg // 90)``), from the display matrix.
        audio_streams: audio streams, all copied to the output.
        subtitle_streams: subtitle streams, all copied to the output.
        is_vfr: the frame rate varies. A probe guesses from the declared rates; a transcode measures
            every frame interval.
    """

    container: str
    width: int
    height: int
    frames: int | None
    fps: float | None
    duration_s: float | None
    codec: str
    pixel_format: str
    rotation_deg: int
    audio_streams: int
    subtitle_streams: int
    is_vfr: bool

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"width and height must be >= 1, got {self.width}x{self.height}")
        if self.rotation_deg not in (0, 90, 180, 270):
            raise ValueError(f"rotation_deg must be 0, 90, 180 or 270, got {self.rotation_deg}")

    @property
    def resolution_wh(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass(frozen=True, slots=True)
class VideoReport:
    """What a transcode wrote.

    Attributes:
        info: the source, with ``is_vfr`` measured on every frame.
        frames: frames decoded, processed and encoded (always all of them).
        encoder: the video encoder used (e.g. ``"libx264"``).
        crf: the quality asked for, on x264's scale.
        duration_s: from the first frame's start to the last frame's end, or None without timestamps.
        copied_streams: audio and subtitle streams copied packet for packet.
        pixel_format: the encoded pixel format.
        dropped_streams: one line per source stream left out (extra video, cover art, data, attachments).
    """

    info: VideoInfo
    frames: int
    encoder: str
    crf: int
    duration_s: float | None
    copied_streams: int
    pixel_format: str = "yuv420p"
    dropped_streams: tuple[str, ...] = ()


FrameProcessor = Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]]
"""Maps decoded frames to anonymized ones: uint8 (H, W, 3) RGB in, one array of the same shape out
per frame, in order. It may read a few frames ahead before yielding."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """How the first frame is laid out; the encoder is set up to match it."""

    pixel_format: str
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    display_matrix: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class _FrameTiming:
    pts: int
    duration: int


@dataclass(slots=True)
class _Tally:
    """Counts kept while demuxing, checked once the source is exhausted."""

    packets: int = 0
    decodable_packets: int = 0
    decoded: int = 0
    last_pts: int | None = None
    first_pts: int | None = None
    end_pts: int | None = None
    min_interval: int | None = None
    max_interval: int | None = None
    timings: deque[_FrameTiming] = field(default_factory=deque)


def is_video_path(path: Path) -> bool:
    """Whether ``path`` is named like a video efface anonymizes."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def probe_video(path: Path, *, options: VideoOptions) -> VideoInfo:
    """Reads a video's layout and decodes its first frame, without decoding the rest.

    Args:
        path: the video file.
        options: limits (``max_pixels``).

    Returns:
        The source's streams, size, timing and rotation.

    Raises:
        InputNotFoundError: no such file.
        UnreadableFileError: the OS refused to read it.
        UnsupportedFormatError: not a container FFmpeg reads, or no video stream.
        CorruptImageError: empty, truncated, or the first frame does not decode.
        ImageTooLargeError: frames with more than ``options.max_pixels`` pixels.
    """
    with _open_input(path) as container:
        info, _layout = _inspect(container, path=path, options=options)
    return info


def transcode_video(
    source: Path,
    destination: Path,
    process: FrameProcessor,
    *,
    options: VideoOptions,
    on_frame: Callable[[int], None] | None = None,
    permissions_from: Path | None = None,
) -> VideoReport:
    """Re-encodes the first video stream of ``source`` through ``process``, copying audio and subtitles.

    The output is written to a temporary file beside ``destination`` and swapped in only once complete,
    so ``destination`` may be ``source``: a failure or a kill leaves the original byte for byte as it
    was. Frames stream through; memory does not grow with the video's length.

    Args:
        source: the video to read.
        destination: the file to create or replace; its suffix picks the container.
        process: gets the decoded frames, uint8 (H, W, 3) RGB as stored (not rotated; see
            ``VideoInfo.rotation_deg``), and yields one array of the same shape per frame, in order.
        options: encoder, quality and metadata choices.
        on_frame: called with the count of frames encoded so far, after each frame.
        permissions_from: a file whose permission bits the output takes (the original, in place).

    Returns:
        What was read and written.

    Raises:
        InputError: ``source`` cannot be read or decoded completely (see ``probe_video``), or its
            audio or subtitle codec does not fit the destination's container.
        ConfigurationError: ``options.codec`` is unknown, does not fit the container or will not open.
        OutputError: the output could not be written.
        ValueError: ``process`` yielded a different number of frames, or frames of another shape.
    """
    with _open_input(source) as container:
        info, layout = _inspect(container, path=source, options=options)
    muxer = _MUXERS.get(destination.suffix.lower())
    if muxer is None:
        supported = ", ".join(sorted(_MUXERS))
        raise UnsupportedFormatError(
            f"cannot write {destination.suffix!r} videos (supported: {supported})", path=destination
        )

    def write(temporary: Path) -> VideoReport:
        with _open_input(source) as container:
            return _transcode(
                container,
                temporary,
                process,
                info=info,
                layout=layout,
                muxer=muxer,
                source=source,
                destination=destination,
                options=options,
                on_frame=on_frame,
            )

    return atomic_write_with(destination, write, permissions_from=permissions_from)


def read_frames(path: Path, *, options: VideoOptions) -> Iterator[np.ndarray]:
    """Decodes every frame of the first video stream and writes nothing (for dry runs).

    The checks are those of ``transcode_video``; as frames stream, a file found truncated or damaged
    raises only once its good frames have been yielded.

    Args:
        path: the video file.
        options: limits (``max_pixels``).

    Yields:
        uint8 (H, W, 3) RGB frames as stored (not rotated; see ``VideoInfo.rotation_deg``), in order.

    Raises:
        InputError: as ``probe_video``; CorruptImageError where any frame is missing or does not decode.
    """
    with _open_input(path) as container:
        info, _layout = _inspect(container, path=path, options=options)
    with _open_input(path) as container:
        video = _main_video_stream(container, path=path)
        video.codec_context.thread_type = "AUTO"
        tally = _Tally()
        for frame in _decoded_frames(container, video, tally, info=info, source=path):
            tally.timings.clear()  # nothing pairs timings with output frames here
            yield frame


# --- reading ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_input(path: Path) -> Iterator[InputContainer]:
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
        raise _not_a_video(path) from exc
    except (av.FFmpegError, OSError) as exc:
        raise _input_error(exc, path=path) from exc
    try:
        if _is_still_or_text(container.format.name):
            raise _not_a_video(path, read_as=container.format.name)
        yield container
    finally:
        container.close()


def _is_still_or_text(demuxer: str) -> bool:
    # FFmpeg reads a picture as a one-frame video and renders a text file as ANSI art ("tty").
    return demuxer in _NOT_VIDEO_DEMUXERS or demuxer.endswith("_pipe")


def _not_a_video(path: Path, *, read_as: str | None = None) -> InputError:
    found = f" (FFmpeg reads it as {read_as})" if read_as else ""
    if is_video_path(path):
        return CorruptImageError(f"named {path.suffix} but its content is not a video{found}", path=path)
    return UnsupportedFormatError(f"not a video format efface can read{found}", path=path)


def _input_error(exc: Exception, *, path: Path) -> InputError:
    """Translates an FFmpeg or OS error met while reading ``path``."""
    reason = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, FileNotFoundError):
        return InputNotFoundError("no such file", path=path)
    if isinstance(exc, av.DecoderNotFoundError):
        return UnsupportedFormatError(f"no decoder for its video codec: {reason}", path=path)
    if isinstance(exc, av.FFmpegError) and not isinstance(exc, OSError):
        return CorruptImageError(f"cannot decode video: {reason}", path=path)
    return UnreadableFileError(f"cannot read: {reason}", path=path)


def _main_video_stream(container: InputContainer, *, path: Path) -> VideoStream:
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    kinds = ", ".join(f"{s.type} ({s.codec_context.name if s.codec_context else 'unknown'})" for s in container.streams)
    raise UnsupportedFormatError(f"no video stream (streams: {kinds or 'none'})", path=path)


def _check_size(width: int, height: int, *, path: Path, options: VideoOptions) -> None:
    if width * height > options.max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} frames have more than the allowed {options.max_pixels:,} pixels", path=path
        )


def _inspect(container: InputContainer, *, path: Path, options: VideoOptions) -> tuple[VideoInfo, _Layout]:
    video = _main_video_stream(container, path=path)
    _check_size(video.codec_context.width, video.codec_context.height, path=path, options=options)
    video.codec_context.thread_type = "AUTO"
    first = None
    try:
        for packet in container.demux(video):
            frames = packet.decode()
            if frames:
                first = frames[0]
                break
    except (av.FFmpegError, OSError) as exc:
        raise _input_error(exc, path=path) from exc
    if first is None:
        raise CorruptImageError("the video stream holds no decodable frame", path=path)
    _check_size(first.width, first.height, path=path, options=options)
    matrix = _display_matrix(first)
    rotation_deg = round(first.rotation / 90) * 90 % 360 if matrix is not None else 0
    time_base = video.time_base
    duration_s = None
    if video.duration and time_base:
        duration_s = float(video.duration * time_base)
    elif container.duration:
        duration_s = container.duration / _AV_TIME_BASE
    average, base = video.average_rate, video.base_rate
    info = VideoInfo(
        container=container.format.name,
        width=first.width,
        height=first.height,
        frames=video.frames or None,
        fps=float(average) if average else None,
        duration_s=duration_s,
        codec=video.codec_context.name,
        pixel_format=first.format.name,
        rotation_deg=rotation_deg,
        audio_streams=len(container.streams.audio),
        subtitle_streams=len(container.streams.subtitles),
        is_vfr=bool(average and base and average != base),
    )
    layout = _Layout(
        pixel_format=first.format.name,
        color_range=first.color_range,
        colorspace=first.colorspace,
        color_primaries=first.color_primaries,
        color_trc=first.color_trc,
        display_matrix=matrix,
    )
    return info, layout


def _display_matrix(frame: VideoFrame) -> tuple[int, ...] | None:
    for side_data in frame.side_data:
        if side_data.type is SideDataType.DISPLAYMATRIX:
            return tuple(int(v) for v in np.frombuffer(bytes(side_data), dtype=np.int32))
    return None


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


def _decoded_frames(
    container: InputContainer,
    video: VideoStream,
    tally: _Tally,
    *,
    info: VideoInfo,
    source: Path,
    copied: tuple[Stream, ...] = (),
    copy_packet: Callable[[av.Packet], None] | None = None,
) -> Generator[np.ndarray, None, None]:
    """Demuxes in one pass: yields each video frame as RGB and hands the ``copied`` streams' packets to
    ``copy_packet`` as they come.

    Each frame's timing is queued in ``tally.timings`` before the frame is handed out; the consumer pairs
    the k-th anonymized frame with the k-th timing. Once the source is exhausted, refuses it if frames
    are missing.
    """
    time_base = video.time_base or Fraction(1, 90_000)
    rate = video.average_rate or video.guessed_rate
    default_interval = max(1, round(1 / (rate * time_base))) if rate else 1
    packets = container.demux([video, *copied])
    while True:
        try:
            packet = next(packets, None)
            if packet is None:
                break
            if packet.stream.index != video.index:
                if copy_packet is not None and packet.size:
                    copy_packet(packet)
                continue
            if packet.size:
                tally.packets += 1
                tally.decodable_packets += not packet.is_discard
            frames = packet.decode()
        except (av.FFmpegError, OSError) as exc:
            raise _input_error(exc, path=source) from exc
        for frame in frames:
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


def _is_mov_text_gap(packet: av.Packet, output: OutputContainer) -> bool:
    return (
        output.format.name in ("mp4", "mov", "ipod")
        and packet.stream.codec_context is not None
        and packet.stream.codec_context.name == "mov_text"
        and bytes(packet) == _EMPTY_MOV_TEXT
    )


def _timing(frame: VideoFrame, tally: _Tally, *, default_interval: int, source: Path) -> _FrameTiming:
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
    return _FrameTiming(pts=pts, duration=duration)


def _check_complete(video: VideoStream, tally: _Tally, *, time_base: Fraction, source: Path) -> None:
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


# --- writing ---------------------------------------------------------------------------------------


def _transcode(
    container: InputContainer,
    temporary: Path,
    process: FrameProcessor,
    *,
    info: VideoInfo,
    layout: _Layout,
    muxer: str,
    source: Path,
    destination: Path,
    options: VideoOptions,
    on_frame: Callable[[int], None] | None,
) -> VideoReport:
    video = _main_video_stream(container, path=source)
    video.codec_context.thread_type = "AUTO"
    # bitexact keeps the muxer from stamping its own name, a creation date and random IDs into the file.
    container_options = {} if options.keep_metadata else {"fflags": "+bitexact"}
    try:
        output = av.open(str(temporary), "w", format=muxer, container_options=container_options)
    except (av.FFmpegError, OSError) as exc:
        raise _output_error(exc, path=destination) from exc
    try:
        encoder = _choose_encoder(output, options.codec)
        pixel_format = _output_pixel_format(encoder, layout.pixel_format)
        out_video = _add_video_stream(
            output, video, encoder=encoder, pixel_format=pixel_format, info=info, layout=layout, options=options
        )
        copies, dropped = _add_copied_streams(output, container, video, options=options, source=source)
        if options.keep_metadata:
            output.metadata.update(_kept_tags(container.metadata))

        def copy_packet(packet: av.Packet) -> None:
            if not _is_mov_text_gap(packet, output):
                packet.stream = copies[packet.stream.index]
                _mux(output, packet, path=destination)

        tally = _Tally()
        copied = tuple(container.streams[index] for index in copies)
        frames = _decoded_frames(
            container, video, tally, info=info, source=source, copied=copied, copy_packet=copy_packet
        )
        encoded = _encode_processed(
            process(frames),
            frames,
            tally,
            output,
            out_video,
            info=info,
            layout=layout,
            destination=destination,
            on_frame=on_frame,
        )
        _encode(output, out_video, None, path=destination)
    except BaseException:
        with contextlib.suppress(av.FFmpegError, OSError):
            output.close()
        raise
    try:
        output.close()  # writes the trailer (the MP4 index)
    except (av.FFmpegError, OSError) as exc:
        raise _output_error(exc, path=destination) from exc
    time_base = video.time_base
    duration_s = None
    if time_base and tally.first_pts is not None and tally.end_pts is not None:
        duration_s = float((tally.end_pts - tally.first_pts) * time_base)
    # More than rounding apart: a 29.97 fps video in a 1/15360 time base alternates 512 and 513 ticks.
    measured_vfr = (
        tally.min_interval is not None
        and tally.max_interval is not None
        and tally.max_interval > tally.min_interval * 1.01 + 1
    )
    return VideoReport(
        info=replace(info, is_vfr=measured_vfr),
        frames=encoded,
        encoder=encoder,
        crf=options.crf,
        duration_s=duration_s,
        copied_streams=len(copies),
        pixel_format=pixel_format,
        dropped_streams=dropped,
    )


def _encode_processed(
    processed: Iterator[np.ndarray],
    frames: Generator[np.ndarray, None, None],
    tally: _Tally,
    output: OutputContainer,
    out_video: VideoStream,
    *,
    info: VideoInfo,
    layout: _Layout,
    destination: Path,
    on_frame: Callable[[int], None] | None,
) -> int:
    """Encodes what ``processed`` yields, each with the timing of the frame it stands for."""
    expected_shape = (info.height, info.width, 3)
    time_base = out_video.codec_context.time_base
    encoded = 0
    try:
        for pixels in processed:
            if not tally.timings:
                raise ValueError(
                    f"process yielded frame {encoded + 1} before receiving it (it had received {tally.decoded})"
                )
            timing = tally.timings.popleft()
            if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.shape != expected_shape:
                got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
                raise ValueError(f"process must yield uint8 arrays of shape {expected_shape}, got {got}")
            frame = VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24").reformat(
                format=out_video.codec_context.pix_fmt,
                dst_colorspace=layout.colorspace,
                dst_color_range=layout.color_range,
            )
            frame.pts = timing.pts
            frame.duration = timing.duration
            frame.time_base = time_base
            _encode(output, out_video, frame, path=destination)
            encoded += 1
            if on_frame is not None:
                on_frame(encoded)
        if next(frames, None) is not None:
            raise ValueError(f"process yielded {encoded} frames, but the video has more than {tally.decoded - 1}")
    finally:
        close = getattr(processed, "close", None)
        if close is not None:
            close()
        frames.close()
    if tally.timings:
        raise ValueError(f"process yielded {encoded} frames for the {tally.decoded} frames of the video")
    return encoded


def _encode(output: OutputContainer, stream: VideoStream, frame: VideoFrame | None, *, path: Path) -> None:
    try:
        packets = stream.encode(frame)
    except (av.FFmpegError, OSError) as exc:
        raise _output_error(exc, path=path) from exc
    _mux(output, packets, path=path)


def _mux(output: OutputContainer, packets: av.Packet | list[av.Packet], *, path: Path) -> None:
    try:
        output.mux(packets)
    except (av.FFmpegError, OSError) as exc:
        raise _output_error(exc, path=path) from exc


def _output_error(exc: Exception, *, path: Path) -> OutputError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return OutputError(f"cannot write video: {reason}", path=path)


def _add_video_stream(
    output: OutputContainer,
    video: VideoStream,
    *,
    encoder: str,
    pixel_format: str,
    info: VideoInfo,
    layout: _Layout,
    options: VideoOptions,
) -> VideoStream:
    rate = video.average_rate or video.guessed_rate or Fraction(25)
    stream = output.add_stream(encoder, rate=rate, options=_quality_options(encoder, options))
    context = stream.codec_context
    context.width, context.height = info.width, info.height
    context.pix_fmt = pixel_format
    # The source's time base, so every timestamp carries over exactly (VFR stays VFR).
    stream.time_base = video.time_base
    context.time_base = video.time_base
    context.color_range = layout.color_range
    context.colorspace = layout.colorspace
    context.color_primaries = layout.color_primaries
    context.color_trc = layout.color_trc
    if video.codec_context.sample_aspect_ratio:
        context.sample_aspect_ratio = video.codec_context.sample_aspect_ratio
    if layout.display_matrix is not None:
        stream.set_display_matrix(layout.display_matrix)
    stream.disposition = video.disposition
    _copy_stream_tags(video, stream, keep=options.keep_metadata)
    return stream


def _add_copied_streams(
    output: OutputContainer, container: InputContainer, video: VideoStream, *, options: VideoOptions, source: Path
) -> tuple[dict[int, Stream], tuple[str, ...]]:
    """Adds an output stream per audio and subtitle stream; says why each other stream is left out."""
    copies: dict[int, Stream] = {}
    dropped: list[str] = []
    for stream in container.streams:
        if stream.index == video.index:
            continue
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown codec"
        described = f"stream #{stream.index} ({stream.type}, {codec})"
        if stream.type in ("audio", "subtitle"):
            try:
                copy = output.add_stream_from_template(stream)
            except (ValueError, av.FFmpegError) as exc:
                raise UnsupportedFormatError(
                    f"the {output.format.name} container cannot hold {described}; write another container",
                    path=source,
                ) from exc
            copy.disposition = stream.disposition
            _copy_stream_tags(stream, copy, keep=options.keep_metadata)
            copies[stream.index] = copy
        elif stream.type == "video" and stream.disposition & Disposition.attached_pic:
            dropped.append(f"{described}: cover picture, not anonymized")
        elif stream.type == "video":
            dropped.append(f"{described}: only the first video stream is anonymized")
        else:
            dropped.append(f"{described}: data and attachments are not copied")
    return copies, tuple(dropped)


def _kept_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags worth carrying over when metadata is kept: not those describing the old file's encoding."""
    brand_tags = {"major_brand", "minor_version", "compatible_brands"}
    return {
        key: value
        for key, value in tags.items()
        if key.lower() not in _STALE_STREAM_TAGS | brand_tags and not key.lower().startswith("_statistics")
    }


def _copy_stream_tags(source: Stream, target: Stream, *, keep: bool) -> None:
    if keep:
        tags = _kept_tags(source.metadata)
        if "name" in tags and "title" not in tags:
            tags["title"] = tags.pop("name")  # the MP4 demuxer reads a track title as "name"; muxers write "title"
        target.metadata.update(tags)
    elif source.language and source.language != "und":
        target.metadata["language"] = source.language


def _choose_encoder(output: OutputContainer, requested: str | None) -> str:
    supported = output.supported_codecs
    if requested is None:
        for name in _AUTO_ENCODERS:
            if name in supported and _encoder_opens(name):
                return name
        raise ConfigurationError(
            f"no video encoder for {output.format.name} files: this FFmpeg build opens none of"
            f" {', '.join(_AUTO_ENCODERS)}"
        )
    try:
        codec = av.Codec(requested, "w")
    except (ValueError, av.FFmpegError) as exc:
        available = ", ".join(name for name in _AUTO_ENCODERS if name in av.codecs_available)
        raise ConfigurationError(f"unknown video encoder {requested!r} (available: {available})") from exc
    if codec.type != "video":
        raise ConfigurationError(f"{requested!r} is a {codec.type} encoder, not a video encoder")
    if codec.name not in supported:
        raise ConfigurationError(f"{output.format.name} files cannot hold {codec.name} video")
    if not _encoder_opens(codec.name):
        raise ConfigurationError(f"the {codec.name} encoder does not open on this machine")
    return codec.name


@functools.cache
def _encoder_opens(name: str) -> bool:
    """Whether the encoder exists in this FFmpeg build and opens (a listed encoder may lack its library)."""
    try:
        codec = av.Codec(name, "w")
        context = codec.create("video")
        context.width, context.height = 64, 64
        context.pix_fmt = codec.video_formats[0].name if codec.video_formats else "yuv420p"
        context.time_base = Fraction(1, 25)
        context.framerate = Fraction(25)
        context.options = _quality_options(codec.name, VideoOptions())  # quiets x265's banner, too
        context.open()
    except (ValueError, av.FFmpegError):
        return False
    return True


def _output_pixel_format(encoder: str, source_format: str) -> str:
    """The source's pixel format if the encoder takes it, else the closest one it takes."""
    wanted = source_format.replace("yuvj", "yuv")  # the deprecated full-range names; the range is tagged
    offered = [f.name for f in av.Codec(encoder, "w").video_formats or () if not f.name.startswith("yuvj")]
    if not offered or wanted in offered:
        return wanted if offered else "yuv420p"
    best, _loss = find_best_pix_fmt_of_list(offered, wanted)
    return best.name if best is not None else offered[0]


def _quality_options(encoder: str, options: VideoOptions) -> dict[str, str]:
    """Maps x264's CRF and preset onto the encoder's own quality and speed settings."""
    crf, speed = options.crf, X264_PRESETS.index(options.preset)  # speed: 0 fastest ... 9 slowest
    if encoder in ("libx264", "libx264rgb"):
        return {"crf": str(crf), "preset": options.preset}
    if encoder == "libx265":
        return {"crf": str(crf), "preset": options.preset, "x265-params": "log-level=error"}
    if encoder in _CRF63_MINIMUM:
        crf63 = str(max(_CRF63_MINIMUM[encoder], round(crf * 63 / _CRF_MAX)))
        if encoder == "libsvtav1":
            return {"crf": crf63, "preset": str((12, 11, 10, 9, 8, 6, 4, 3, 2, 1)[speed])}
        cpu_used = str((5, 5, 4, 4, 3, 2, 1, 1, 0, 0)[speed])
        # VP8 treats the bitrate as a ceiling in CRF mode; VP9 and AV1 take 0 for "quality only".
        bitrate = "100M" if encoder == "libvpx" else "0"
        return {"crf": crf63, "b": bitrate, "cpu-used": cpu_used, "deadline": "good"}
    if encoder == "libopenh264":
        return {"rc_mode": "quality", "qmin": str(max(1, crf - 4)), "qmax": str(min(_CRF_MAX, crf + 4))}
    # Fixed quantizer (mpeg4 and the like): CRF halves the quantizer every 6 steps, qscale is linear.
    qscale = min(31, max(1, round(2 ** ((crf - 12) / 6))))
    return {"flags": "+qscale", "global_quality": str(qscale * _FF_QP2LAMBDA)}
