"""The one place where FFmpeg's and the OS's errors about a video become efface's."""

from __future__ import annotations

from pathlib import Path

import av

from efface.errors import (
    CorruptImageError,
    InputError,
    InputNotFoundError,
    OutputError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from efface.media.video._options import is_video_path

__all__ = ["input_error", "not_a_video", "output_error"]


def not_a_video(path: Path, *, read_as: str | None = None) -> InputError:
    """A file FFmpeg does not read as a video: corrupt if it is named like one, else unsupported."""
    found = f" (FFmpeg reads it as {read_as})" if read_as else ""
    if is_video_path(path):
        return CorruptImageError(f"named {path.suffix} but its content is not a video{found}", path=path)
    return UnsupportedFormatError(f"not a video format efface can read{found}", path=path)


def input_error(exc: Exception, *, path: Path) -> InputError:
    """Translates an FFmpeg or OS error met while reading ``path``."""
    reason = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, FileNotFoundError):
        return InputNotFoundError("no such file", path=path)
    if isinstance(exc, av.DecoderNotFoundError):
        return UnsupportedFormatError(f"no decoder for its video codec: {reason}", path=path)
    if isinstance(exc, av.FFmpegError) and not isinstance(exc, OSError):
        return CorruptImageError(f"cannot decode video: {reason}", path=path)
    return UnreadableFileError(f"cannot read: {reason}", path=path)


def output_error(exc: Exception, *, path: Path) -> OutputError:
    """Translates an FFmpeg or OS error met while writing the video meant for ``path``."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return OutputError(f"cannot write video: {reason}", path=path)
