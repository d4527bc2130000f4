"""Tests for efface.media.icc: real profiles (LittleCMS's own, a hand-built CMYK one) and real payloads in them."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import ImageCms

from efface.media.icc import ColourSpace, check_profile

from ..conftest import cmyk_profile, icc_with_private_tag

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
PAYLOAD = b"\xff\xd8\xff\xe0" + b"the original picture" * 200 + b"\xff\xd9"


def _with_size(blob: bytes) -> bytes:
    return struct.pack(">I", len(blob)) + blob[4:]


def _tag_table(blob: bytes) -> dict[bytes, tuple[int, int]]:
    (count,) = struct.unpack_from(">I", blob, 128)
    entries = (struct.unpack_from(">4sII", blob, 132 + 12 * index) for index in range(count))
    return {signature: (offset, size) for signature, offset, size in entries}


def _with_tag_size(blob: bytes, signature: bytes, size: int) -> bytes:
    (count,) = struct.unpack_from(">I", blob, 128)
    patched = bytearray(blob)
    for index in range(count):
        at = 132 + 12 * index
        if blob[at : at + 4] == signature:
            struct.pack_into(">I", patched, at + 8, size)
    return bytes(patched)


def test_a_profile_that_is_its_rebuilt_form_is_kept_byte_for_byte() -> None:
    check = check_profile(SRGB, colour_space=ColourSpace.RGB)
    assert check.profile == SRGB and check.is_unchanged is True and check.note is None


@pytest.mark.parametrize(
    ("build", "dropped"),
    [
        (lambda: _with_size(SRGB + PAYLOAD), None),
        (lambda: icc_with_private_tag(PAYLOAD), "'prVt'"),
        # the tag table says chrm is longer than its own fields declare: the slack goes
        (lambda: _with_size(_with_tag_size(SRGB + PAYLOAD, b"chrm", 36 + len(PAYLOAD))), None),
    ],
    ids=["bytes-after-the-tags", "private-tag", "slack-after-a-tag"],
)
def test_a_payload_in_a_profile_is_cut_out_and_the_colour_tags_kept(build, dropped: str | None) -> None:
    blob = build()
    assert PAYLOAD in blob

    check = check_profile(blob, colour_space=ColourSpace.RGB)

    assert check.profile is not None and PAYLOAD not in check.profile
    assert check.is_unchanged is False and check.note is not None and check.note.startswith("ICC profile rewritten")
    assert (dropped in check.note) if dropped else ("dropped" not in check.note)
    assert _tag_table(check.profile).keys() == _tag_table(SRGB).keys()
    rebuilt = ImageCms.ImageCmsProfile(io.BytesIO(check.profile))
    assert rebuilt.profile.xcolor_space == "RGB " and rebuilt.profile.red_colorant is not None
    assert check_profile(check.profile, colour_space=ColourSpace.RGB).is_unchanged is True  # a fixed point


@pytest.mark.parametrize(
    ("blob", "space", "reason"),
    [
        (b"", ColourSpace.RGB, "not an ICC profile"),
        (PAYLOAD, ColourSpace.RGB, "not an ICC profile"),
        (SRGB[:200], ColourSpace.RGB, "not an ICC profile"),
        (SRGB, ColourSpace.GREY, "colour space 'RGB' is not the output's 'GRAY'"),
        (cmyk_profile(), ColourSpace.RGB, "colour space 'CMYK' is not the output's 'RGB'"),
        (ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes(), ColourSpace.RGB, "'Lab'"),
        # only unknown tags: nothing left that converts colours
        (
            _with_size(SRGB[:128] + struct.pack(">I", 1) + struct.pack(">4sII", b"prVt", 144, 8) + b"prVt" + bytes(4)),
            ColourSpace.RGB,
            "do not convert to sRGB",
        ),
    ],
    ids=["empty", "a-jpeg", "truncated", "rgb-for-grey", "cmyk-for-rgb", "lab-for-rgb", "no-colour-tags"],
)
def test_a_profile_that_cannot_describe_the_output_is_dropped_with_the_reason(
    blob: bytes, space: ColourSpace, reason: str
) -> None:
    check = check_profile(blob, colour_space=space)
    assert check.profile is None and check.is_unchanged is False
    assert check.note is not None and check.note.startswith("ICC profile dropped") and reason in check.note


def test_a_tag_outside_the_profile_makes_it_no_profile() -> None:
    offset, _size = _tag_table(SRGB)[b"wtpt"]
    broken = _with_tag_size(SRGB, b"wtpt", len(SRGB))
    check = check_profile(broken, colour_space=ColourSpace.RGB)
    assert offset > 0 and check.profile is None and "outside the profile" in (check.note or "")


def test_the_cmyk_profile_is_kept_for_cmyk_pixels() -> None:
    check = check_profile(cmyk_profile(), colour_space=ColourSpace.CMYK)
    assert check.is_unchanged is True
