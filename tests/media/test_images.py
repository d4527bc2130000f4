"""Tests for efface.media.images: every image here is a real file built with Pillow/numpy, no mocks."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, ImageOps
from PIL.PngImagePlugin import PngInfo

from efface.errors import CorruptImageError, ImageTooLargeError, UnsupportedFormatError
from efface.media.images import CodecOptions, DecodedImage, ImageFormat, decode_image, encode_image

from ..conftest import Carriers

OPTIONS = CodecOptions()
HEIGHT_PX, WIDTH_PX = 32, 48
PERSON = "Jane Quincy Example"
ARTIST = "Photographer Marta Ruiz-Testcase"
GPS_DATUM = "GPS-DATUM-SECRET-4711"
XMP_FACE_REGION = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/">'
    f"<mwg-rs:Regions><mwg-rs:RegionList><rdf:Bag><rdf:li><mwg-rs:Name>{PERSON}</mwg-rs:Name>"
    "<mwg-rs:Type>Face</mwg-rs:Type></rdf:li></rdf:Bag></mwg-rs:RegionList></mwg-rs:Regions>"
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
).encode()


@pytest.fixture(autouse=True)
def _restore_pillow_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # decode_image sets Pillow's process-wide limit; a small limit from one test must not leak into the next
    # test's own Image.open calls.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


# --- builders -------------------------------------------------------------------------------------------------


def _pattern(height_px: int = HEIGHT_PX, width_px: int = WIDTH_PX) -> np.ndarray:
    """An asymmetric uint8 (H, W, 3) picture of 8 px blocks (survives JPEG, reveals any rotation or flip)."""
    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 256, size=(height_px // 8, width_px // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)


def _noise(height_px: int = 64, width_px: int = 96) -> np.ndarray:
    return np.random.default_rng(11).integers(0, 256, size=(height_px, width_px, 3), dtype=np.uint8)


def _alpha() -> np.ndarray:
    ramp = np.linspace(0, 255, WIDTH_PX).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(ramp, (HEIGHT_PX, WIDTH_PX)))


def _rgb() -> Image.Image:
    return Image.fromarray(_pattern())


def _rgba() -> Image.Image:
    return Image.fromarray(np.dstack([_pattern(), _alpha()]))


def _grey() -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(_pattern()[:, :, 0]))


def _palette() -> Image.Image:
    indices = (np.arange(HEIGHT_PX * WIDTH_PX, dtype=np.uint32) * 7 // 64 % 16).astype(np.uint8)
    image = Image.frombytes("P", (WIDTH_PX, HEIGHT_PX), indices.tobytes())
    image.putpalette(np.random.default_rng(3).integers(0, 256, size=16 * 3, dtype=np.uint8).tobytes())
    image.info["transparency"] = 0
    return image


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _decode(data: bytes, name: str = "photo.png", options: CodecOptions = OPTIONS) -> DecodedImage:
    return decode_image(data, path=Path(name), options=options)


def _round_trip(data: bytes, name: str, options: CodecOptions = OPTIONS) -> tuple[DecodedImage, bytes]:
    decoded = _decode(data, name, options)
    return decoded, encode_image(decoded, decoded.pixels, options=options)


def _icc_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif_with_gps_and_thumbnail(*, artist: str, gps_datum: str, thumbnail: bytes) -> bytes:
    """A JPEG APP1 EXIF payload: IFD0 (Artist, GPS pointer), a GPS IFD and IFD1 holding a JPEG thumbnail.

    Pillow reads IFD1 but does not write it, so the little-endian TIFF structure is laid out by hand.
    """

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    def inline(tag: int, kind: int, count: int, raw: bytes) -> bytes:
        return struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")

    ascii_kind, long_kind = 2, 4
    artist_raw = artist.encode() + b"\0"
    datum_raw = gps_datum.encode() + b"\0"
    ifd_len = 2 + 2 * 12 + 4  # every IFD here holds two entries
    ifd0_at = 8
    gps_at = ifd0_at + ifd_len
    ifd1_at = gps_at + ifd_len
    artist_at = ifd1_at + ifd_len
    datum_at = artist_at + len(artist_raw)
    thumbnail_at = datum_at + len(datum_raw)
    ifd0 = (
        struct.pack("<H", 2)
        + entry(0x013B, ascii_kind, len(artist_raw), artist_at)
        + entry(0x8825, long_kind, 1, gps_at)
        + struct.pack("<I", ifd1_at)
    )
    gps = (
        struct.pack("<H", 2)
        + inline(0x0001, ascii_kind, 2, b"N\0")
        + entry(0x0012, ascii_kind, len(datum_raw), datum_at)
        + struct.pack("<I", 0)
    )
    ifd1 = (
        struct.pack("<H", 2)
        + entry(0x0201, long_kind, 1, thumbnail_at)
        + entry(0x0202, long_kind, 1, len(thumbnail))
        + struct.pack("<I", 0)
    )
    tiff = b"II*\0" + struct.pack("<I", ifd0_at) + ifd0 + gps + ifd1 + artist_raw + datum_raw + thumbnail
    return b"Exif\0\0" + tiff


def _thumbnail() -> bytes:
    return _save(Image.fromarray(_pattern(16, 16)[:, ::-1]), "JPEG", quality=90)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_declaring(width_px: int, height_px: int) -> bytes:
    """A tiny PNG with valid CRCs whose IHDR declares a huge RGB image."""
    ihdr = struct.pack(">IIBBBBB", width_px, height_px, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _bmp_declaring(width_px: int, height_px: int) -> bytes:
    """A 24-bit BMP header (file header + BITMAPINFOHEADER) declaring a huge image, followed by a few bytes."""
    info = struct.pack("<IiiHHIIiiII", 40, width_px, height_px, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\0" * 64
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def _flip_in_chunk(png: bytes, kind: bytes, offset_in_payload: int) -> bytes:
    data = bytearray(png)
    at = data.index(kind) + 4 + offset_in_payload
    data[at] ^= 0xFF
    return bytes(data)


def _multi_frame(fmt: str) -> bytes:
    frames = [Image.fromarray(_pattern()), Image.fromarray(255 - _pattern())]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


def _rgba_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"))


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


# --- round trips ----------------------------------------------------------------------------------------------

# id, source image, Pillow format, save params, file name, lossless, has alpha, grey
ROUND_TRIPS = [
    ("jpeg-rgb", _rgb, "JPEG", {"quality": 95}, "a.jpg", False, False, False),
    ("jpeg-grey", _grey, "JPEG", {"quality": 95}, "a.jpeg", False, False, True),
    ("png-rgb", _rgb, "PNG", {}, "a.png", True, False, False),
    ("png-rgba", _rgba, "PNG", {}, "a.png", True, True, False),
    ("png-grey", _grey, "PNG", {}, "a.png", True, False, True),
    ("png-palette-transparency", _palette, "PNG", {}, "a.png", True, True, False),
    ("webp-lossless", _rgb, "WEBP", {"lossless": True}, "a.webp", True, False, False),
    ("webp-lossless-rgba", _rgba, "WEBP", {"lossless": True}, "a.webp", True, True, False),
    ("webp-lossy", _rgb, "WEBP", {"quality": 90}, "a.webp", False, False, False),
    ("webp-lossy-rgba", _rgba, "WEBP", {"quality": 90}, "a.webp", False, True, False),
    ("tiff-raw", _rgb, "TIFF", {"compression": "raw"}, "a.tif", True, False, False),
    ("tiff-lzw", _rgb, "TIFF", {"compression": "tiff_lzw"}, "a.tiff", True, False, False),
    ("tiff-lzw-rgba", _rgba, "TIFF", {"compression": "tiff_lzw"}, "a.tiff", True, True, False),
    ("tiff-grey", _grey, "TIFF", {}, "a.tif", True, False, True),
    ("bmp-rgb", _rgb, "BMP", {}, "a.bmp", True, False, False),
    ("bmp-grey", _grey, "BMP", {}, "a.bmp", True, False, True),
]


@pytest.mark.parametrize(
    ("build", "fmt", "params", "name", "is_lossless", "has_alpha", "is_grey"),
    [case[1:] for case in ROUND_TRIPS],
    ids=[case[0] for case in ROUND_TRIPS],
)
def test_round_trip_keeps_format_size_alpha_and_colour_kind(
    build: Callable[[], Image.Image],
    fmt: str,
    params: dict[str, object],
    name: str,
    is_lossless: bool,
    has_alpha: bool,
    is_grey: bool,
) -> None:
    source_bytes = _save(build(), fmt, **params)
    source = _open(source_bytes)
    decoded, output = _round_trip(source_bytes, name)

    assert decoded.image_format is ImageFormat(fmt)
    assert decoded.resolution_wh == (WIDTH_PX, HEIGHT_PX)
    assert decoded.pixels.shape == (HEIGHT_PX, WIDTH_PX, 3)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.is_grey is is_grey
    assert (decoded.alpha is not None) is has_alpha
    assert decoded.was_rotated is False

    written = _open(output)
    assert written.format == fmt
    assert written.size == (WIDTH_PX, HEIGHT_PX)
    assert written.mode.startswith("L") is is_grey
    assert ("A" in written.mode or "transparency" in written.info) is has_alpha

    again = _decode(output, name)
    assert again.image_format is decoded.image_format
    assert again.is_grey is is_grey
    if is_lossless:
        np.testing.assert_array_equal(again.pixels, decoded.pixels)
        np.testing.assert_array_equal(_rgba_array(written), _rgba_array(source))
        if has_alpha:
            np.testing.assert_array_equal(again.alpha, decoded.alpha)
    else:
        assert _mean_abs_diff(again.pixels, decoded.pixels) < 12.0
        assert _mean_abs_diff(decoded.pixels, np.asarray(build().convert("RGB"))) < 12.0
    if is_grey:
        channels = decoded.pixels
        np.testing.assert_array_equal(channels[:, :, 0], channels[:, :, 1])
        np.testing.assert_array_equal(channels[:, :, 0], channels[:, :, 2])


def test_round_trip_palette_transparency_keeps_transparent_pixels() -> None:
    source = _palette()
    decoded, output = _round_trip(_save(source, "PNG"), "a.png")

    transparent = np.asarray(source) == 0
    assert transparent.any()
    assert decoded.alpha is not None
    assert (decoded.alpha[transparent] == 0).all()
    assert (decoded.alpha[~transparent] == 255).all()
    np.testing.assert_array_equal(_rgba_array(_open(output))[:, :, 3], decoded.alpha)


def test_round_trip_writes_anonymized_pixels_not_the_source() -> None:
    decoded = _decode(_save(_rgb(), "PNG"), "a.png")
    changed = decoded.pixels.copy()
    changed[:8, :8] = 0

    np.testing.assert_array_equal(_decode(encode_image(decoded, changed, options=OPTIONS)).pixels, changed)


@pytest.mark.parametrize(("fmt", "params", "name"), [("JPEG", {}, "a.jpg"), ("WEBP", {"quality": 90}, "a.webp")])
def test_quality_option_is_honoured(fmt: str, params: dict[str, object], name: str) -> None:
    source = _save(Image.fromarray(_noise()), fmt, **params)
    sizes = {}
    for quality in (20, 95):
        options = CodecOptions(jpeg_quality=quality)
        sizes[quality] = len(_round_trip(source, name, options)[1])

    assert sizes[20] < sizes[95] * 0.8


def test_lossless_webp_ignores_quality() -> None:
    source = _save(Image.fromarray(_noise()), "WEBP", lossless=True)
    decoded, output = _round_trip(source, "a.webp", CodecOptions(jpeg_quality=1))

    assert decoded.is_lossless is True
    np.testing.assert_array_equal(_decode(output, "a.webp").pixels, decoded.pixels)


def test_lossy_webp_is_detected_as_lossy() -> None:
    assert _decode(_save(_rgb(), "WEBP", quality=80), "a.webp").is_lossless is False


@pytest.mark.parametrize(("compression", "expected"), [("raw", "raw"), ("tiff_lzw", "tiff_lzw")])
def test_tiff_compression_is_kept(compression: str, expected: str) -> None:
    _decoded, output = _round_trip(_save(_rgb(), "TIFF", compression=compression), "a.tif")

    assert _open(output).info["compression"] == expected


# --- metadata policy ------------------------------------------------------------------------------------------


def _jpeg_exif_gps_thumbnail() -> tuple[bytes, list[bytes]]:
    thumbnail = _thumbnail()
    exif = _exif_with_gps_and_thumbnail(artist=ARTIST, gps_datum=GPS_DATUM, thumbnail=thumbnail)
    data = _save(_rgb(), "JPEG", quality=90, exif=exif)
    # The source really carries what the policy must drop.
    parsed = _open(data).getexif()
    assert parsed[0x013B] == ARTIST
    assert parsed.get_ifd(ExifTags.IFD.GPSInfo)[0x0012] == GPS_DATUM
    assert parsed.get_ifd(ExifTags.IFD.IFD1)[0x0202] == len(thumbnail)
    return data, [ARTIST.encode(), GPS_DATUM.encode(), thumbnail]


def _jpeg_xmp() -> tuple[bytes, list[bytes]]:
    return _save(_rgb(), "JPEG", xmp=XMP_FACE_REGION), [PERSON.encode(), b"mwg-rs:Regions"]


def _jpeg_comment() -> tuple[bytes, list[bytes]]:
    return _save(_rgb(), "JPEG", comment=f"photo of {PERSON}".encode()), [PERSON.encode()]


def _png_text() -> tuple[bytes, list[bytes]]:
    chunks = PngInfo()
    chunks.add_text("Author", ARTIST)
    chunks.add_text("Comment", f"compressed note on {GPS_DATUM}", zip=True)
    chunks.add_itxt("Description", f"{PERSON} at the beach", lang="en")
    chunks.add_itxt("XML:com.adobe.xmp", XMP_FACE_REGION.decode())
    data = _save(_rgb(), "PNG", pnginfo=chunks)
    return data, [ARTIST.encode(), PERSON.encode(), b"XML:com.adobe.xmp", b"zTXt"]


def _png_exif() -> tuple[bytes, list[bytes]]:
    exif = Image.Exif()
    exif[0x013B] = ARTIST
    return _save(_rgb(), "PNG", exif=exif), [ARTIST.encode(), b"eXIf"]


def _webp_exif_xmp(lossless: bool) -> Callable[[], tuple[bytes, list[bytes]]]:
    def build() -> tuple[bytes, list[bytes]]:
        exif = Image.Exif()
        exif[0x013B] = ARTIST
        data = _save(_rgb(), "WEBP", lossless=lossless, exif=exif, xmp=XMP_FACE_REGION)
        return data, [ARTIST.encode(), PERSON.encode(), b"EXIF", b"XMP "]

    return build


def _tiff_tags() -> tuple[bytes, list[bytes]]:
    tags = {270: f"{PERSON} at the beach", 315: ARTIST, 700: XMP_FACE_REGION}
    data = _save(_rgb(), "TIFF", compression="tiff_lzw", tiffinfo=tags)
    return data, [ARTIST.encode(), PERSON.encode()]


METADATA_CASES = [
    ("jpeg-exif-gps-thumbnail", _jpeg_exif_gps_thumbnail, "a.jpg"),
    ("jpeg-xmp-face-region", _jpeg_xmp, "a.jpg"),
    ("jpeg-comment", _jpeg_comment, "a.jpg"),
    ("png-text-itxt-ztxt-xmp", _png_text, "a.png"),
    ("png-exif", _png_exif, "a.png"),
    ("webp-lossy-exif-xmp", _webp_exif_xmp(lossless=False), "a.webp"),
    ("webp-lossless-exif-xmp", _webp_exif_xmp(lossless=True), "a.webp"),
    ("tiff-description-artist-xmp", _tiff_tags, "a.tif"),
]


@pytest.mark.parametrize(
    ("build", "name"), [case[1:] for case in METADATA_CASES], ids=[case[0] for case in METADATA_CASES]
)
def test_metadata_is_detected_and_dropped(build: Callable[[], tuple[bytes, list[bytes]]], name: str) -> None:
    source, secrets = build()
    for secret in secrets:
        assert secret in source, f"test setup: {secret!r} missing from the source"

    decoded, output = _round_trip(source, name)

    assert decoded.has_metadata is True
    for secret in secrets:
        assert secret not in output
    written = _open(output)
    assert written.format == decoded.image_format.value
    assert not {key for key in written.info if "exif" in str(key).lower() or "xmp" in str(key).lower()}
    assert not {key for key in written.info if str(key) in ("comment", "Author", "Description", "Comment")}
    exif = written.getexif()
    assert 0x013B not in exif  # Artist
    assert 0x010E not in exif  # ImageDescription
    assert 0x02BC not in exif  # XMP (TIFF tag)
    assert 0x8825 not in exif  # GPS IFD
    if decoded.image_format is not ImageFormat.TIFF:
        assert len(exif) == 0
        assert _decode(output, name).has_metadata is False
    if decoded.image_format is ImageFormat.JPEG:
        assert output.count(b"\xff\xd8") == 1  # no embedded thumbnail JPEG
        assert not [marker for marker, _payload in written.applist if marker == "APP1"]
    if decoded.image_format is ImageFormat.PNG:
        assert written.text == {}


@pytest.mark.parametrize(
    ("fmt", "params", "name"),
    [
        ("JPEG", {}, "a.jpg"),
        ("PNG", {}, "a.png"),
        ("WEBP", {"lossless": True}, "a.webp"),
        ("WEBP", {"quality": 80}, "a.webp"),
        ("BMP", {}, "a.bmp"),
    ],
    ids=["jpeg", "png", "webp-lossless", "webp-lossy", "bmp"],
)
def test_image_without_metadata_reports_none(fmt: str, params: dict[str, object], name: str) -> None:
    assert _decode(_save(_rgb(), fmt, **params), name).has_metadata is False


def test_every_tiff_counts_as_carrying_metadata() -> None:
    # A TIFF's tags are metadata by design, so every TIFF is rewritten.
    assert _decode(_save(_rgb(), "TIFF"), "a.tif").has_metadata is True


def test_icc_profile_alone_is_not_metadata() -> None:
    assert _decode(_save(_rgb(), "PNG", icc_profile=_icc_profile()), "a.png").has_metadata is False


ICC_FORMATS = [
    ("jpeg", "JPEG", {}, "a.jpg"),
    ("png", "PNG", {}, "a.png"),
    ("webp-lossless", "WEBP", {"lossless": True}, "a.webp"),
    ("webp-lossy", "WEBP", {"quality": 90}, "a.webp"),
    ("tiff", "TIFF", {"compression": "tiff_lzw"}, "a.tif"),
]


@pytest.mark.parametrize("keep", [True, False], ids=["keep", "drop"])
@pytest.mark.parametrize(
    ("fmt", "params", "name"), [case[1:] for case in ICC_FORMATS], ids=[case[0] for case in ICC_FORMATS]
)
def test_icc_profile_kept_by_default_and_dropped_on_request(
    fmt: str, params: dict[str, object], name: str, keep: bool
) -> None:
    icc = _icc_profile()
    options = CodecOptions(keep_icc_profile=keep)
    decoded, output = _round_trip(_save(_rgb(), fmt, icc_profile=icc, **params), name, options)

    assert decoded.icc_profile == (icc if keep else None)
    assert _open(output).info.get("icc_profile") == (icc if keep else None)


def test_icc_profile_is_kept_with_default_options() -> None:
    icc = _icc_profile()
    _decoded, output = _round_trip(_save(_rgb(), "JPEG", icc_profile=icc), "a.jpg")

    assert _open(output).info["icc_profile"] == icc


def test_lossless_webp_with_icc_profile_stays_lossless() -> None:
    # The ICCP chunk comes before the VP8L image chunk and can push it far into the file.
    source = _save(Image.fromarray(_noise()), "WEBP", lossless=True, icc_profile=_icc_profile())
    decoded, output = _round_trip(source, "a.webp")

    assert decoded.is_lossless is True
    np.testing.assert_array_equal(_decode(output, "a.webp").pixels, _noise())


def test_lossy_webp_with_alpha_is_detected_as_lossy() -> None:
    # Lossy WebP with alpha puts an ALPH chunk before the VP8 image chunk.
    assert _decode(_save(_rgba(), "WEBP", quality=80), "a.webp").is_lossless is False


# --- EXIF orientation -----------------------------------------------------------------------------------------


def _stored_for(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that applying ``orientation`` shows ``upright``."""
    match orientation:
        case 1:
            return upright
        case 3:
            return np.rot90(upright, 2)
        case 6:  # shown after a 90 degree clockwise turn
            return np.rot90(upright, 1)
        case 8:  # shown after a 90 degree counter-clockwise turn
            return np.rot90(upright, -1)
    raise ValueError(f"unexpected orientation {orientation}")


