"""Videos: open and inspect once, then decode, anonymize and re-encode the first video stream frame by
frame, with the audio and subtitle streams copied packet for packet. PyAV is used only in this package;
its errors are translated into efface's (``_errors``).

What is kept: every frame and its exact timestamp (variable frame rates stay variable), the resolution,
the pixel format where the encoder supports it, the colour tags, the display matrix (rotation), the
audio and subtitle packets byte for byte, and stream languages and dispositions.

Metadata policy: unless ``keep_metadata`` is on, the output carries no container or stream tags
(title, comment, artist, location/GPS, device make and model, creation time, encoder) beyond each
stream's language. What else could show a face or a place is dropped whatever the option: video
streams after the first (a second camera angle would not be anonymized), cover art, data tracks
(timecode, GoPro GPS telemetry), attachments, and per-frame side data such as SEI messages and closed
captions.

A decode failure anywhere, a frame count short of what the file declares or a track that ends early
refuses the whole file: an output with frames silently missing is never written.

Modules: ``_options`` (suffixes, ``VideoOptions``), ``_errors`` (the translation of FFmpeg's errors),
``_decode`` (open, inspect, the one demuxing pass), ``_encode`` (encoder choice, streams, tags, muxing),
``_source`` (``open_video`` and ``VideoSource``, which tie them together).
"""

from typing import TYPE_CHECKING

from efface._lazy import lazy_exports
from efface.media.video._options import VIDEO_SUFFIXES, X264_PRESETS, FrameProcessor, VideoOptions, is_video_path

if TYPE_CHECKING:
    from efface.media.video._decode import VideoInfo
    from efface.media.video._source import VideoSource, open_video

__all__ = [
    "VIDEO_SUFFIXES",
    "X264_PRESETS",
    "FrameProcessor",
    "VideoInfo",
    "VideoOptions",
    "VideoSource",
    "is_video_path",
    "open_video",
]

# Imported on first use: the options and suffixes need no PyAV, and a run on photos never opens a video.
_LAZY = {
    "VideoInfo": "efface.media.video._decode",
    "VideoSource": "efface.media.video._source",
    "open_video": "efface.media.video._source",
}

__getattr__ = lazy_exports(__name__, _LAZY)
