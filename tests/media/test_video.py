"""Tests for efface.media.video on real videos that the tests write with PyAV (no mocks)."""

from __future__ import annotations

import io
import itertools
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from efface.errors import (
    ConfigurationError,
    CorruptImageError,
    EffaceError,
    ImageTooLargeError,
    InputNotFoundError,
    OutputError,
    UnsupportedFormatError,
)
from efface.media.atomic import atomic_write_with, find_leftovers, is_leftover
from efface.media.video import FrameProcessor, VideoInfo, VideoOptions, is_video_path, open_video
from efface.records import VideoStats

HEIGHT, WIDTH = 64, 96
FRAMES = 30
# Irregular frame intervals in milliseconds: a variable-frame-rate source.
PTS_MS = tuple(itertools.accumulate((73 if i % 3 == 0 else 40 for i in range(FRAMES - 1)), initial=0))
IDENTIFYING_TAGS = {
    "title": "Alice at home",
    "comment": "filmed by Bob",
    "artist": "Bob Smith",
    "location": "+48.8584+002.2945/",
    "creation_time": "2024-05-01T10:00:00.000000Z",
}
AUDIO_FOR = {".mp4": "aac", ".mov": "aac", ".mkv": "libopus", ".webm": "libopus"}
SUBTITLES_FOR = {".mp4": "mov_text", ".mkv": "subrip"}


def _picture(index: int) -> np.ndarray:
    """A dark gradient with a bright square moving across it."""
    picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    picture[:, :, 2] = np.linspace(0, 60, WIDTH, dtype=np.uint8)[None, :]
    x = (index * 3) % (WIDTH - 16)
    picture[20:36, x : x + 16] = 250
    return picture


def _add_audio(container: av.container.OutputContainer, codec: str) -> Callable[[float], None]:
    stream = container.add_stream(codec, rate=48000)
    stream.layout = "stereo"

    def write(duration_s: float) -> None:
        size = stream.codec_context.frame_size or 1024
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(duration_s * 48000)) / 48000)).astype(np.float32)
        for start in range(0, len(tone) - size + 1, size):
            samples = np.ascontiguousarray(np.repeat(tone[None, start : start + size], 2, axis=0))
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())

    return write