def _with_orientation(stored: np.ndarray, fmt: str, orientation: int) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(stored))
    if fmt == "TIFF":
        return _save(image, fmt, tiffinfo={0x0112: orientation})
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, object] = {"exif": exif}
    if fmt == "JPEG":
        params.update(quality=95, subsampling=0)
    if fmt == "WEBP":
        params.update(lossless=True)
    return _save(image, fmt, **params)


ORIENTATION_FORMATS = [("JPEG", "a.jpg"), ("PNG", "a.png"), ("WEBP", "a.webp"), ("TIFF", "a.tif")]


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize(("fmt", "name"), ORIENTATION_FORMATS, ids=[fmt for fmt, _ in ORIENTATION_FORMATS])
def test_exif_orientation_is_baked_into_the_pixels(fmt: str, name: str, orientation: int) -> None:
    upright = _pattern()
    stored = _stored_for(upright, orientation)
    source = _with_orientation(stored, fmt, orientation)
    assert Image.open(io.BytesIO(source)).getexif()[0x0112] == orientation

    decoded, output = _round_trip(source, name)

    assert decoded.was_rotated is True
    assert decoded.resolution_wh == (WIDTH_PX, HEIGHT_PX)
    written = _open(output)
    assert 0x0112 not in written.getexif()
    assert written.size == (WIDTH_PX, HEIGHT_PX)
    shown = np.asarray(ImageOps.exif_transpose(written).convert("RGB"))
    if fmt == "JPEG":
        assert _mean_abs_diff(decoded.pixels, upright) < 12.0
        assert _mean_abs_diff(shown, upright) < 12.0
        # Sanity: the tolerance is far below the difference a wrong turn would make.
        assert _mean_abs_diff(np.rot90(upright, 2), upright) > 40.0
    else:
        np.testing.assert_array_equal(decoded.pixels, upright)
        np.testing.assert_array_equal(shown, upright)


