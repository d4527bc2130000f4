"""Media I/O at the edge of the core: image and video decoding/encoding and atomic file replacement."""

from typing import TYPE_CHECKING

from efface._lazy import lazy_exports
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
__getattr__ = lazy_exports(__name__, dict.fromkeys(("VideoInfo", "VideoSource", "open_video"), "efface.media.video"))
