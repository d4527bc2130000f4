"""Writing a video: the processed frames re-encoded with their source timestamps, the carried streams
copied packet for packet, and the tags the metadata policy allows."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Generator, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.codec import find_best_pix_fmt_of_list
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from efface.errors import ConfigurationError, UnsupportedFormatError
from efface.media.video._decode import DecodeTally, Demuxer, Layout, VideoInfo, describe_stream
from efface.media.video._errors import output_error
from efface.media.video._options import CRF_MAX, X264_PRESETS, FrameProcessor, VideoOptions
from efface.records import VideoStats

__all__ = ["encode_video", "muxer_for"]

# The muxer that writes each suffix (FFmpeg's names; ".m4v" is Apple's flavour of MP4).
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".m4v": "ipod", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
# Automatic choice, best first: H.264 plays everywhere; the rest are for containers that refuse it
# (WebM takes only VP8, VP9 and AV1) or builds without it. Hardware encoders are left out on purpose:
# their output differs from machine to machine.
_AUTO_ENCODERS = ("libx264", "libopenh264", "libvpx-vp9", "libsvtav1", "libaom-av1", "libvpx", "mpeg4")
# Encoders whose quality scale runs 0-63 rather than x264's 0-51, with their lowest accepted value.
_CRF63_MINIMUM = {"libvpx-vp9": 0, "libvpx": 4, "libsvtav1": 1, "libaom-av1": 0}
_FF_QP2LAMBDA = 118
# Stream tags that describe the old encoding, not the content; the muxer writes fresh ones.
_STALE_STREAM_TAGS = frozenset({"duration", "encoder", "number_of_frames", "number_of_bytes", "bps"})
# An empty MP4 text sample: a gap between subtitles. The MP4 muxer writes its own, so copying the
# source's as well would double them.
_EMPTY_MOV_TEXT = b"\x00\x00"


def muxer_for(destination: Path) -> str:
    """FFmpeg's muxer for the destination's suffix.

    Raises:
        UnsupportedFormatError: efface writes no videos with that suffix.
    """
    muxer = _MUXERS.get(destination.suffix.lower())
    if muxer is None:
        supported = ", ".join(sorted(_MUXERS))
        raise UnsupportedFormatError(
            f"cannot write {destination.suffix!r} videos (supported: {supported})", path=destination
        )
    return muxer


def encode_video(
    source: Demuxer,
    temporary: Path,
    process: FrameProcessor,
    *,
    muxer: str,
    destination: Path,
    options: VideoOptions,
    on_frame: Callable[[int], None] | None,
) -> VideoStats:
    """Makes the one pass over ``source``, writing ``temporary`` with ``muxer``; see ``VideoSource.transcode``.

    Returns:
        What was written; no face counts (the caller adds them).
    """
    video = source.video
    # bitexact keeps the muxer from stamping its own name, a creation date and random IDs into the file.
    container_options = {} if options.keep_metadata else {"fflags": "+bitexact"}
    try:
        output = av.open(str(temporary), "w", format=muxer, container_options=container_options)
    except (av.FFmpegError, OSError) as exc:
        raise output_error(exc, path=destination) from exc
    tally = DecodeTally()
    try:
        encoder = _choose_encoder(output, options.codec)
        pixel_format = _output_pixel_format(encoder, source.layout.pixel_format)
        out_video = _add_video_stream(output, source, encoder=encoder, pixel_format=pixel_format, options=options)
        copies = _add_copied_streams(output, source, options=options)
        if options.keep_metadata:
            output.metadata.update(_kept_tags(source.container.metadata))

        def copy_packet(packet: Packet[Stream]) -> None:
            if not _is_mov_text_gap(packet, output):
                packet.stream = copies[packet.stream.index]
                _mux(output, packet, path=destination)

        frames = source.frames(tally, copy_packet=copy_packet)
        encoded = _encode_processed(
            process(frames),
            frames,
            tally,
            output,
            out_video,
            info=source.info,
            layout=source.layout,
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
        raise output_error(exc, path=destination) from exc
    return VideoStats(
        frames=encoded,
        encoder=encoder,
        crf=options.crf,
        duration_s=tally.duration_s(video.time_base),
        fps=source.info.fps,
        copied_streams=len(copies),
        pixel_format=pixel_format,
        is_vfr=tally.is_vfr,
        dropped_streams=source.dropped,
    )


def _encode_processed(
    processed: Iterator[np.ndarray],
    frames: Generator[np.ndarray, None, None],
    tally: DecodeTally,
    output: OutputContainer,
    out_video: VideoStream,
    *,
    info: VideoInfo,
    layout: Layout,
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


def _is_mov_text_gap(packet: Packet[Stream], output: OutputContainer) -> bool:
    return (
        output.format.name in ("mp4", "mov", "ipod")
        and packet.stream.codec_context is not None
        and packet.stream.codec_context.name == "mov_text"
        and bytes(packet) == _EMPTY_MOV_TEXT
    )


def _encode(output: OutputContainer, stream: VideoStream, frame: VideoFrame | None, *, path: Path) -> None:
    try:
        packets = stream.encode(frame)
    except (av.FFmpegError, OSError) as exc:
        raise output_error(exc, path=path) from exc
    _mux(output, packets, path=path)


def _mux(output: OutputContainer, packets: Packet[Stream] | Sequence[Packet[Stream]], *, path: Path) -> None:
    try:
        output.mux(packets)
    except (av.FFmpegError, OSError) as exc:
        raise output_error(exc, path=path) from exc


def _add_video_stream(
    output: OutputContainer, source: Demuxer, *, encoder: str, pixel_format: str, options: VideoOptions
) -> VideoStream:
    video, layout = source.video, source.layout
    rate = video.average_rate or video.guessed_rate or Fraction(25)
    stream = output.add_stream(encoder, rate=rate, options=_quality_options(encoder, options))
    if not isinstance(stream, VideoStream):
        raise ConfigurationError(f"{encoder!r} is not a video encoder")
    context = stream.codec_context
    context.width, context.height = source.info.width, source.info.height
    context.pix_fmt = pixel_format
    if options.encoder_threads is not None:
        context.thread_count = options.encoder_threads
    # The source's time base (the one its frames are timed in), so every timestamp carries over exactly
    # (VFR stays VFR).
    time_base = video.time_base or Fraction(1, 90_000)
    stream.time_base = time_base
    context.time_base = time_base
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


def _add_copied_streams(output: OutputContainer, source: Demuxer, *, options: VideoOptions) -> dict[int, Stream]:
    """An output stream per carried (audio and subtitle) stream, by the source stream's index."""
    copies: dict[int, Stream] = {}
    for stream in source.carried:
        try:
            copy = output.add_stream_from_template(stream)
        except (ValueError, av.FFmpegError) as exc:
            raise UnsupportedFormatError(
                f"the {output.format.name} container cannot hold {describe_stream(stream)}; write another container",
                path=source.path,
            ) from exc
        copy.disposition = stream.disposition
        _copy_stream_tags(stream, copy, keep=options.keep_metadata)
        copies[stream.index] = copy
    return copies


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
        crf63 = str(max(_CRF63_MINIMUM[encoder], round(crf * 63 / CRF_MAX)))
        if encoder == "libsvtav1":
            return {"crf": crf63, "preset": str((12, 11, 10, 9, 8, 6, 4, 3, 2, 1)[speed])}
        cpu_used = str((5, 5, 4, 4, 3, 2, 1, 1, 0, 0)[speed])
        # VP8 treats the bitrate as a ceiling in CRF mode; VP9 and AV1 take 0 for "quality only".
        bitrate = "100M" if encoder == "libvpx" else "0"
        return {"crf": crf63, "b": bitrate, "cpu-used": cpu_used, "deadline": "good"}
    if encoder == "libopenh264":
        return {"rc_mode": "quality", "qmin": str(max(1, crf - 4)), "qmax": str(min(CRF_MAX, crf + 4))}
    # Fixed quantizer (mpeg4 and the like): CRF halves the quantizer every 6 steps, qscale is linear.
    qscale = min(31, max(1, round(2 ** ((crf - 12) / 6))))
    return {"flags": "+qscale", "global_quality": str(qscale * _FF_QP2LAMBDA)}