@pytest.mark.parametrize(("fmt", "name"), ORIENTATION_FORMATS, ids=[fmt for fmt, _ in ORIENTATION_FORMATS])
def test_orientation_one_is_not_a_rotation(fmt: str, name: str) -> None:
    decoded = _decode(_with_orientation(_pattern(), fmt, 1), name)

    assert decoded.was_rotated is False
    assert decoded.resolution_wh == (WIDTH_PX, HEIGHT_PX)


def test_rotated_image_with_alpha_keeps_alpha_aligned() -> None:
    upright = np.dstack([_pattern(), _alpha()])
    exif = Image.Exif()
    exif[0x0112] = 6
    source = _save(Image.fromarray(np.ascontiguousarray(_stored_for(upright, 6))), "PNG", exif=exif)

    decoded, output = _round_trip(source, "a.png")

    np.testing.assert_array_equal(decoded.alpha, _alpha())
    np.testing.assert_array_equal(_rgba_array(_open(output)), upright)


# --- bad input ------------------------------------------------------------------------------------------------


def _truncated_jpeg() -> bytes:
    data = _save(Image.fromarray(_noise()), "JPEG", quality=90)
    return data[: len(data) // 2]


def _truncated_png() -> bytes:
    data = _save(Image.fromarray(_noise()), "PNG")
    return data[: len(data) // 2]


def _png_bad_idat() -> bytes:
    return _flip_in_chunk(_save(Image.fromarray(_noise()), "PNG"), b"IDAT", 10)


def _png_bad_ihdr() -> bytes:
    return _flip_in_chunk(_save(_rgb(), "PNG"), b"IHDR", 2)


def _png_bad_idat_crc_only() -> bytes:
    """Image data intact, only the stored CRC of IDAT is wrong: Pillow alone would decode it."""
    data = bytearray(_save(Image.fromarray(_noise()), "PNG"))
    start = data.index(b"IDAT")
    (length,) = struct.unpack_from(">I", data, start - 4)
    data[start + 4 + length] ^= 0xFF
    return bytes(data)


def _png_without_iend() -> bytes:
    data = _save(Image.fromarray(_noise()), "PNG")
    return data[: data.index(b"IEND") - 4]


def _gif() -> bytes:
    return _save(_rgb().convert("P"), "GIF")


def _garbage() -> bytes:
    return np.random.default_rng(5).integers(0, 256, size=2048, dtype=np.uint8).tobytes()


BAD_INPUTS = [
    ("empty-jpg", lambda: b"", "empty.jpg", CorruptImageError),
    ("empty-png", lambda: b"", "empty.png", CorruptImageError),
    ("truncated-jpeg", _truncated_jpeg, "cut.jpg", CorruptImageError),
    ("truncated-png", _truncated_png, "cut.png", CorruptImageError),
    ("text-named-jpg", lambda: b"this is a shopping list, not a photo\n", "notes.jpg", CorruptImageError),
    ("garbage-named-png", _garbage, "noise.png", CorruptImageError),
    ("png-corrupt-idat", _png_bad_idat, "crc.png", CorruptImageError),
    ("png-ihdr-crc-mismatch", _png_bad_ihdr, "crc.png", CorruptImageError),
    ("png-idat-crc-only", _png_bad_idat_crc_only, "crc.png", CorruptImageError),
    ("png-truncated-before-iend", _png_without_iend, "cut.png", CorruptImageError),
    ("png-bomb-30000x30000", lambda: _png_declaring(30_000, 30_000), "bomb.png", ImageTooLargeError),
    ("png-bomb-20000x12500", lambda: _png_declaring(20_000, 12_500), "bomb.png", ImageTooLargeError),
    ("bmp-bomb-30000x30000", lambda: _bmp_declaring(30_000, 30_000), "bomb.bmp", ImageTooLargeError),
    ("gif", _gif, "anim.gif", UnsupportedFormatError),
    ("gif-named-jpg", _gif, "anim.jpg", UnsupportedFormatError),
    ("multi-frame-tiff", lambda: _multi_frame("TIFF"), "pages.tif", UnsupportedFormatError),
    ("animated-webp", lambda: _multi_frame("WEBP"), "anim.webp", UnsupportedFormatError),
    ("garbage-unknown-suffix", _garbage, "blob.xyz", UnsupportedFormatError),
    ("garbage-no-suffix", _garbage, "blob", UnsupportedFormatError),
]


@pytest.mark.parametrize(
    ("build", "name", "error"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_is_refused_with_the_right_error(
    tmp_path: Path, build: Callable[[], bytes], name: str, error: type[Exception]
) -> None:
    path = tmp_path / name
    path.write_bytes(build())

    with pytest.raises(error) as excinfo:
        decode_image(path.read_bytes(), path=path, options=OPTIONS)

    assert type(excinfo.value) is error
    assert excinfo.value.path == path
    assert "\n" not in str(excinfo.value)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize(
    "limit_px",
    [1, 100, WIDTH_PX * HEIGHT_PX // 3, WIDTH_PX * HEIGHT_PX // 2 + 1, WIDTH_PX * HEIGHT_PX - 1],
    ids=["1", "100", "third", "just-over-half", "one-short"],
)
def test_max_image_pixels_smaller_than_the_image_is_refused(tmp_path: Path, limit_px: int) -> None:
    path = tmp_path / "a.png"

    with pytest.raises(ImageTooLargeError) as excinfo:
        decode_image(_save(_rgb(), "PNG"), path=path, options=CodecOptions(max_image_pixels=limit_px))

    assert type(excinfo.value) is ImageTooLargeError
    assert excinfo.value.path == path
    assert "\n" not in str(excinfo.value)


def test_max_image_pixels_equal_to_the_image_is_allowed() -> None:
    decoded = _decode(_save(_rgb(), "PNG"), options=CodecOptions(max_image_pixels=WIDTH_PX * HEIGHT_PX))

    assert decoded.resolution_wh == (WIDTH_PX, HEIGHT_PX)


# --- option and argument validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"jpeg_quality": 0},
        {"jpeg_quality": 101},
        {"jpeg_quality": -5},
        {"max_image_pixels": 0},
        {"max_image_pixels": -1},
    ],
    ids=["quality-0", "quality-101", "quality-negative", "pixels-0", "pixels-negative"],
)
def test_codec_options_reject_out_of_range_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CodecOptions(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"jpeg_quality": 1}, {"jpeg_quality": 100}, {"max_image_pixels": 1}, {}],
    ids=["quality-1", "quality-100", "pixels-1", "defaults"],
)
def test_codec_options_accept_edge_values(kwargs: dict[str, int]) -> None:
    options = CodecOptions(**kwargs)

    for key, value in kwargs.items():
        assert getattr(options, key) == value


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((WIDTH_PX, HEIGHT_PX, 3), dtype=np.uint8),
        np.zeros((HEIGHT_PX, WIDTH_PX, 4), dtype=np.uint8),
        np.zeros((HEIGHT_PX, WIDTH_PX), dtype=np.uint8),
        np.zeros((0, 0, 3), dtype=np.uint8),
        np.zeros((HEIGHT_PX, WIDTH_PX, 3), dtype=np.float32),
        np.zeros((HEIGHT_PX, WIDTH_PX, 3), dtype=np.uint16),
        np.zeros((HEIGHT_PX, WIDTH_PX, 3), dtype=np.int8),
    ],
    ids=["transposed", "four-channels", "two-dims", "empty", "float32", "uint16", "int8"],
)
def test_encode_image_rejects_wrong_shape_or_dtype(pixels: np.ndarray) -> None:
    decoded = _decode(_save(_rgb(), "PNG"))

    with pytest.raises(ValueError, match="expected uint8 pixels"):
        encode_image(decoded, pixels, options=OPTIONS)


