"""Content sniffing: real files of each container written by Pillow and FFmpeg, and heads that only look alike."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from efface.media.sniff import MediaKind, refusal, sniff, sniff_file


def _video(path: Path, *, muxer: str, codec: str, options: dict[str, str] | None = None) -> Path:
    with av.open(str(path), "w", format=muxer, options=options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 40, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    ("name", "muxer", "codec", "options", "expected_format"),
    [
        ("clip.mp4", "mp4", "libx264", None, "MP4/QuickTime"),
        ("clip.3gp", "3gp", "mpeg4", None, "MP4/QuickTime"),
        ("clip.mkv", "matroska", "libx264", None, "Matroska/WebM"),
        ("clip.avi", "avi", "mpeg4", None, "AVI"),
        ("clip.ts", "mpegts", "mpeg2video", None, "MPEG-TS"),
        ("clip.m2ts", "mpegts", "mpeg2video", {"mpegts_m2ts_mode": "1"}, "MPEG-TS"),
        ("clip.mpg", "mpeg", "mpeg1video", None, "MPEG-PS"),
        ("clip.wmv", "asf", "wmv2", None, "ASF/WMV"),
        ("clip.flv", "flv", "flv", None, "FLV"),
        ("no_extension", "mp4", "libx264", None, "MP4/QuickTime"),
    ],
)
def test_real_videos_are_sniffed_as_videos(
    tmp_path: Path, name: str, muxer: str, codec: str, options: dict[str, str] | None, expected_format: str
) -> None:
    found = sniff_file(_video(tmp_path / name, muxer=muxer, codec=codec, options=options))
    assert (found.kind, found.format_name) == (MediaKind.VIDEO, expected_format)


@pytest.mark.parametrize(
    ("name", "save_as", "expected_format"),
    [
        ("a.jpg", "JPEG", "JPEG"),
        ("a.jfif", "JPEG", "JPEG"),
        ("a", "JPEG", "JPEG"),
        ("a.png", "PNG", "PNG"),
        ("a.gif", "GIF", "GIF"),
        ("a.webp", "WEBP", "WebP"),
        ("a.tif", "TIFF", "TIFF"),
        ("a.bmp", "BMP", "BMP"),
        ("a.ico", "ICO", "ICO"),
        ("a.ppm", "PPM", "PNM"),
    ],
)
def test_real_pictures_are_sniffed_as_pictures(tmp_path: Path, name: str, save_as: str, expected_format: str) -> None:
    path = tmp_path / name
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(path, format=save_as)
    found = sniff_file(path)
    assert (found.kind, found.format_name) == (MediaKind.IMAGE, expected_format)


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


@pytest.mark.parametrize(
    ("head", "kind", "format_name"),
    [
        (b"", None, "empty file"),
        (b"this is a text file, not a JPEG\n", None, None),
        (b"BM and then some text that is not a bitmap header at all", None, None),
        (b"GIF89a" + b"\x00" * 20, MediaKind.IMAGE, "GIF"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, MediaKind.IMAGE, "PNG"),
        (_box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic"), MediaKind.IMAGE, "HEIF/AVIF"),
        (_box(b"ftyp", b"mif1\x00\x00\x00\x00mif1avif"), MediaKind.IMAGE, "HEIF/AVIF"),
        (_box(b"ftyp", b"avif\x00\x00\x00\x00avifmif1"), MediaKind.IMAGE, "HEIF/AVIF"),
        (_box(b"ftyp", b"3gp4\x00\x00\x00\x003gp4isom"), MediaKind.VIDEO, "MP4/QuickTime"),
        (_box(b"ftyp", b"M4A \x00\x00\x00\x00M4A isom"), None, "MP4 audio"),
        (_box(b"ftyp", b"qt  \x00\x00\x00\x00qt  "), MediaKind.VIDEO, "MP4/QuickTime"),
        (_box(b"wide", b"") + _box(b"mdat", b"\x00" * 16), MediaKind.VIDEO, "MP4/QuickTime"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 20, None, "WAV audio"),
        (b"RIFF\x24\x00\x00\x00AVI LIST" + b"\x00" * 20, MediaKind.VIDEO, "AVI"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 20, MediaKind.IMAGE, "WebP"),
        (b"\x00\x00\x01\xba" + b"\x44" * 20, MediaKind.VIDEO, "MPEG-PS"),
        (b"G" + b"\x00" * 187 + b"G" + b"\x00" * 187 + b"G" + b"\x00" * 100, MediaKind.VIDEO, "MPEG-TS"),
        (b"G" + b"\x00" * 400, None, None),  # one sync byte is a letter G, not a transport stream
        (b"FLV\x01\x05\x00\x00\x00\x09", MediaKind.VIDEO, "FLV"),
        (b"FLV\x01\x04\x00\x00\x00\x09", None, "FLV audio"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", None, "MP3 audio"),
        (b"8BPS\x00\x01" + b"\x00" * 20, MediaKind.IMAGE, "PSD"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 8, MediaKind.IMAGE, "JPEG 2000"),
        (b"\xff\x0a" + b"\x00" * 10, MediaKind.IMAGE, "JPEG XL"),
        (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>", MediaKind.IMAGE, "SVG"),
        (b"<?xml version='1.0'?>\n<note>not a picture</note>", None, None),
        (b"II*\x00\x10\x00\x00\x00CR\x02\x00\x00\x00\x00\x00" + b"\x00" * 16, MediaKind.IMAGE, "camera raw"),
        # A DNG: its first directory, at byte 8, holds a DNGVersion tag (0xC612).
        (
            b"II*\x00\x08\x00\x00\x00\x02\x00" + b"\xfe\x00" + b"\x00" * 10 + b"\x12\xc6" + b"\x00" * 10,
            MediaKind.IMAGE,
            "camera raw",
        ),
        (b"II*\x00\x08\x00\x00\x00\x01\x00" + b"\xfe\x00" + b"\x00" * 10, MediaKind.IMAGE, "TIFF"),
        (b"IIU\x00\x08\x00\x00\x00", MediaKind.IMAGE, "camera raw"),
    ],
)
def test_heads(head: bytes, kind: MediaKind | None, format_name: str | None) -> None:
    found = sniff(head)
    assert found.kind is kind
    if format_name is not None:
        assert found.format_name == format_name


@pytest.mark.parametrize(("name", "is_refused"), [("photo.tif", False), ("photo.nef", True), ("photo.DNG", True)])
def test_a_tiff_named_like_camera_raw_is_refused(tmp_path: Path, name: str, is_refused: bool) -> None:
    path = tmp_path / name
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(path, format="TIFF")
    assert (refusal(sniff_file(path), path) is not None) is is_refused