def _write_video(
    path: Path,
    *,
    audio: bool = True,
    rotation_deg: int = 90,
    tags: dict[str, str] | None = None,
    extra_video: bool = False,
    subtitles: bool = False,
    faststart: bool = False,
) -> Path:
    """A VFR H.264 video with a sine-tone audio track, rotation and identifying tags, written by PyAV."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", container_options=options) as container:
        container.metadata.update(IDENTIFYING_TAGS if tags is None else tags)
        video = container.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "20"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        video.metadata["title"] = "Alice's phone camera"
        if rotation_deg:
            video.set_display_rotation(rotation_deg)
        write_audio = _add_audio(container, AUDIO_FOR[path.suffix]) if audio else None
        subtitle = container.add_mux_stream(SUBTITLES_FOR[path.suffix]) if subtitles else None
        second = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"}) if extra_video else None
        if second is not None:
            second.width, second.height, second.pix_fmt = 48, 32, "yuv420p"
        for index, pts_ms in enumerate(PTS_MS):
            frame = av.VideoFrame.from_ndarray(_picture(index), format="rgb24")
            frame.pts, frame.time_base = pts_ms, Fraction(1, 1000)
            container.mux(video.encode(frame))
            if second is not None:
                other = av.VideoFrame.from_ndarray(np.full((32, 48, 3), index * 8, np.uint8), format="rgb24")
                other.pts = index
                container.mux(second.encode(other))
            if subtitle is not None and index % 10 == 0:
                text = f"Hello Alice {index}".encode()
                payload = text if path.suffix == ".mkv" else len(text).to_bytes(2, "big") + text
                packet = av.Packet(payload)
                packet.pts = packet.dts = pts_ms
                packet.duration, packet.time_base, packet.stream = 200, Fraction(1, 1000), subtitle
                container.mux(packet)
        container.mux(video.encode())
        if second is not None:
            container.mux(second.encode())
        if write_audio is not None:
            write_audio((PTS_MS[-1] + 40) / 1000)
    return path


def _write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        _add_audio(container, AUDIO_FOR[path.suffix])(0.5)
    return path


@dataclass(frozen=True)
class _Read:
    """What a video file holds, read back with PyAV."""

    times_s: list[Fraction]
    frames: list[np.ndarray]
    rotation_deg: int
    size_wh: tuple[int, int]
    pixel_format: str
    audio: list[tuple[Fraction, bytes]]
    subtitles: list[tuple[Fraction, bytes]]
    stream_types: list[str]
    tags: dict[str, str]
    video_tags: dict[str, str]


def _read(path: Path) -> _Read:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        decoded = list(container.decode(video))
        times = [frame.pts * frame.time_base for frame in decoded]
        frames = [frame.to_ndarray(format="rgb24") for frame in decoded]
        stream_types = [stream.type for stream in container.streams]
        tags = {key.lower(): value for key, value in container.metadata.items()}
        video_tags = {key.lower(): value for key, value in video.metadata.items()}
    packets: dict[str, list[tuple[Fraction, bytes]]] = {"audio": [], "subtitle": []}
    with av.open(str(path)) as container:
        wanted = [*container.streams.audio, *container.streams.subtitles]
        for packet in container.demux(wanted) if wanted else ():
            if packet.size:
                packets[packet.stream.type].append((packet.pts * packet.time_base, bytes(packet)))
    return _Read(
        times_s=times,
        frames=frames,
        rotation_deg=decoded[0].rotation % 360,
        size_wh=(decoded[0].width, decoded[0].height),
        pixel_format=decoded[0].format.name,
        audio=packets["audio"],
        subtitles=packets["subtitle"],
        stream_types=stream_types,
        tags=tags,
        video_tags=video_tags,
    )


def _invert(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for frame in frames:
        yield 255 - frame


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _probe(path: Path) -> VideoInfo:
    with open_video(path, options=VideoOptions()) as video:
        return video.info


def _transcode(
    source: Path,
    destination: Path,
    process: FrameProcessor,
    *,
    options: VideoOptions,
    on_frame: Callable[[int], None] | None = None,
    permissions_from: Path | None = None,
) -> tuple[VideoInfo, VideoStats]:
    """What inspection found and what the transcode wrote, from one open."""
    with open_video(source, options=options) as video:
        stats = video.transcode(
            destination, process, options=options, on_frame=on_frame, permissions_from=permissions_from
        )
        return video.info, stats


def _frames(path: Path) -> Iterator[np.ndarray]:
    with open_video(path, options=VideoOptions()) as video:
        yield from video.frames()


# --- names and options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip.mp4", True),
        ("CLIP.MOV", True),
        ("a.m4v", True),
        ("a.mkv", True),
        ("a.avi", True),
        ("a.webm", True),
        ("photo.jpg", False),
        ("clip.mp4.txt", False),
        ("mp4", False),
        ("", False),
    ],
)
def test_is_video_path(name: str, expected: bool) -> None:
    assert is_video_path(Path(name)) is expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crf": -1}, "crf must be in [0, 51], got -1"),
        ({"crf": 52}, "crf must be in [0, 51], got 52"),
        ({"preset": "quick"}, "got 'quick'"),
        ({"max_pixels": 0}, "max_pixels must be >= 1, got 0"),
        ({"codec": " "}, "got an empty string"),
        ({"encoder_threads": 0}, "encoder_threads must be >= 1 or None, got 0"),
    ],
)
def test_video_options_refuse_impossible_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        VideoOptions(**kwargs)  # type: ignore[arg-type]


# --- probing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "declared_frames"), [(".mp4", FRAMES), (".mkv", None)])
def test_probe_reads_layout_timing_and_rotation(tmp_path: Path, suffix: str, declared_frames: int | None) -> None:
    source = _write_video(tmp_path / f"clip{suffix}", rotation_deg=270)

    info = _probe(source)

    assert info.resolution_wh == (WIDTH, HEIGHT)
    assert (info.codec, info.pixel_format, info.rotation_deg) == ("h264", "yuv420p", 270)
    assert info.declared_frames == declared_frames
    assert (info.audio_streams, info.subtitle_streams) == (1, 0)
    assert info.duration_s == pytest.approx((PTS_MS[-1] + 40) / 1000, abs=0.05)
    assert info.fps is not None and 10 < info.fps < 30


# --- what a transcode keeps and drops ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_transcode_keeps_every_timestamp_the_audio_and_the_rotation(tmp_path: Path, suffix: str) -> None:
    source = _write_video(tmp_path / f"clip{suffix}")
    destination = tmp_path / f"out{suffix}"
    before = _read(source)

    info, stats = _transcode(source, destination, _invert, options=VideoOptions())

    after = _read(destination)
    assert stats.frames == len(after.frames) == len(before.frames) == FRAMES
    assert after.times_s == before.times_s == [Fraction(ms, 1000) for ms in PTS_MS]
    assert after.size_wh == before.size_wh == (WIDTH, HEIGHT)
    assert after.pixel_format == stats.pixel_format == "yuv420p"
    assert after.rotation_deg == before.rotation_deg == info.rotation_deg == 90
    assert after.audio == before.audio  # byte-identical packets at the same times, in order
    assert len(after.audio) > 20
    assert after.stream_types == before.stream_types == ["video", "audio"]
    assert stats.is_vfr
    assert stats.copied_streams == 1
    assert stats.dropped_streams == ()
    assert stats.encoder in ("libx264", "libopenh264")
    assert stats.duration_s == pytest.approx((PTS_MS[-1] + 40) / 1000, abs=0.002)
    for original, anonymized in zip(before.frames, after.frames, strict=True):
        as_int = anonymized.astype(np.int16)
        assert np.abs(as_int - (255 - original.astype(np.int16))).mean() < 6  # it is the inverted frame
        assert np.abs(as_int - original).mean() > 100  # and every frame changed


@pytest.mark.parametrize("rotation_deg", [0, 90, 180, 270])
def test_rotation_is_reported_and_kept(tmp_path: Path, rotation_deg: int) -> None:
    source = _write_video(tmp_path / "clip.mp4", audio=False, rotation_deg=rotation_deg)

    info, _stats = _transcode(source, tmp_path / "out.mp4", _invert, options=VideoOptions())

    assert info.rotation_deg == rotation_deg
    assert _read(tmp_path / "out.mp4").rotation_deg == rotation_deg


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_identifying_metadata_is_dropped_by_default(tmp_path: Path, suffix: str) -> None:
    source = _write_video(tmp_path / f"clip{suffix}")
    before = _read(source)
    assert {"title", "comment", "artist", "location", "creation_time"} <= before.tags.keys()

    _transcode(source, tmp_path / f"out{suffix}", _invert, options=VideoOptions())

    after = _read(tmp_path / f"out{suffix}")
    assert IDENTIFYING_TAGS.keys() & after.tags.keys() == set()
    assert set(IDENTIFYING_TAGS.values()) & set(after.tags.values()) == set()
    assert after.tags.get("encoder", "Lavf") == "Lavf"  # no muxer version (Matroska requires a muxer name)
    assert "Alice's phone camera" not in after.video_tags.values()
    assert b"Alice" not in (tmp_path / f"out{suffix}").read_bytes()


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_keep_metadata_keeps_the_tags(tmp_path: Path, suffix: str) -> None:
    source = _write_video(tmp_path / f"clip{suffix}")

    _transcode(source, tmp_path / f"out{suffix}", _invert, options=VideoOptions(keep_metadata=True))

    after = _read(tmp_path / f"out{suffix}")
    for key in ("title", "comment", "artist", "location", "creation_time"):
        assert after.tags[key] == IDENTIFYING_TAGS[key]
    assert "Alice's phone camera" in after.video_tags.values()


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_subtitles_are_copied_and_extra_video_streams_dropped(tmp_path: Path, suffix: str) -> None:
    source = _write_video(tmp_path / f"clip{suffix}", subtitles=True, extra_video=True)
    before = _read(source)

    _info, stats = _transcode(source, tmp_path / f"out{suffix}", _invert, options=VideoOptions())

    after = _read(tmp_path / f"out{suffix}")
    assert before.stream_types == ["video", "audio", "subtitle", "video"]
    assert after.stream_types == ["video", "audio", "subtitle"]
    assert after.subtitles == before.subtitles
    assert any(b"Hello Alice 10" in payload for _time, payload in after.subtitles)
    assert stats.copied_streams == 2
    assert len(stats.dropped_streams) == 1
    assert "only the first video stream is anonymized" in stats.dropped_streams[0]


def test_cover_art_and_attachments_are_dropped(tmp_path: Path) -> None:
    source = tmp_path / "clip.mkv"
    cover = io.BytesIO()
    Image.fromarray(_picture(0)).save(cover, format="JPEG")
    with av.open(str(source), "w") as container:
        container.add_attachment("cover.jpg", "image/jpeg", cover.getvalue())  # a picture that may show a face
        container.add_attachment("notes.txt", "text/plain", b"Alice, 12 Rue de Rivoli")
        video = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(_picture(index), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())

    _info, stats = _transcode(source, tmp_path / "out.mkv", _invert, options=VideoOptions())

    assert stats.frames == 10
    assert [line.split(":")[1].strip() for line in stats.dropped_streams] == [
        "cover picture, not anonymized",
        "data and attachments are not copied",
    ]
    assert _read(tmp_path / "out.mkv").stream_types == ["video"]
    assert b"Rivoli" not in (tmp_path / "out.mkv").read_bytes()


def test_process_may_read_ahead_before_yielding(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mkv")

    def look_ahead(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        window: list[np.ndarray] = []
        for frame in frames:
            window.append(frame)
            if len(window) == 5:
                yield 255 - window.pop(0)
        for frame in window:
            yield 255 - frame

    _transcode(source, tmp_path / "ahead.mkv", look_ahead, options=VideoOptions())
    _transcode(source, tmp_path / "plain.mkv", _invert, options=VideoOptions())

    ahead, plain = _read(tmp_path / "ahead.mkv"), _read(tmp_path / "plain.mkv")
    assert ahead.times_s == plain.times_s
    for one, other in zip(ahead.frames, plain.frames, strict=True):
        # The same frames in the same order; x264's threads may round a few pixels differently.
        assert np.abs(one.astype(np.int16) - other).mean() < 0.5


def test_process_gets_the_stored_frames_and_on_frame_counts_them(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mp4", audio=False)
    seen: list[np.ndarray] = []
    counts: list[int] = []

    def keep(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            seen.append(frame)
            yield frame

    _transcode(source, tmp_path / "out.mp4", keep, options=VideoOptions(), on_frame=counts.append)

    assert counts == list(range(1, FRAMES + 1))
    assert all(frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 for frame in seen)  # not rotated
    # The bright square is where _picture put it, in stored (unrotated) coordinates.
    assert seen[0][28, 8].min() > 200 and seen[0][28, 40].max() < 100


def test_in_place_replaces_the_source_and_keeps_its_permissions(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mp4")
    source.chmod(0o640)
    original = source.read_bytes()

    _transcode(source, source, _invert, options=VideoOptions(), permissions_from=source)

    assert source.read_bytes() != original
    assert stat.S_IMODE(source.stat().st_mode) == 0o640
    assert _files(tmp_path) == {"clip.mp4"}
    assert len(_read(source).frames) == FRAMES


@pytest.mark.parametrize(
    ("suffix", "codec", "expected_encoder"),
    [
        (".webm", None, "libvpx-vp9"),
        (".mkv", None, "libx264"),
        (".m4v", None, "libx264"),
        (".avi", "mpeg4", "mpeg4"),
        (".mp4", "libx265", "libx265"),
    ],
)
def test_encoder_fits_the_container(tmp_path: Path, suffix: str, codec: str | None, expected_encoder: str) -> None:
    if expected_encoder not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {expected_encoder}")
    source = _write_video(tmp_path / "clip.mkv", audio=suffix == ".webm")
    destination = tmp_path / f"out{suffix}"

    _info, stats = _transcode(source, destination, _invert, options=VideoOptions(codec=codec, crf=30))

    after = _read(destination)
    assert stats.encoder == expected_encoder
    assert len(after.frames) == FRAMES
    assert np.abs(after.frames[5].astype(np.int16) - (255 - _picture(5).astype(np.int16))).mean() < 12


# --- refusals --------------------------------------------------------------------------------------


def _truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _scramble_video_packet(path: Path, index: int = 10) -> Path:
    """Overwrites one video packet in the middle of the stream with random bytes."""
    with av.open(str(path)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    position, size = packets[index]
    data = bytearray(path.read_bytes())
    data[position : position + size] = np.random.default_rng(index).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _empty(folder: Path) -> Path:
    (folder / "empty.mp4").write_bytes(b"")
    return folder / "empty.mp4"


def _cut_mp4(folder: Path) -> Path:
    return _truncate(_write_video(folder / "cut.mp4"), 0.6)  # the index (moov) is at the end: lost


def _cut_faststart_mp4(folder: Path) -> Path:
    return _truncate(_write_video(folder / "cut.mp4", faststart=True), 0.6)  # index first: frames lost


def _cut_mkv(folder: Path) -> Path:
    return _truncate(_write_video(folder / "cut.mkv"), 0.6)


def _damaged_mp4(folder: Path) -> Path:
    return _scramble_video_packet(_write_video(folder / "bad.mp4"))


def _damaged_mkv(folder: Path) -> Path:
    return _scramble_video_packet(_write_video(folder / "bad.mkv"))


def _audio_only_mp4(folder: Path) -> Path:
    return _write_audio_only(folder / "song.mp4")


def _audio_only_mkv(folder: Path) -> Path:
    return _write_audio_only(folder / "song.mkv")


def _text_named_mov(folder: Path) -> Path:
    (folder / "notes.mov").write_text("meeting notes, not a video\n" * 30)
    return folder / "notes.mov"


def _text_named_txt(folder: Path) -> Path:
    (folder / "notes.txt").write_text("meeting notes, not a video\n" * 30)
    return folder / "notes.txt"


def _missing(folder: Path) -> Path:
    return folder / "missing.mp4"


def _folder(folder: Path) -> Path:
    (folder / "folder.mp4").mkdir()
    return folder / "folder.mp4"


BAD_INPUTS = [
    (_empty, CorruptImageError, "empty file", True),
    (_cut_mp4, CorruptImageError, "named .mp4 but its content is not a video", True),
    (_cut_faststart_mp4, CorruptImageError, "truncated or damaged", False),
    (_cut_mkv, CorruptImageError, "truncated or damaged", False),
    (_damaged_mp4, CorruptImageError, "cannot decode video", False),
    (_damaged_mkv, CorruptImageError, "truncated or damaged", False),
    (_audio_only_mp4, UnsupportedFormatError, r"no video stream \(streams: audio \(aac\)\)", True),
    (_audio_only_mkv, UnsupportedFormatError, r"no video stream \(streams: audio \(opus\)\)", True),
    (_text_named_mov, CorruptImageError, "named .mov but its content is not a video", True),
    (_text_named_txt, UnsupportedFormatError, "not a video format efface can read", True),
    (_missing, InputNotFoundError, "no such file", True),
    (_folder, UnsupportedFormatError, "is a folder", True),
]


@pytest.mark.parametrize(
    ("make", "error", "message", "probe_fails"),
    [pytest.param(*case, id=case[0].__name__.strip("_")) for case in BAD_INPUTS],
)
def test_bad_input_is_refused_and_left_untouched(
    tmp_path: Path, make: Callable[[Path], Path], error: type[EffaceError], message: str, probe_fails: bool
) -> None:
    source = make(tmp_path)
    original = source.read_bytes() if source.is_file() else None
    names = _files(tmp_path)

    with pytest.raises(error, match=message) as caught:
        _transcode(source, source, _invert, options=VideoOptions())

    assert caught.value.path == source
    assert "\n" not in str(caught.value)
    assert (source.read_bytes() if source.is_file() else None) == original
    assert _files(tmp_path) == names
    if probe_fails:
        with pytest.raises(error, match=message):
            _probe(source)


_READ_LOCKED = """
import sys
from pathlib import Path
from efface.errors import UnreadableFileError
from efface.media.video import VideoOptions, open_video
source = Path(sys.argv[1])
try:
    with open_video(source, options=VideoOptions()) as video:
        video.transcode(source, lambda frames: frames, options=VideoOptions())