# --- files that carry more than their image -------------------------------------------------------------------


def test_carriers_need_a_rewrite_and_their_output_holds_only_the_image(carriers: Carriers) -> None:
    for name, content in carriers.files.items():
        decoded = decode_image(content, path=Path(name), options=OPTIONS)
        assert decoded.needs_rewrite is True, name
        output = encode_image(decoded, decoded.pixels, options=OPTIONS)
        assert carriers.secrets[name] not in output, name
        assert decode_image(output, path=Path(name), options=OPTIONS).needs_rewrite is False, name


def test_a_cmyk_jpeg_is_converted_to_srgb_with_its_profile_and_written_without_it(carriers: Carriers) -> None:
    source = carriers.files["cmyk-with-profile.jpg"]
    decoded = decode_image(source, path=Path("a.jpg"), options=OPTIONS)

    assert decoded.icc_profile is None
    assert decoded.audit_details["icc_profile"].startswith("CMYK pixels converted to sRGB with the source's profile")
    with Image.open(io.BytesIO(source)) as image:
        cms = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        expected = np.asarray(ImageCms.profileToProfile(image, cms, ImageCms.createProfile("sRGB"), outputMode="RGB"))
        naive = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert np.abs(expected.astype(int) - naive).max() > 20  # the test profile is not the naive conversion
    written = _open(encode_image(decoded, decoded.pixels, options=OPTIONS))
    assert written.mode == "RGB" and "icc_profile" not in written.info


