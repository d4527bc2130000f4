"""Still images: decode (EXIF orientation applied, bombs and corrupt files refused) and encode
(format kept, metadata dropped). Pillow is used only here; its errors are translated into efface's.

Metadata policy: an output image carries no EXIF, XMP, IPTC, comments or text chunks. An EXIF thumbnail
is an un-anonymized copy of the picture and an XMP face-region tag names the people in it. The EXIF
orientation is baked into the pixels instead. The ICC colour profile is kept, unless ``keep_icc_profile``
is off, only as ``media.icc`` rebuilds it from its colour tags (a profile can carry anything in tags of its
own) and only when it describes the output's colour space; a CMYK image is converted to sRGB with its
profile and written without it.

A file is left as it was (no face, nothing to drop) only when ``media.structure`` finds nothing in it but
the image a rewrite would write: no second image after a JPEG's end, no private PNG chunk.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from efface.arrays import ImageArray
from efface.errors import CorruptImageError, ImageTooLargeError, UnsupportedFormatError
from efface.media.icc import ColourSpace, check_profile, read_profile, srgb_profile
from efface.media.structure import find_extra_content

__all__ = [
    "IMAGE_SUFFIXES",
    "UNSUPPORTED_IMAGE_SUFFIXES",
    "CodecOptions",
    "DecodedImage",
    "ImageFormat",
    "decode_image",
    "encode_image",
]


class ImageFormat(StrEnum):
    """The still-image formats efface reads and writes (Pillow's format names)."""

    JPEG = "JPEG"
    PNG = "PNG"
    WEBP = "WEBP"
    TIFF = "TIFF"
    BMP = "BMP"


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp"})
# Picture files efface cannot anonymize yet. A folder scan reports them as errors instead of passing
# over them silently: an image left out is an image left identifiable.
UNSUPPORTED_IMAGE_SUFFIXES = frozenset(
    {
        ".gif",
        ".heic",
        ".heif",
        ".avif",
        ".jxl",
        ".jp2",
        ".j2k",
        ".ico",
        ".psd",
        ".svg",
        ".dng",
        ".cr2",
        ".nef",
        ".arw",
        ".raf",
        ".orf",
        ".rw2",
        ".pcx",
        ".tga",
        ".ppm",
        ".pgm",
        ".pbm",
        ".mp4",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".m4v",
    }
)
# Info keys that describe how to display the pixels, not who or what is in them. Any other key (exif,
# xmp, photoshop/IPTC, comments, PNG text chunks, ...) is treated as metadata to drop.
_HARMLESS_INFO_KEYS = frozenset(
    {
        "icc_profile",
        "dpi",
        "transparency",
        "gamma",
        "aspect",
        "interlace",
        "progressive",
        "progression",
        "jfif",
        "jfif_version",
        "jfif_unit",
        "jfif_density",
        "adobe",
        "adobe_transform",
        "compression",
        "srgb",
        "chromaticity",
        "lossless",
        "loop",
        "duration",
        "background",
        "background_color",
        "timestamp",
    }
)
# JPEG APP segments that hold no metadata: JFIF header, ICC profile, Adobe colour transform.
_HARMLESS_JPEG_SEGMENTS = ((b"APP0", b"JFIF"), (b"APP2", b"ICC_PROFILE"), (b"APP14", b"Adobe"))
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_KEEP_COMPRESSION = frozenset({"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"})
# Modes converted to RGB for detection and written back in a mode of the same kind.
_GREY_MODES = frozenset({"1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I"})


@dataclass(frozen=True, slots=True)
class CodecOptions:
    """Decoding limits and encoding choices.

    Attributes:
        jpeg_quality: JPEG (and lossy WebP) quality, 1-100.
        keep_icc_profile: keep the colour profile in the output.
        max_image_pixels: images with more pixels are refused (decompression bombs).
    """

    jpeg_quality: int = 92
    keep_icc_profile: bool = True
    max_image_pixels: int = 200_000_000

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A decoded still image, upright.

    Attributes:
        pixels: uint8 (H, W, 3) RGB, EXIF orientation applied.
        alpha: uint8 (H, W) alpha channel, or None.
        image_format: the container format, kept on output.
        is_grey: the source had no colour (written back as greyscale).
        has_metadata: the source carries metadata that the output must drop.
        was_rotated: the EXIF orientation changed the pixel layout.
        icc_profile: the colour profile, if any.
        dpi: the resolution tag, if any.
        is_lossless: WebP only: the source was lossless.
        tiff_compression: TIFF only: the source's compression.
        icc_note: what became of the source's colour profile when it is not kept as it is (for the audit).
        extra_content: what the file holds beyond its image (a rewrite leaves it out), or None when nothing.
    """

    pixels: ImageArray
    alpha: ImageArray | None
    image_format: ImageFormat
    is_grey: bool
    has_metadata: bool
    was_rotated: bool
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    is_lossless: bool = False
    tiff_compression: str | None = None
    icc_note: str | None = None
    extra_content: str | None = None

    @property
    def resolution_wh(self) -> tuple[int, int]:
        return (int(self.pixels.shape[1]), int(self.pixels.shape[0]))

    @property
    def needs_rewrite(self) -> bool:
        """Whether the file must be written again even with no face in it: it is not just the image efface
        checked and would write (metadata, a rotation, a profile not kept as it is, anything else in the file)."""
        return self.has_metadata or self.was_rotated or self.icc_note is not None or self.extra_content is not None

    @property
    def audit_details(self) -> dict[str, object]:
        """What the output leaves out of the source and why, for the audit log's details."""
        details: dict[str, object] = {}
        if self.icc_note is not None:
            details["icc_profile"] = self.icc_note
        if self.extra_content is not None:
            details["extra_content"] = self.extra_content
        return details


def _to_rgb_and_alpha(image: Image.Image) -> tuple[ImageArray, ImageArray | None]:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # Scale 16-bit (or 32-bit integer) greys down to 8 bits instead of clipping them.
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(wide.max()), 1.0)
        grey = np.clip(wide / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3])
    return np.asarray(image.convert("RGB")), None


