"""Media I/O at the edge of the core: image decoding/encoding and atomic file replacement."""

from efface.media.atomic import atomic_write_bytes, find_leftovers, is_leftover
from efface.media.images import CodecOptions, DecodedImage, ImageFormat, decode_image, encode_image

__all__ = [
    "CodecOptions",
    "DecodedImage",
    "ImageFormat",
    "atomic_write_bytes",
    "decode_image",
    "encode_image",
    "find_leftovers",
    "is_leftover",
]
