"""Media I/O at the edge of the core: image and video decoding/encoding and atomic file replacement."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from efface.media.atomic import atomic_write_bytes, atomic_write_with, find_leftovers, is_leftover
from efface.media.images import CodecOptions, DecodedImage, ImageFormat, decode_image, encode_image
from efface.media.video import VIDEO_SUFFIXES, FrameProcessor, VideoOptions, is_video_path

if TYPE_CHECKING:
    from efface.media.video import VideoInfo, VideoSource, open_video

__all__ = [
    "VIDEO_SUFFIXES",
    "CodecOptions",
    "DecodedImage",
    "FrameProcessor",
    "ImageFormat",
    "VideoInfo",
    "VideoOptions",
    "VideoSource",
    "atomic_write_bytes",
    "atomic_write_with",
    "decode_image",
    "encode_image",
    "find_leftovers",
    "is_leftover",
    "is_video_path",
    "open_video",
]

# The parts that need PyAV load on first use (``efface.media.video``): a run on photos never opens a video.
_LAZY_VIDEO = frozenset({"VideoInfo", "VideoSource", "open_video"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY_VIDEO:
        raise AttributeError(f"module 'efface.media' has no attribute {name!r}")
    return getattr(import_module("efface.media.video"), name)