@pytest.mark.parametrize(
    ("fmt", "params", "name"),
    [
        ("JPEG", {}, "a.jpg"),
        ("JPEG", {"progressive": True}, "a.jpg"),
        ("JPEG", {"icc_profile": _icc_profile()}, "a.jpg"),
        ("PNG", {}, "a.png"),
        ("PNG", {"icc_profile": _icc_profile()}, "a.png"),
        ("WEBP", {"lossless": True}, "a.webp"),
        ("WEBP", {"quality": 80, "icc_profile": _icc_profile()}, "a.webp"),
    ],
    ids=["jpeg", "jpeg-progressive", "jpeg-icc", "png", "png-icc", "webp-lossless", "webp-lossy-icc"],
)
def test_a_file_that_is_just_its_image_needs_no_rewrite(fmt: str, params: dict[str, object], name: str) -> None:
    decoded = _decode(_save(_rgb(), fmt, **params), name)
    assert decoded.needs_rewrite is False and decoded.audit_details == {}


@pytest.mark.parametrize(
    ("tail", "name"),
    [(b"\x00", "one byte"), (b"\xff\xd8\xff\xd9", "an empty JPEG"), (b"%PDF-1.4 secret", "a document")],
)
def test_any_byte_after_the_jpeg_end_of_image_needs_a_rewrite(tail: bytes, name: str) -> None:
    decoded = _decode(_save(_rgb(), "JPEG") + tail, "a.jpg")
    assert decoded.needs_rewrite is True
    assert f"{len(tail)} bytes after" in decoded.audit_details["extra_content"]


