"""ICC colour profiles: keep only what describes colour, never a payload riding along.

An ICC profile is a tag table: any tag, or bytes between or after the tags, can carry anything (a whole JPEG
of the original picture). LittleCMS, re-serializing a profile, copies the tags it does not know byte for
byte, so it cannot do this alone. ``check_profile`` rebuilds the profile from its parsed tags instead: only
the tags that describe colour (colorants, curves, lookup tables, white point, short descriptions), each of a
known type and cut to exactly the size its own structure declares, packed with no gap. LittleCMS must then
read the rebuilt profile, its colour space must be the output's, and it must convert to sRGB. Otherwise the
profile is dropped, and the note says why (the audit log records it).

A profile that is already exactly its rebuilt form is kept byte for byte: a file carrying it can be left as
it is. Numbers inside kept tags (curve points, lookup-table entries) are colour data by their type and are
not judged further.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from PIL import ImageCms

__all__ = ["ColourSpace", "ProfileCheck", "check_profile", "read_profile", "srgb_profile"]

_HEADER_BYTES = 128
_TAG_ENTRY_BYTES = 12
# Text tags are a few words ("sRGB IEC61966-2.1"); a longer one is no colour description and is dropped.
_MAX_TEXT_TAG_BYTES = 4096
_MAX_TAGS = 256
_TEXT_TYPES = frozenset({b"desc", b"mluc", b"text"})


class ColourSpace(StrEnum):
    """The data colour space of a profile (ICC header bytes 16-19), as far as efface writes images in it."""

    RGB = "RGB "
    GREY = "GRAY"
    CMYK = "CMYK"


@dataclass(frozen=True, slots=True)
class ProfileCheck:
    """What becomes of a source's ICC profile.

    Attributes:
        profile: the profile to write with the output, or None to write none.
        is_unchanged: ``profile`` is the source's profile byte for byte.
        note: what was dropped and why, for the audit log; None when the profile is kept as it is.
    """

    profile: bytes | None = field(repr=False)
    is_unchanged: bool
    note: str | None


def _u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from(">H", data, offset)[0])


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from(">I", data, offset)[0])


# Each type's exact size from its own fields (bytes at its start); None when the fields do not add up.
def _xyz_size(tag: bytes) -> int | None:
    return len(tag) if len(tag) >= 20 and (len(tag) - 8) % 12 == 0 else None


def _curve_size(tag: bytes) -> int:
    return 12 + 2 * _u32(tag, 8)


_PARAMETRIC_COUNTS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}


def _parametric_size(tag: bytes) -> int | None:
    count = _PARAMETRIC_COUNTS.get(_u16(tag, 8))
    return None if count is None else 12 + 4 * count


def _s15_array_size(tag: bytes) -> int | None:
    return len(tag) if len(tag) >= 8 and len(tag) % 4 == 0 else None


def _chromaticity_size(tag: bytes) -> int:
    return 12 + 8 * _u16(tag, 8)


def _lut8_size(tag: bytes) -> int:
    inputs, outputs, grid = tag[8], tag[9], tag[10]
    return int(48 + 256 * inputs + grid**inputs * outputs + 256 * outputs)


def _lut16_size(tag: bytes) -> int:
    inputs, outputs, grid = tag[8], tag[9], tag[10]
    input_entries, output_entries = _u16(tag, 48), _u16(tag, 50)
    return int(52 + 2 * (input_entries * inputs + grid**inputs * outputs + output_entries * outputs))


def _text_size(tag: bytes) -> int | None:
    end = tag.find(b"\x00", 8)
    return None if end < 0 else end + 1


def _description_size(tag: bytes) -> int:
    ascii_bytes = _u32(tag, 8)
    unicode_chars = _u32(tag, 16 + ascii_bytes)
    return 8 + 4 + ascii_bytes + 8 + 2 * unicode_chars + 3 + 67


def _localized_size(tag: bytes) -> int | None:
    records, record_bytes = _u32(tag, 8), _u32(tag, 12)
    if record_bytes != 12:
        return None
    strings_start = 16 + 12 * records
    if strings_start > len(tag):
        return None
    covered: list[tuple[int, int]] = []
    for index in range(records):
        length, offset = _u32(tag, 16 + 12 * index + 4), _u32(tag, 16 + 12 * index + 8)
        if offset < strings_start:
            return None
        covered.append((offset, offset + length))
    end = strings_start
    for start, stop in sorted(covered):  # the strings must fill their area: no unreferenced bytes in between
        if start > end:
            return None
        end = max(end, stop)
    return end


_TYPE_SIZES: dict[bytes, Callable[[bytes], int | None]] = {
    b"XYZ ": _xyz_size,
    b"curv": _curve_size,
    b"para": _parametric_size,
    b"sf32": _s15_array_size,
    b"chrm": _chromaticity_size,
    b"mft1": _lut8_size,
    b"mft2": _lut16_size,
    b"text": _text_size,
    b"desc": _description_size,
    b"mluc": _localized_size,
    b"sig ": lambda _tag: 12,
    b"meas": lambda _tag: 36,
    b"view": lambda _tag: 36,
}
_CURVES = frozenset({b"curv", b"para"})
_LUTS = frozenset({b"mft1", b"mft2"})
_DESCRIPTIONS = frozenset({b"desc", b"mluc"})
# The tags kept, each with the types it may have: what turns pixel values into colours, and their names.
_KEPT_TAGS: dict[bytes, frozenset[bytes]] = {
    **{sig: frozenset({b"XYZ "}) for sig in (b"wtpt", b"bkpt", b"rXYZ", b"gXYZ", b"bXYZ", b"lumi")},
    **{sig: _CURVES for sig in (b"rTRC", b"gTRC", b"bTRC", b"kTRC")},
    **{sig: _LUTS for sig in (b"A2B0", b"A2B1", b"A2B2", b"B2A0", b"B2A1", b"B2A2", b"gamt")},
    b"chad": frozenset({b"sf32"}),
    b"chrm": frozenset({b"chrm"}),
    b"tech": frozenset({b"sig "}),
    b"meas": frozenset({b"meas"}),
    b"view": frozenset({b"view"}),
    **{sig: _DESCRIPTIONS for sig in (b"desc", b"dmnd", b"dmdd", b"vued")},
    b"cprt": _DESCRIPTIONS | {b"text"},
}


class _NotAProfileError(ValueError):
    """The bytes are not an ICC profile's layout (the message says where it breaks)."""


