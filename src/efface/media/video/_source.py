"""``open_video``: one open and one inspection per file, then one pass, to read or to transcode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from efface.media.atomic import Original, Stager, atomic_write_with
from efface.media.video._decode import DecodeTally, Demuxer, VideoInfo, open_container
from efface.media.video._encode import encode_video, muxer_for
from efface.media.video._options import FrameProcessor, VideoOptions
from efface.records import VideoStats

__all__ = ["VideoSource", "open_video"]


def open_video(path: Path, *, options: VideoOptions) -> VideoSource:
    """Opens and inspects a video: its layout, timing and rotation, and its first frame decoded.

    Use it as a context manager; it closes the file on leaving.

    Args:
        path: the video file.
        options: limits (``max_pixels``).

    Returns:
        The open source; ``info`` holds what inspection found.

    Raises:
        InputNotFoundError: no such file.
        UnreadableFileError: the OS refused to read it.
        UnsupportedFormatError: not a container FFmpeg reads, or no video stream.
        CorruptImageError: empty, truncated, or the first frame does not decode.
        ImageTooLargeError: frames with more than ``options.max_pixels`` pixels.
    """
    container = open_container(path)
    try:
        demuxer = Demuxer(container, path=path, options=options)
    except BaseException:
        container.close()
        raise
    return VideoSource(demuxer)


class VideoSource:
    """An open, inspected video whose frames are read once: by ``frames`` (a dry run) or ``transcode``.

    Made by ``open_video``. Frames are uint8 (H, W, 3) RGB as stored, not rotated (see
    ``VideoInfo.rotation_deg``). Memory does not grow with the video's length.
    """

    def __init__(self, demuxer: Demuxer) -> None:
        self._demuxer = demuxer
        self._is_closed = False

    @property
    def info(self) -> VideoInfo:
        """What inspection found."""
        return self._demuxer.info

    @property
    def path(self) -> Path:
        return self._demuxer.path

    def frames(self) -> Iterator[np.ndarray]:
        """Decodes every frame of the video stream and writes nothing (for dry runs).

        The checks are those of ``transcode``; as frames stream, a file found truncated or damaged
        raises only once its good frames have been yielded.

        Yields:
            uint8 (H, W, 3) RGB frames as stored, in order.

        Raises:
            CorruptImageError: a frame is missing or does not decode.
            InputError: the file cannot be read further.
            RuntimeError: the frames were already read.
        """
        self._check_unread()
        tally = DecodeTally()
        for frame in self._demuxer.frames(tally):
            tally.timings.clear()  # nothing pairs timings with output frames here
            yield frame

    def transcode(
        self,
        destination: Path,
        process: FrameProcessor,
        *,
        options: VideoOptions,
        on_frame: Callable[[int], None] | None = None,
        permissions_from: Path | None = None,
        replacing: Original | None = None,
        stager: Stager | None = None,
    ) -> VideoStats:
        """Re-encodes the video stream through ``process``, copying audio and subtitles, into ``destination``.

        The output is written to a temporary file beside ``destination`` and swapped in only once
        complete, so ``destination`` may be the source itself: a failure or a kill leaves the original
        byte for byte as it was. The source is closed before the swap.

        Args:
            destination: the file to create or replace; its suffix picks the container.
            process: gets the decoded frames and yields one array of the same shape per frame, in order.
            options: encoder, quality and metadata choices.
            on_frame: called with the count of frames encoded so far, after each frame.
            permissions_from: a file whose permission bits the output takes (the source, into an output folder).
            replacing: in place, the source as it was opened (``atomic_write_with``).
            stager: stage the output there instead of swapping it in (``Stager``).

        Returns:
            What was written: frames, encoder, quality, measured duration, copied and dropped streams.
            Face counts are zero; the caller that detected faces adds them.

        Raises:
            InputError: the source cannot be decoded completely, or its audio or subtitle codec does not
                fit the destination's container.
            ConfigurationError: ``options.codec`` is unknown, does not fit the container or will not open.
            OutputError: the output could not be written.
            ValueError: ``process`` yielded a different number of frames, or frames of another shape.
            RuntimeError: the frames were already read.
        """
        self._check_unread()
        muxer = muxer_for(destination)

        def write(temporary: Path) -> VideoStats:
            try:
                return encode_video(
                    self._demuxer,
                    temporary,
                    process,
                    muxer=muxer,
                    destination=destination,
                    options=options,
                    on_frame=on_frame,
                )
            finally:
                self.close()  # before the output replaces the source (they may be one file)

        if stager is not None:
            return stager.write_with(destination, write, permissions_from=permissions_from, replacing=replacing)
        return atomic_write_with(destination, write, permissions_from=permissions_from, replacing=replacing)

    def _check_unread(self) -> None:
        if self._is_closed:
            raise RuntimeError(f"{self.path} is closed")
        if self._demuxer.is_read:
            raise RuntimeError(f"the frames of {self.path} were already read; open it again to reread them")

    def close(self) -> None:
        if not self._is_closed:
            self._is_closed = True
            self._demuxer.container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