def decode_image(data: bytes, *, path: Path, options: CodecOptions) -> DecodedImage:
    """Decodes a still image completely, or refuses it.

    Args:
        data: the file's bytes.
        path: the file, for error messages.
        options: limits (``max_image_pixels``).

    Returns:
        The upright RGB pixels and what is needed to write them back in the same format.

    Raises:
        CorruptImageError: empty, truncated, failing a checksum, or not an image despite its name.
        UnsupportedFormatError: an image format or layout efface cannot anonymize.
        ImageTooLargeError: more pixels than ``options.max_image_pixels``.
    """
    if not data:
        raise CorruptImageError("empty file (0 bytes)", path=path)
    if data.startswith(_PNG_SIGNATURE):
        _check_png_chunks(data, path=path)
    Image.MAX_IMAGE_PIXELS = options.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            return _decode_opened(image, data=data, path=path, options=options)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"image has more than the allowed {options.max_image_pixels:,} pixels (decompression bomb guard)",
            path=path,
        ) from exc
    except UnidentifiedImageError as exc:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise CorruptImageError(f"named {path.suffix} but its content is not an image", path=path) from exc
        raise UnsupportedFormatError("not an image format efface can read", path=path) from exc
    except (OSError, SyntaxError, ValueError, struct.error, zlib.error, EOFError) as exc:
        # Pillow reports truncation, bad CRCs and broken headers through all of these.
        raise CorruptImageError(f"cannot decode image: {exc}", path=path) from exc


def _decode_opened(image: Image.Image, *, data: bytes, path: Path, options: CodecOptions) -> DecodedImage:
    try:
        image_format = ImageFormat(image.format or "")  # None: a format Pillow cannot name
    except ValueError as exc:
        supported = ", ".join(f.value for f in ImageFormat)
        raise UnsupportedFormatError(
            f"{image.format} images are not supported (supported: {supported})", path=path
        ) from exc
    width, height = image.size
    if width * height > options.max_image_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} is more than the allowed {options.max_image_pixels:,} pixels (decompression bomb guard)",
            path=path,
        )
    frames: int = getattr(image, "n_frames", 1)  # only the formats that can hold several frames have it
    if frames > 1:
        raise UnsupportedFormatError(
            f"{image.format} with {frames} frames is not supported: only the first would be anonymized",
            path=path,
        )
    info = dict(image.info)
    orientation = image.getexif().get(0x0112, 1)
    image.load()
    upright = ImageOps.exif_transpose(image) if orientation != 1 else image
    source_icc = info.get("icc_profile") or None
    icc_profile, icc_note, kept_as_is = None, None, None
    if upright.mode == "CMYK":
        upright, icc_note = _cmyk_to_srgb(upright, source_icc)
    elif source_icc is not None and options.keep_icc_profile:
        space = ColourSpace.GREY if image.mode in _GREY_MODES else ColourSpace.RGB
        check = check_profile(source_icc, colour_space=space)
        icc_profile, icc_note = check.profile, check.note
        kept_as_is = check.profile if check.is_unchanged else None
    pixels, alpha = _to_rgb_and_alpha(upright)
    has_metadata = _carries_metadata(image, info)
    dpi = info.get("dpi")
    return DecodedImage(
        pixels=pixels,
        alpha=alpha,
        image_format=image_format,
        is_grey=image.mode in _GREY_MODES,
        has_metadata=has_metadata,
        was_rotated=orientation not in (1, None),
        icc_profile=icc_profile,
        dpi=(float(dpi[0]), float(dpi[1])) if dpi else None,
        is_lossless=image_format is ImageFormat.WEBP and _is_lossless_webp(data),
        tiff_compression=info.get("compression") if image_format is ImageFormat.TIFF else None,
        icc_note=icc_note,
        extra_content=find_extra_content(data, image_format=image_format.value, kept_icc_profile=kept_as_is),
    )