@dataclass(frozen=True, slots=True)
class _Tag:
    signature: bytes
    offset: int
    data: bytes


def _tag_size(signature: bytes, raw: bytes) -> int | None:
    """The exact size of a kept tag, or None when it is not kept (unknown, wrong type, malformed, too long)."""
    kind = raw[:4]
    if kind not in _KEPT_TAGS.get(signature, frozenset()):
        return None
    try:
        size = _TYPE_SIZES[kind](raw)
    except (struct.error, IndexError):
        return None
    if size is None or size < 8 or size > len(raw):
        return None
    if kind in _TEXT_TYPES and size > _MAX_TEXT_TAG_BYTES:
        return None
    return size


def _parse(blob: bytes) -> tuple[bytes, list[_Tag], list[str]]:
    """The header, the kept tags (table order) and the names of the tags dropped."""
    if len(blob) < _HEADER_BYTES + 4 or blob[36:40] != b"acsp":
        raise _NotAProfileError("no ICC header ('acsp' signature)")
    declared = _u32(blob, 0)
    if not _HEADER_BYTES + 4 <= declared <= len(blob):
        raise _NotAProfileError(f"its header declares {declared} bytes, the blob holds {len(blob)}")
    count = _u32(blob, _HEADER_BYTES)
    if count > _MAX_TAGS or _HEADER_BYTES + 4 + _TAG_ENTRY_BYTES * count > declared:
        raise _NotAProfileError(f"a tag table of {count} tags does not fit in it")
    kept: list[_Tag] = []
    dropped: list[str] = []
    for index in range(count):
        signature, offset, length = struct.unpack_from(">4sII", blob, _HEADER_BYTES + 4 + _TAG_ENTRY_BYTES * index)
        name = signature.decode("latin-1")
        if offset + length > declared or length < 8:
            raise _NotAProfileError(f"tag {name!r} lies outside the profile")
        raw = blob[offset : offset + length]
        size = _tag_size(signature, raw)
        if size is None:
            dropped.append(name)
        else:
            kept.append(_Tag(signature, offset, raw[:size]))
    return blob[:_HEADER_BYTES], kept, dropped