except UnreadableFileError as exc:
    print(type(exc).__name__, exc.path == source, exc.message)
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unreadable_file_is_refused(tmp_path: Path, unprivileged: Callable[[list[str]], list[str]]) -> None:
    source = _write_video(tmp_path / "clip.mp4", audio=False)
    original = source.read_bytes()
    source.chmod(0)
    command = [sys.executable, "-c", _READ_LOCKED, str(source)]
    command = unprivileged(command)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    finally:
        source.chmod(0o600)
    assert proc.stdout.startswith("UnreadableFileError True cannot read"), proc.stdout + proc.stderr
    assert source.read_bytes() == original
    assert _files(tmp_path) == {"clip.mp4"}


def test_frames_over_the_pixel_limit_are_refused(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mp4", audio=False)

    with pytest.raises(ImageTooLargeError, match="96x64"):
        _transcode(source, tmp_path / "out.mp4", _invert, options=VideoOptions(max_pixels=96 * 64 - 1))

    assert _files(tmp_path) == {"clip.mp4"}


def test_audio_the_destination_cannot_hold_is_refused(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mp4")  # AAC, which WebM does not take

    with pytest.raises(UnsupportedFormatError, match="cannot hold stream #1"):
        _transcode(source, tmp_path / "out.webm", _invert, options=VideoOptions())

    assert _files(tmp_path) == {"clip.mp4"}


def test_unknown_destination_suffix_is_refused(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mp4", audio=False)

    with pytest.raises(UnsupportedFormatError, match=r"cannot write '\.flv' videos"):
        _transcode(source, tmp_path / "out.flv", _invert, options=VideoOptions())


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        ("no-such-encoder", "unknown video encoder 'no-such-encoder'"),
        ("aac", "not a video encoder"),
        ("mpeg4", "webm files cannot hold mpeg4"),
    ],
)
def test_impossible_encoder_choice_is_a_configuration_error(tmp_path: Path, codec: str, message: str) -> None:
    source = _write_video(tmp_path / "clip.mkv", audio=False)

    with pytest.raises(ConfigurationError, match=message):
        _transcode(source, tmp_path / "out.webm", _invert, options=VideoOptions(codec=codec))

    assert _files(tmp_path) == {"clip.mkv"}


def _too_few(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for index, frame in enumerate(frames):
        if index < FRAMES - 1:
            yield frame


def _too_many(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for frame in frames:
        yield frame
    yield frame


def _stops_early(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield from itertools.islice(frames, 10)


def _yields_first(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    yield from frames


def _wrong_shape(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for frame in frames:
        yield frame[:, :-1]


def _wrong_dtype(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for frame in frames:
        yield frame.astype(np.float32)


def _crashes(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for index, frame in enumerate(frames):
        if index == 12:
            raise RuntimeError("detector crashed")
        yield frame


@pytest.mark.parametrize(
    ("process", "error", "message"),
    [
        (_too_few, ValueError, f"process yielded {FRAMES - 1} frames for the {FRAMES} frames"),
        (_too_many, ValueError, f"process yielded frame {FRAMES + 1} before receiving it"),
        (_stops_early, ValueError, "process yielded 10 frames, but the video has more"),
        (_yields_first, ValueError, r"process yielded frame 1 before receiving it \(it had received 0\)"),
        (_wrong_shape, ValueError, r"shape \(64, 96, 3\), got uint8 \(64, 95, 3\)"),
        (_wrong_dtype, ValueError, "got float32"),
        (_crashes, RuntimeError, "detector crashed"),
    ],
    ids=["too-few", "too-many", "stops-early", "yields-before-reading", "wrong-shape", "wrong-dtype", "crashes"],
)
def test_a_misbehaving_process_leaves_the_original_untouched(
    tmp_path: Path,
    process: Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]],
    error: type[Exception],
    message: str,
) -> None:
    source = _write_video(tmp_path / "clip.mp4")
    original = source.read_bytes()

    with pytest.raises(error, match=message):
        _transcode(source, source, process, options=VideoOptions())

    assert source.read_bytes() == original
    assert _files(tmp_path) == {"clip.mp4"}


def test_unwritable_destination_is_an_output_error(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mp4", audio=False)

    with pytest.raises(OutputError, match="cannot write"):
        _transcode(source, tmp_path / "no-such-folder" / "out.mp4", _invert, options=VideoOptions())


# --- frames (dry runs) -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_frames_decodes_every_stored_frame_and_writes_nothing(tmp_path: Path, suffix: str) -> None:
    source = _write_video(tmp_path / f"clip{suffix}")

    frames = list(_frames(source))

    assert len(frames) == FRAMES
    for index, frame in enumerate(frames):
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8  # stored, not rotated
        assert np.abs(frame.astype(np.int16) - _picture(index)).mean() < 6
    assert _files(tmp_path) == {f"clip{suffix}"}


@pytest.mark.parametrize("make", [_cut_mkv, _damaged_mp4, _audio_only_mp4, _missing], ids=lambda f: f.__name__)
def test_frames_refuses_what_transcode_refuses(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    source = make(tmp_path)
    expected = next(error for maker, error, _message, _probe in BAD_INPUTS if maker is make)

    with pytest.raises(expected) as caught:
        for _frame in _frames(source):
            pass

    assert caught.value.path == source


# --- one open per file ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_inspection_and_transcode_share_one_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, count_av_opens: Callable[[], list[tuple[str, str]]]
) -> None:
    source = _write_video(tmp_path / f"clip{suffix}", subtitles=True)
    before = _read(source)
    opened = count_av_opens()

    with open_video(source, options=VideoOptions()) as video:
        assert video.info.rotation_deg == 90
        stats = video.transcode(source, _invert, options=VideoOptions())

    assert [mode for _name, mode in opened] == ["r", "w"]  # the source, then the temporary file beside it
    assert opened[0][0] == source.name != opened[1][0]
    after = _read(source)  # the packets inspection read first are not lost
    assert stats.frames == len(after.frames) == FRAMES
    assert (after.audio, after.subtitles) == (before.audio, before.subtitles)


def test_frames_share_the_open_of_the_inspection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count_av_opens: Callable[[], list[tuple[str, str]]]
) -> None:
    source = _write_video(tmp_path / "clip.mp4")
    opened = count_av_opens()

    with open_video(source, options=VideoOptions()) as video:
        frames = list(video.frames())

    assert len(frames) == FRAMES
    assert opened == [("clip.mp4", "r")]


def test_a_source_is_read_once(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mkv", audio=False)

    with open_video(source, options=VideoOptions()) as video:
        assert len(list(video.frames())) == FRAMES
        with pytest.raises(RuntimeError, match="already read"):
            video.transcode(tmp_path / "out.mkv", _invert, options=VideoOptions())
        with pytest.raises(RuntimeError, match="already read"):
            next(iter(video.frames()))

    assert _files(tmp_path) == {"clip.mkv"}
    with pytest.raises(RuntimeError, match="is closed"):
        next(iter(video.frames()))


# --- kill safety -----------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from efface.media.video import VideoOptions, open_video

    def slow(frames):
        for frame in frames:
            time.sleep(0.03)
            yield 255 - frame

    path = Path(sys.argv[1])
    with open_video(path, options=VideoOptions()) as video:
        video.transcode(path, slow, options=VideoOptions(), on_frame=lambda n: print(n, flush=True))
    """
)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_sigkill_mid_transcode_leaves_the_original_and_a_marked_temp_file(tmp_path: Path) -> None:
    source = _write_video(tmp_path / "clip.mp4")
    original = source.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(source)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert child.stdout is not None
    for line in child.stdout:
        if int(line) >= 10:  # well inside the encoding, with a partial temporary file on disk
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()

    assert source.read_bytes() == original
    leftovers = [tmp_path / name for name in _files(tmp_path) - {"clip.mp4"}]
    assert len(leftovers) == 1 and is_leftover(leftovers[0])  # the half-written output, marked for cleanup
    assert list(find_leftovers(tmp_path)) == leftovers


# --- atomic_write_with (the writer the video path uses) ---------------------------------------------


def test_atomic_write_with_swaps_in_what_the_writer_wrote(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    target.chmod(0o644)
    seen: list[Path] = []

    def write(path: Path) -> int:
        seen.append(path)
        assert is_leftover(path) and path.suffix == ".mp4" and path.read_bytes() == b""
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.write_bytes(b"new content")
        return 42

    assert atomic_write_with(target, write, permissions_from=target) == 42

    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert _files(tmp_path) == {"clip.mp4"} and not seen[0].exists()


@pytest.mark.parametrize("failure", [ValueError("writer bug"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_atomic_write_with_removes_the_temp_file_when_the_writer_fails(tmp_path: Path, failure: BaseException) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"original")

    def write(path: Path) -> None:
        path.write_bytes(b"half")
        raise failure

    with pytest.raises(type(failure)):
        atomic_write_with(target, write)

    assert target.read_bytes() == b"original"
    assert _files(tmp_path) == {"clip.mp4"}


def test_atomic_write_with_reports_a_missing_folder_as_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_with(tmp_path / "missing" / "clip.mp4", lambda path: None)
