"""What a file is, from its first bytes: a picture, a video, or neither. A run takes files by their content, not by
their names: a JPEG named ``.jfif`` or with no extension at all is a picture, an MPEG transport stream named
``.mts`` is a video, and a TypeScript file named ``.ts`` is neither.

The magic numbers are those of the formats' specifications: JPEG, PNG, GIF, WebP, TIFF, BMP, ICO, PSD, JPEG 2000,
JPEG XL, PNM, SVG; ISO base media (``ftyp`` brands tell HEIF/AVIF pictures from MP4/MOV/3GP videos and MP4
audio), QuickTime's older first atoms, Matroska/WebM (EBML), RIFF (AVI video, WebP picture, WAV audio), MPEG-TS
(a 0x47 sync byte every 188 bytes, or every 192 in M2TS), MPEG-PS, ASF/WMV, FLV, Ogg Theora, MXF, RealMedia, Y4M.
Sniffing only says what to try: the decoder still refuses content that is not what its head claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from efface.errors import UnreadableFileError
from efface.media.images import IMAGE_SUFFIXES, UNSUPPORTED_IMAGE_SUFFIXES
from efface.media.video import VIDEO_SUFFIXES

__all__ = [
    "SHARD_SUFFIXES",
    "SNIFF_BYTES",
    "TABLE_SUFFIXES",
    "UNSUPPORTED_SHARD_SUFFIXES",
    "MediaKind",
    "Sniffed",
    "claimed_kind",
    "refusal",
    "sniff",
    "sniff_file",
]

# Enough for five MPEG-TS packets of 192 bytes and for the compatible brands of an ftyp box; one page read.
SNIFF_BYTES = 1024


class MediaKind(StrEnum):
    """What a file holds, for the pipeline: a still picture, a video, a shard (a tar archive, also gzipped, as
    WebDataset writes them: each picture member is anonymized, every other member kept), or a table (Parquet, or
    Arrow IPC as ``datasets`` saves them: each picture cell of its image columns is anonymized, all else kept)."""

    IMAGE = "image"
    VIDEO = "video"
    SHARD = "shard"
    TABLE = "table"


@dataclass(frozen=True, slots=True)
class Sniffed:
    """What a file's first bytes say.

    Attributes:
        kind: a picture or a video; None for anything else (text, audio, an archive, an empty file).
        format_name: what the content was recognised as (``"JPEG"``, ``"MPEG-TS"``, ``"WAV audio"``), or None when
            it was not recognised at all.
    """

    kind: MediaKind | None
    format_name: str | None

    @property
    def is_media(self) -> bool:
        return self.kind is not None


# Names that say "picture" or "video". A file named so whose content is not recognised still goes to the decoder,
# which refuses it aloud ("named .jpg but its content is not an image"): its name says it should be anonymized.
# ``.ts`` and ``.mts`` are not here: they name TypeScript sources as often as transport streams.
_OTHER_VIDEO_SUFFIXES = frozenset(
    {".3gp", ".3g2", ".m2ts", ".mpg", ".mpeg", ".m2v", ".vob", ".wmv", ".asf", ".flv", ".f4v", ".ogv", ".mxf"}
    | {".rm", ".rmvb", ".y4m", ".mod", ".tod", ".dv"}
)
_VIDEO_CLAIMS = VIDEO_SUFFIXES | _OTHER_VIDEO_SUFFIXES
_OTHER_PICTURE_SUFFIXES = frozenset({".jfif", ".jif", ".jfi", ".pjpeg", ".pjp", ".apng", ".heics", ".qoi", ".exr"})
_PICTURE_CLAIMS = IMAGE_SUFFIXES | (UNSUPPORTED_IMAGE_SUFFIXES - _VIDEO_CLAIMS) | _OTHER_PICTURE_SUFFIXES


# Names of shards. A gzip file is a shard only when named so: its head says gzip, not what the stream holds.
# Tars in other compressions are claimed too, so that they are refused aloud rather than passed over as not media.
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
UNSUPPORTED_SHARD_SUFFIXES = (".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar.lz4")


# Names of tables: Parquet, and Arrow IPC files and streams (``datasets.save_to_disk`` writes ``.arrow`` streams).
TABLE_SUFFIXES = frozenset({".parquet", ".pq", ".arrow", ".feather", ".ipc"})


def claimed_kind(path: Path) -> MediaKind | None:
    """What the file's name says it is (only its suffix), or None when the name does not say."""
    if path.name.lower().endswith(SHARD_SUFFIXES + UNSUPPORTED_SHARD_SUFFIXES):
        return MediaKind.SHARD
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return MediaKind.TABLE
    if suffix in _VIDEO_CLAIMS:
        return MediaKind.VIDEO
    if suffix in _PICTURE_CLAIMS:
        return MediaKind.IMAGE
    return None


