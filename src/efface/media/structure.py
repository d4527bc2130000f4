"""Whether an image file holds nothing but its image: the check behind leaving a face-less file as it was.

Pillow decodes the image and passes over what it does not need: a second JPEG after the end-of-image
marker, a private PNG chunk, bytes after IEND. A file efface hands on unchanged must hold only what it
checked, so these walk the container and name the first thing in it that a rewrite would not write. A
format not walked here is never provably just its image: it is always rewritten.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["find_extra_content"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG chunks a rewrite writes again from the decoded image, and ancillary chunks that only say how to show its
# pixels, each with its largest legal size. ``iCCP`` only when it holds the profile kept as it is.
_PNG_CHUNK_MAX_BYTES = {
    b"IHDR": 13,
    b"PLTE": 768,
    b"tRNS": 256,
    b"pHYs": 9,
    b"gAMA": 4,
    b"cHRM": 32,
    b"sRGB": 1,
    b"sBIT": 4,
}
# JPEG markers with a length, other than APPn and COM: frames, tables, restart interval, scan headers.
_JPEG_TABLES = frozenset(range(0xC0, 0xD0)) | {0xDA, 0xDB, 0xDC, 0xDD}
_JPEG_RESTARTS = frozenset(range(0xD0, 0xD8))
_SOS, _EOI, _SOI = 0xDA, 0xD9, 0xD8
# A JFIF header without a thumbnail: "JFIF\0", version, units, density, thumbnail size 0x0.
_JFIF_BYTES = 14
# An Adobe colour-transform segment: "Adobe", version, two flag words, the transform.
_ADOBE_BYTES = 12
_WEBP_IMAGE_CHUNKS = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH"})


def find_extra_content(data: bytes, *, image_format: str, kept_icc_profile: bytes | None) -> str | None:
    """Names what a file holds beyond the image a rewrite would write, if anything.

    Args:
        data: the whole file.
        image_format: Pillow's name of its format (``JPEG``, ``PNG``, ``WEBP``; others are never proven bare).
        kept_icc_profile: the colour profile a rewrite writes again as it is: the file may hold it (in the
            format's own layout, nothing beside it), and no other.

    Returns:
        None when the file is just its image; otherwise one line saying what else it carries.
    """
    match image_format:
        case "JPEG":
            return _jpeg_extra(data, kept_icc_profile=kept_icc_profile)
        case "PNG":
            return _png_extra(data, kept_icc_profile=kept_icc_profile)
        case "WEBP":
            return _webp_extra(data, kept_icc_profile=kept_icc_profile)
        case _:
            return f"a {image_format} file is not checked to hold only its image"


def _jpeg_app_is_kept(marker: int, payload: bytes, *, is_icc_kept: bool) -> bool:
    if marker == 0xE0:
        return payload.startswith(b"JFIF\x00") and len(payload) == _JFIF_BYTES
    if marker == 0xE2:
        return is_icc_kept and payload.startswith(_ICC_APP2)
    if marker == 0xEE:
        return payload.startswith(b"Adobe") and len(payload) == _ADOBE_BYTES
    return False


_ICC_APP2 = b"ICC_PROFILE\x00"


def _jpeg_icc_extra(icc_segments: list[bytes], kept_icc_profile: bytes | None) -> str | None:
    """Whether the APP2 ICC segments, in file order, numbered 1..n of n, are the kept profile and nothing else."""
    if not icc_segments:
        return None
    count = len(icc_segments)
    numbered = all(len(s) >= 14 and s[12] == index + 1 and s[13] == count for index, s in enumerate(icc_segments))
    if numbered and b"".join(s[14:] for s in icc_segments) == kept_icc_profile:
        return None
    return f"JPEG ICC profile segments ({count}) that are not the profile kept"


def _jpeg_extra(data: bytes, *, kept_icc_profile: bytes | None) -> str | None:
    if data[:2] != b"\xff\xd8":
        return "no JPEG start-of-image marker"
    is_icc_kept = kept_icc_profile is not None
    icc_segments: list[bytes] = []
    offset = 2
    while offset < len(data):
        if data[offset] != 0xFF:
            return f"a stray byte at {offset} between JPEG segments"
        while offset < len(data) and data[offset] == 0xFF:  # fill bytes before a marker
            offset += 1
        if offset >= len(data):
            break
        marker = data[offset]
        offset += 1
        if marker == _EOI:
            tail = len(data) - offset
            if tail:
                return f"{tail:,} bytes after the JPEG's end of image"
            return _jpeg_icc_extra(icc_segments, kept_icc_profile)
        if marker in _JPEG_RESTARTS or marker == _SOI:
            return f"JPEG marker 0x{marker:02X} outside a scan at byte {offset - 1}"
        if offset + 2 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, offset)
        payload = data[offset + 2 : offset + length]
        if 0xE0 <= marker <= 0xEF:
            if not _jpeg_app_is_kept(marker, payload, is_icc_kept=is_icc_kept):
                return f"a JPEG APP{marker - 0xE0} segment efface does not write ({_identifier(payload)})"
            if marker == 0xE2:
                icc_segments.append(payload)
        elif marker not in _JPEG_TABLES:
            return f"a JPEG segment 0x{marker:02X} efface does not write, at byte {offset - 1}"
        offset += length
        if marker == _SOS:
            offset = _end_of_scan(data, offset)
    return "the JPEG ends without an end-of-image marker"


def _identifier(payload: bytes) -> str:
    """An APP segment's name ("Exif", "http://ns.adobe.com/xap/1.0/"), never bytes of the file that are not one."""
    name = payload.split(b"\x00", 1)[0][:40]
    return repr(name.decode("ascii")) if name and all(0x20 <= byte < 0x7F for byte in name) else "unnamed"


def _end_of_scan(data: bytes, offset: int) -> int:
    """The offset of the marker that ends the entropy-coded data starting at ``offset``."""
    while True:
        found = data.find(b"\xff", offset)
        if found < 0 or found + 1 >= len(data):
            return len(data)
        follower = data[found + 1]
        if follower == 0x00 or follower in _JPEG_RESTARTS:
            offset = found + 2
        elif follower == 0xFF:
            offset = found + 1
        else:
            return found


def _png_icc_is_kept(payload: bytes, kept_icc_profile: bytes | None) -> bool:
    """An iCCP chunk that holds a short printable name, zlib method 0 and the kept profile, and nothing after it."""
    name_end = payload.find(b"\x00")
    if kept_icc_profile is None or not 1 <= name_end <= 79 or payload[name_end + 1 : name_end + 2] != b"\x00":
        return False
    if not all(0x20 <= byte < 0x7F for byte in payload[:name_end]):
        return False
    stream = zlib.decompressobj()
    try:
        profile = stream.decompress(payload[name_end + 2 :], len(kept_icc_profile) + 1)
    except zlib.error:
        return False
    return stream.eof and not stream.unused_data and not stream.unconsumed_tail and profile == kept_icc_profile


def _png_extra(data: bytes, *, kept_icc_profile: bytes | None) -> str | None:
    offset = len(_PNG_SIGNATURE)
    profiles = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IEND":
            tail = len(data) - offset
            return f"{tail:,} bytes after the PNG's IEND chunk" if tail else None
        if kind == b"iCCP":
            profiles += 1
            if profiles == 1 and _png_icc_is_kept(payload, kept_icc_profile):
                continue
            return "a PNG iCCP chunk that is not the profile kept"
        if kind == b"IDAT":
            continue
        if length > _PNG_CHUNK_MAX_BYTES.get(kind, -1):
            name = kind.decode("latin-1", errors="replace")
            return f"a PNG chunk {name!r} of {length:,} bytes efface does not write"
    return "the PNG ends without an IEND chunk"


def _webp_extra(data: bytes, *, kept_icc_profile: bytes | None) -> str | None:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return "no RIFF WEBP header"
    (riff_bytes,) = struct.unpack_from("<I", data, 4)
    if 8 + riff_bytes != len(data):
        return f"{len(data) - 8 - riff_bytes:,} bytes outside the WebP's RIFF container"
    offset = 12
    while offset + 8 <= len(data):
        fourcc = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        is_kept_icc = fourcc == b"ICCP" and data[offset + 8 : offset + 8 + size] == kept_icc_profile
        if fourcc not in _WEBP_IMAGE_CHUNKS and not is_kept_icc:
            return f"a WebP chunk {fourcc!r} efface does not write"
        offset += 8 + size + (size & 1)
    return None if offset == len(data) else "a truncated WebP chunk"