def _pad4(size: int) -> int:
    return (size + 3) & ~3


def _rebuild(header: bytes, tags: list[_Tag]) -> bytes:
    """Header, tag table and tag data packed in their original order, 4-byte aligned; shared data stays shared."""
    start = _HEADER_BYTES + 4 + _TAG_ENTRY_BYTES * len(tags)
    placed: dict[tuple[int, bytes], int] = {}
    body = bytearray()
    for tag in sorted(tags, key=lambda t: t.offset):
        key = (tag.offset, tag.data)
        if key not in placed:
            placed[key] = start + len(body)
            body += tag.data + b"\x00" * (_pad4(len(tag.data)) - len(tag.data))
    entries = (struct.pack(">4sII", tag.signature, placed[(tag.offset, tag.data)], len(tag.data)) for tag in tags)
    table = b"".join(entries)
    size = start + len(body)
    # The profile ID (bytes 84-99) is an MD5 of the profile as written: kept only if nothing changed, which
    # the caller sees by comparing the result with the source. Bytes 100-127 are reserved and must be zero.
    fixed = struct.pack(">I", size) + header[4:100] + b"\x00" * 28
    return fixed + struct.pack(">I", len(tags)) + table + bytes(body)


def read_profile(blob: bytes) -> ImageCms.ImageCmsProfile | None:
    """The profile as LittleCMS reads it, or None when it cannot."""
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(blob))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def srgb_profile() -> ImageCms.ImageCmsProfile:
    """LittleCMS's built-in sRGB profile (what pixels are converted to)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _converts_to_srgb(profile: ImageCms.ImageCmsProfile, space: ColourSpace) -> bool:
    mode = {ColourSpace.RGB: "RGB", ColourSpace.GREY: "L", ColourSpace.CMYK: "CMYK"}[space]
    try:
        ImageCms.buildTransform(profile, srgb_profile(), mode, "RGB")
    except ImageCms.PyCMSError:
        return False
    return True


def check_profile(blob: bytes, *, colour_space: ColourSpace) -> ProfileCheck:
    """Rebuilds a source's ICC profile from its parsed colour tags, or drops it.

    Args:
        blob: the profile as the source carries it.
        colour_space: the colour space of the pixels the profile will describe.

    Returns:
        The profile to write (the source's own bytes when it already is its rebuilt form) and, when anything
        was dropped, a note saying what and why.
    """
    try:
        header, tags, dropped = _parse(blob)
    except _NotAProfileError as exc:
        return ProfileCheck(None, is_unchanged=False, note=f"ICC profile dropped: not an ICC profile ({exc})")
    space = header[16:20].decode("latin-1")
    if space != colour_space.value:
        return ProfileCheck(
            None,
            is_unchanged=False,
            note=f"ICC profile dropped: its colour space {space.strip()!r} is not the output's "
            f"{colour_space.value.strip()!r}",
        )
    rebuilt = _rebuild(header, tags)
    profile = read_profile(rebuilt)
    if profile is None or not _converts_to_srgb(profile, colour_space):
        reason = "LittleCMS cannot read it" if read_profile(blob) is None else "its colour tags do not convert to sRGB"
        return ProfileCheck(None, is_unchanged=False, note=f"ICC profile dropped: {reason}")
    if rebuilt == blob:
        return ProfileCheck(blob, is_unchanged=True, note=None)
    rebuilt = rebuilt[:84] + b"\x00" * 16 + rebuilt[100:]  # its MD5 profile ID no longer holds
    names = ", ".join(repr(name) for name in dropped)
    why = f"; tags {names} dropped (not colour tags of a known type and size)" if dropped else ""
    note = f"ICC profile rewritten from its colour tags ({len(blob):,} -> {len(rebuilt):,} bytes){why}"
    return ProfileCheck(rebuilt, is_unchanged=False, note=note)