def test_png_data_after_iend_or_a_text_free_unknown_chunk_needs_a_rewrite() -> None:
    png = _save(_rgb(), "PNG")
    assert "after" in _decode(png + b"tail", "a.png").audit_details["extra_content"]
    iend = png.rindex(b"IEND") - 4
    with_time = png[:iend] + _png_chunk(b"tIME", struct.pack(">HBBBBB", 2026, 12, 2, 3, 4, 5)) + png[iend:]
    assert "tIME" in _decode(with_time, "a.png").audit_details["extra_content"]


def test_the_icc_profile_is_dropped_when_efface_would_not_keep_it() -> None:
    source = _save(_rgb(), "JPEG", icc_profile=_icc_profile())
    decoded = decode_image(source, path=Path("a.jpg"), options=CodecOptions(keep_icc_profile=False))
    assert decoded.needs_rewrite is True and decoded.icc_profile is None


@pytest.mark.parametrize(
    ("marker", "payload", "named"),
    [
        (0xE1, b"Exif\x00\x00II*\x00", "APP1 segment efface does not write ('Exif')"),
        (0xE5, b"\x01\x02private", "APP5 segment efface does not write (unnamed)"),
        (0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x01\x01" + b"\x00" * 3, "APP0 segment"),  # a 1x1 thumbnail
        (0xEF, b"Picasa\x00" + b"x" * 40, "APP15 segment efface does not write ('Picasa')"),
        (0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01" + b"the original", "APP14 segment efface does not write"),
    ],
    ids=["exif", "private-app5", "jfif-thumbnail", "app15", "adobe-with-more"],
)
def test_a_jpeg_segment_a_rewrite_would_not_write_needs_a_rewrite(marker: int, payload: bytes, named: str) -> None:
    jpeg = _save(_rgb(), "JPEG")
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    decoded = _decode(jpeg[:2] + segment + jpeg[2:], "a.jpg")
    assert decoded.needs_rewrite is True and named in decoded.audit_details["extra_content"]


def _zlib_then(data: bytes, tail: bytes) -> bytes:
    return zlib.compress(data) + tail


def test_a_profile_segment_or_chunk_that_holds_more_than_the_profile_kept_needs_a_rewrite() -> None:
    icc = _icc_profile()
    jpeg = _save(_rgb(), "JPEG", icc_profile=icc)
    secret = b"ICC_PROFILE\x00\x01\x01" + b"the original picture"
    spare = b"\xff\xe2" + struct.pack(">H", len(secret) + 2) + secret  # a second "part 1 of 1"
    decoded = _decode(jpeg[:2] + spare + jpeg[2:], "a.jpg")
    assert decoded.needs_rewrite is True and "ICC" in decoded.audit_details["extra_content"]

    png = _save(_rgb(), "PNG")
    ihdr_end = 8 + 12 + 13
    for name, chunks in {
        "junk after the zlib stream": [b"icc\x00\x00" + _zlib_then(icc, b"the original picture")],
        "two profiles": [b"icc\x00\x00" + zlib.compress(icc)] * 2,
    }.items():
        extra = b"".join(_png_chunk(b"iCCP", chunk) for chunk in chunks)
        decoded = _decode(png[:ihdr_end] + extra + png[ihdr_end:], "a.png")
        assert decoded.icc_profile == icc, name
        assert "iCCP chunk that is not the profile kept" in decoded.audit_details["extra_content"], name


def _profile_with_long_curves(entries: int = 20_000) -> bytes:
    """LittleCMS's sRGB profile with its shared parametric curve replaced by three long tabulated ones: 120 KB,
    more than one JPEG segment holds."""
    base = _icc_profile()
    (count,) = struct.unpack_from(">I", base, 128)
    data, table = base[132 + 12 * count :], b""
    for index in range(count):
        signature, offset, size = struct.unpack_from(">4sII", base, 132 + 12 * index)
        gamma = {b"rTRC": 1.8, b"gTRC": 2.0, b"bTRC": 2.2}.get(signature)
        if gamma is not None:
            values = (np.linspace(0.0, 1.0, entries) ** gamma * 65535).astype(">u2").tobytes()
            curve = b"curv\x00\x00\x00\x00" + struct.pack(">I", entries) + values
            offset, size, data = 132 + 12 * count + len(data), len(curve), data + curve
        table += struct.pack(">4sII", signature, offset, size)
    profile = base[:132] + table + data
    return struct.pack(">I", len(profile)) + profile[4:]


def test_a_profile_over_several_jpeg_segments_is_kept_and_the_file_left_as_it_was() -> None:
    # the profile as efface keeps it (rebuilt once: the unused parametric curve goes)
    profile = _decode(_save(_rgb(), "PNG", icc_profile=_profile_with_long_curves()), "a.png").icc_profile
    assert profile is not None and len(profile) > 65_519  # what one APP2 segment holds

    jpeg = _save(_rgb(), "JPEG", icc_profile=profile)
    decoded = _decode(jpeg, "a.jpg")

    assert jpeg.count(b"ICC_PROFILE\x00") == 2
    assert decoded.icc_profile == profile and decoded.needs_rewrite is False