# Camera raw formats built on TIFF. Pillow would read their small preview as a TIFF, and writing it back would
# destroy the raw data: they are refused before decoding.
_RAW_SUFFIXES = frozenset(
    {".dng", ".cr2", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef", ".srw", ".3fr"}
    | {".erf", ".kdc", ".dcr", ".mrw", ".mos", ".iiq", ".rwl", ".x3f", ".raw"}
)
CAMERA_RAW = "camera raw"


def refusal(sniffed: Sniffed, path: Path) -> str | None:
    """Why a picture must be refused before it is decoded (the decoder would take it for another format), or None.

    A TIFF named like a camera raw file, or whose first directory says it is one, is refused: efface would write
    back its preview as a plain TIFF and the raw data would be lost.
    """
    is_raw = sniffed.format_name == CAMERA_RAW or (
        sniffed.format_name == "TIFF" and path.suffix.lower() in _RAW_SUFFIXES
    )
    if is_raw:
        return "camera raw files are not supported: writing one back would lose its raw data"
    return None


def sniff_file(path: Path) -> Sniffed:
    """Reads the first ``SNIFF_BYTES`` of a file and says what it is.

    Raises:
        UnreadableFileError: the file cannot be opened or read.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise UnreadableFileError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    return sniff(head)


_IMAGE = MediaKind.IMAGE
_VIDEO = MediaKind.VIDEO
# Plain prefixes, tried in order.
_PREFIXES: tuple[tuple[bytes, MediaKind | None, str], ...] = (
    (b"\xff\xd8\xff", _IMAGE, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", _IMAGE, "PNG"),
    (b"GIF87a", _IMAGE, "GIF"),
    (b"GIF89a", _IMAGE, "GIF"),
    (b"IIRO", _IMAGE, CAMERA_RAW),  # Olympus ORF
    (b"IIRS", _IMAGE, CAMERA_RAW),
    (b"IIU\x00", _IMAGE, CAMERA_RAW),  # Panasonic RW2
    (b"FUJIFILMCCD-RAW", _IMAGE, CAMERA_RAW),
    (b"II+\x00", _IMAGE, "TIFF"),  # BigTIFF
    (b"MM\x00+", _IMAGE, "TIFF"),
    (b"8BPS", _IMAGE, "PSD"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", _IMAGE, "JPEG 2000"),
    (b"\xff\x4f\xff\x51", _IMAGE, "JPEG 2000"),
    (b"\xff\x0a", _IMAGE, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", _IMAGE, "JPEG XL"),
    (b"qoif", _IMAGE, "QOI"),
    (b"v/1\x01", _IMAGE, "OpenEXR"),
    (b"PAR1", MediaKind.TABLE, "Parquet"),
    (b"ARROW1\x00\x00", MediaKind.TABLE, "Arrow IPC file"),
    (b"\x1a\x45\xdf\xa3", _VIDEO, "Matroska/WebM"),
    (b"\x00\x00\x01\xba", _VIDEO, "MPEG-PS"),
    (b"\x00\x00\x01\xb3", _VIDEO, "MPEG video"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c", _VIDEO, "ASF/WMV"),
    (b"\x06\x0e\x2b\x34\x02\x05\x01\x01", _VIDEO, "MXF"),
    (b".RMF", _VIDEO, "RealMedia"),
    (b"YUV4MPEG2 ", _VIDEO, "Y4M"),
    (b"ID3", None, "MP3 audio"),
    (b"fLaC", None, "FLAC audio"),
    (b"\x1f\x8b", None, "gzip"),
)
# ISO base media major brands of pictures (HEIF, HEIC, AVIF and their sequences, Canon's CR3) and of audio.
_PICTURE_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1"})
_PICTURE_BRANDS |= frozenset({b"msf1", b"avif", b"avis", b"avio", b"jpgs", b"crx "})
_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
# First atoms of QuickTime files written before ftyp existed.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_TS_SYNC = 0x47
_TS_MIN_PACKETS = 3


def sniff(head: bytes) -> Sniffed:
    """What a file is, from its first bytes (``SNIFF_BYTES`` of them; fewer for a shorter file)."""
    if not head:
        return Sniffed(None, "empty file")
    if _is_tar_header(head):  # first: a tar begins with its first member's name, which may look like anything
        return Sniffed(MediaKind.SHARD, "tar")
    for prefix, kind, name in _PREFIXES:
        if head.startswith(prefix):
            return Sniffed(kind, name)
    if _is_arrow_stream(head):
        return Sniffed(MediaKind.TABLE, "Arrow IPC stream")
    for test in (_tiff, _riff, _iso_media, _bmp, _icon, _transport_stream, _flv, _ogg, _netpbm, _svg, _mpeg_audio):
        found = test(head)
        if found is not None:
            return found
    return Sniffed(None, None)


_ARROW_CONTINUATION = b"\xff\xff\xff\xff"
_ARROW_MAX_SCHEMA_BYTES = 1 << 24


def _is_arrow_stream(head: bytes) -> bool:
    """An Arrow IPC stream: the continuation marker, then the little-endian length of its first message (the
    schema, a flatbuffer: 8-byte aligned, and a schema of 16 MiB would be one of a million columns)."""
    if len(head) < 16 or not head.startswith(_ARROW_CONTINUATION):
        return False
    length = int.from_bytes(head[4:8], "little")
    return 0 < length < _ARROW_MAX_SCHEMA_BYTES and length % 8 == 0


_TAR_MAGIC_AT = 257
_TAR_CHECKSUM_AT = 148


def _is_tar_header(head: bytes) -> bool:
    """A POSIX or GNU tar header (``ustar`` at byte 257) whose checksum is right."""
    if len(head) < 512 or head[_TAR_MAGIC_AT : _TAR_MAGIC_AT + 5] != b"ustar":
        return False
    stored = head[_TAR_CHECKSUM_AT : _TAR_CHECKSUM_AT + 8].split(b"\x00", 1)[0].strip()
    try:
        checksum = int(stored, 8)
    except ValueError:
        return False
    # The sum of the header's bytes with the checksum field read as eight spaces: unsigned, or signed as some
    # old writers summed them.
    block = head[:_TAR_CHECKSUM_AT] + b" " * 8 + head[_TAR_CHECKSUM_AT + 8 : 512]
    unsigned = sum(block)
    return checksum in (unsigned, unsigned - 256 * sum(byte >= 0x80 for byte in block))


_DNG_VERSION_TAG = 0xC612


def _tiff(head: bytes) -> Sniffed | None:
    if head.startswith(b"II*\x00"):
        order: Literal["little", "big"] = "little"
    elif head.startswith(b"MM\x00*"):
        order = "big"
    else:
        return None
    if head[8:10] == b"CR":  # Canon CR2
        return Sniffed(_IMAGE, CAMERA_RAW)
    # The first directory, where it lies in the head (cameras write it first): a DNGVersion tag makes a DNG.
    offset = int.from_bytes(head[4:8], order)
    if offset >= 8 and offset + 2 <= len(head):
        entries = int.from_bytes(head[offset : offset + 2], order)
        for index in range(entries):
            start = offset + 2 + 12 * index
            if start + 2 > len(head):
                break
            if int.from_bytes(head[start : start + 2], order) == _DNG_VERSION_TAG:
                return Sniffed(_IMAGE, CAMERA_RAW)
    return Sniffed(_IMAGE, "TIFF")


def _riff(head: bytes) -> Sniffed | None:
    if not head.startswith(b"RIFF") or len(head) < 12:
        return None
    form = head[8:12]
    if form == b"WEBP":
        return Sniffed(_IMAGE, "WebP")
    if form in (b"AVI ", b"AVIX"):
        return Sniffed(_VIDEO, "AVI")
    if form == b"WAVE":
        return Sniffed(None, "WAV audio")
    return Sniffed(None, f"RIFF {form.decode('latin-1')!r}")


def _iso_media(head: bytes) -> Sniffed | None:
    if len(head) < 12:
        return None
    size = int.from_bytes(head[:4], "big")
    atom = head[4:8]
    if atom == b"ftyp" and size >= 16:
        major = head[8:12]
        if major in _AUDIO_BRANDS:
            return Sniffed(None, "MP4 audio")
        if major in _PICTURE_BRANDS:
            return Sniffed(_IMAGE, "Canon CR3" if major == b"crx " else "HEIF/AVIF")
        return Sniffed(_VIDEO, "MP4/QuickTime")
    if atom in _QUICKTIME_ATOMS and (size >= 8 or (atom == b"mdat" and size in (0, 1))):
        return Sniffed(_VIDEO, "MP4/QuickTime")
    return None


def _bmp(head: bytes) -> Sniffed | None:
    # "BM", the file size, four reserved zero bytes, the pixel offset, then a DIB header of a known size.
    is_bmp = head.startswith(b"BM") and len(head) >= 18 and head[6:10] == b"\x00\x00\x00\x00"
    if is_bmp and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return Sniffed(_IMAGE, "BMP")
    return None


def _icon(head: bytes) -> Sniffed | None:
    # ICONDIR (reserved 0, type 1 icon or 2 cursor, count), then the first entry, whose reserved byte is 0.
    if len(head) >= 22 and head[:2] == b"\x00\x00" and head[2:4] in (b"\x01\x00", b"\x02\x00"):
        count = int.from_bytes(head[4:6], "little")
        if 1 <= count <= 255 and head[9] == 0:
            return Sniffed(_IMAGE, "ICO")
    return None


def _transport_stream(head: bytes) -> Sniffed | None:
    for packet_bytes, first in ((188, 0), (192, 4)):  # M2TS puts a 4-byte timestamp before each packet
        starts = range(first, len(head), packet_bytes)
        if len(starts) >= _TS_MIN_PACKETS and all(head[start] == _TS_SYNC for start in starts):
            return Sniffed(_VIDEO, "MPEG-TS")
    return None


def _flv(head: bytes) -> Sniffed | None:
    if head.startswith(b"FLV\x01") and len(head) >= 5:
        has_video = bool(head[4] & 0x01)
        return Sniffed(_VIDEO, "FLV") if has_video else Sniffed(None, "FLV audio")
    return None


def _ogg(head: bytes) -> Sniffed | None:
    if head.startswith(b"OggS"):
        return Sniffed(_VIDEO, "Ogg Theora") if b"\x80theora" in head else Sniffed(None, "Ogg audio")
    return None


def _netpbm(head: bytes) -> Sniffed | None:
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        return Sniffed(_IMAGE, "PNM")
    return None


def _svg(head: bytes) -> Sniffed | None:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!DOCTYPE svg", b"<!--")) and b"<svg" in text):
        return Sniffed(_IMAGE, "SVG")
    return None


def _mpeg_audio(head: bytes) -> Sniffed | None:
    # An MPEG audio frame (MP3) or an ADTS (AAC) header: eleven set bits of frame sync.
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return Sniffed(None, "MPEG audio")
    return None