def _cmyk_to_srgb(image: Image.Image, icc_profile: bytes | None) -> tuple[Image.Image, str | None]:
    """CMYK pixels in sRGB, converted with the source's own CMYK profile where LittleCMS can use it; the note
    says what became of the profile (never kept: it does not describe RGB pixels)."""
    profile = read_profile(icc_profile) if icc_profile is not None else None
    if profile is not None and icc_profile is not None and icc_profile[16:20] == ColourSpace.CMYK.value.encode():
        try:
            converted = ImageCms.profileToProfile(image, profile, srgb_profile(), outputMode="RGB")
        except ImageCms.PyCMSError:
            converted = None
        if isinstance(converted, Image.Image):
            return converted, "CMYK pixels converted to sRGB with the source's profile, which is dropped (RGB output)"
    if icc_profile is None:
        return image.convert("RGB"), None
    return image.convert("RGB"), "ICC profile dropped: not a CMYK profile LittleCMS can convert with (RGB output)"


def _check_png_chunks(data: bytes, *, path: Path) -> None:
    """Verifies every PNG chunk's CRC up to IEND; Pillow skips the CRCs of the image data chunks."""
    offset = len(_PNG_SIGNATURE)
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        if end > len(data):
            break
        (stored_crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(data[offset + 4 : end - 4]) != stored_crc:
            name = kind.decode("latin-1", errors="replace")
            raise CorruptImageError(f"PNG chunk {name!r} at byte {offset} fails its CRC check", path=path)
        if kind == b"IEND":
            return
        offset = end
    raise CorruptImageError("PNG is truncated (no complete IEND chunk)", path=path)


def _is_lossless_webp(data: bytes) -> bool:
    # Walk the RIFF chunks: VP8X, ICCP (any size), ANIM and ALPH may come before the image chunk.
    offset = 12
    while offset + 8 <= len(data):
        fourcc = data[offset : offset + 4]
        if fourcc in (b"VP8 ", b"VP8L"):
            return fourcc == b"VP8L"
        (size,) = struct.unpack_from("<I", data, offset + 4)
        offset += 8 + size + (size & 1)
    return False


def _carries_metadata(image: Image.Image, info: Mapping[str | tuple[int, int], object]) -> bool:
    if image.format == ImageFormat.TIFF:
        return True  # a TIFF's tags (artist, description, GPS, XMP) are metadata; every TIFF is rewritten
    if any(key not in _HARMLESS_INFO_KEYS for key in info):
        return True
    for marker, payload in getattr(image, "applist", ()):
        name = marker.encode() if isinstance(marker, str) else marker
        if not any(name == kind and payload.startswith(tag) for kind, tag in _HARMLESS_JPEG_SEGMENTS):
            return True
    return False


def encode_image(decoded: DecodedImage, pixels: ImageArray, *, options: CodecOptions) -> bytes:
    """Encodes anonymized pixels in the source's format, without metadata.

    Args:
        decoded: the source image (format, alpha, mode, profile).
        pixels: uint8 (H, W, 3) RGB, the anonymized image.
        options: encoding choices.

    Returns:
        The complete file content.
    """
    if pixels.shape != decoded.pixels.shape or pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels of shape {decoded.pixels.shape}, got {pixels.dtype} {pixels.shape}")
    image = Image.fromarray(pixels, mode="RGB") if not decoded.is_grey else Image.fromarray(pixels[:, :, 0], mode="L")
    fmt = decoded.image_format
    if decoded.alpha is not None and fmt is not ImageFormat.JPEG:
        image.putalpha(Image.fromarray(decoded.alpha, mode="L"))
    params: dict[str, object] = {}
    if decoded.icc_profile and fmt is not ImageFormat.BMP:
        params["icc_profile"] = decoded.icc_profile
    if decoded.dpi and fmt in (ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.TIFF, ImageFormat.BMP):
        params["dpi"] = decoded.dpi
    match fmt:
        case ImageFormat.JPEG:
            params.update(quality=options.jpeg_quality, optimize=False)
        case ImageFormat.PNG:
            params.update(compress_level=6)
        case ImageFormat.WEBP:
            params.update(lossless=decoded.is_lossless, quality=100 if decoded.is_lossless else options.jpeg_quality)
        case ImageFormat.TIFF:
            compression = decoded.tiff_compression
            params.update(compression=compression if compression in _TIFF_KEEP_COMPRESSION else "tiff_lzw")
        case ImageFormat.BMP:
            pass
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.value, **params)
    return buffer.getvalue()
