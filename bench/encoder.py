"""x264 presets on efface's anonymized output: encode time per frame, output size, quality outside the faces.

Run by hand (not a test), e.g. on the crowd clip beside the repository:

    .venv/bin/python bench/encoder.py ../shared/data/video/crowd_1080p.mp4 [--presets medium faster veryfast]
        [--threading 1 2:frame 0:frame]

The frames are what efface hands its encoder: the clip decoded, its faces (the default preset's detections,
cached in ``.bench-cache/`` by ``bench/video.py``'s rules, carried between frames by the default tracking)
anonymized with the default transform, converted to the encoder's pixel format once, before any timing. Each
preset then encodes the same frames with libx264 at efface's CRF into an MP4 in memory's stead (a temporary
file): wall and CPU time of the encode loop (``encode`` + mux + flush; CPU is the process's, every encoder
thread included), per frame; the file's size; and the luma PSNR outside the anonymized regions, of the
decoded output against the frames that went in (the regions are left out: they hold no one's face, and a
fill costs the encoder nothing). Deltas are against the first preset listed (``medium``: the default before).
First every preset as efface opens the encoder (PyAV's defaults: ``thread_count`` 0, x264's own choice of
1.5x the cores, and ``thread_type`` SLICE, which makes x264 split each frame into slices rather than encode
frames in parallel); ``--threading COUNT[:frame|slice]`` repeats every preset with the codec context's
``thread_count`` (and ``thread_type``) set.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from video import CACHE, decode, efface_detections, every, file_sha256  # noqa: E402

from efface.config import load_settings  # noqa: E402
from efface.detection.presets import light_pass_spec  # noqa: E402
from efface.detection.tracking import cover_frames  # noqa: E402
from efface.pipeline.build import build_policy  # noqa: E402


def encode(
    frames: list[av.VideoFrame], path: Path, *, preset: str, crf: int, threading: str | None
) -> tuple[float, float]:
    """Encodes ``frames`` (yuv420p) with libx264 into ``path``; wall and CPU seconds of the encode loop.

    ``threading``: ``COUNT[:frame|slice]`` for the codec context, or None for PyAV's defaults.
    """
    with av.open(str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as output:
        stream = output.add_stream("libx264", rate=25, options={"crf": str(crf), "preset": preset})
        if threading is not None:
            count, _, kind = threading.partition(":")
            stream.codec_context.thread_count = int(count)
            if kind:
                stream.codec_context.thread_type = kind.upper()
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        stream.time_base = Fraction(1, 25)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for index, frame in enumerate(frames):
            frame.pts, frame.time_base = index, Fraction(1, 25)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
        return time.perf_counter() - wall0, time.process_time() - cpu0


def luma_psnr_outside(path: Path, sources: list[np.ndarray], outside: list[np.ndarray]) -> float:
    """PSNR (dB) of the decoded luma of ``path`` against ``sources``' luma, over the ``outside`` pixels."""
    squared, count = 0.0, 0
    with av.open(str(path)) as container:
        for frame, source, keep in zip(container.decode(video=0), sources, outside, strict=True):
            luma = frame.to_ndarray()[: source.shape[0]].astype(np.float64)  # yuv420p: the Y plane on top
            difference = (luma - source)[keep]
            squared += float(np.square(difference).sum())
            count += int(keep.sum())
    mse = squared / max(count, 1)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--presets", nargs="+", default=["medium", "faster", "veryfast"])
    parser.add_argument("--threading", nargs="+", default=[], help="COUNT[:frame|slice] to try besides PyAV's")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where detections are cached (.bench-cache/)")
    args = parser.parse_args()
    rgb = decode(args.video)
    settings = load_settings(db_url="sqlite://")
    policy = build_policy(settings)
    sha256 = file_sha256(args.video)
    full = efface_detections("default", rgb, settings, policy.detection, video_sha256=sha256, cache=args.cache)
    light = None
    if policy.tracking.light_passes and policy.tracking.detect_every > 1:
        light_spec = light_pass_spec(policy.detection)
        light = efface_detections("light", rgb, settings, light_spec, video_sha256=sha256, cache=args.cache)
    height, width = rgb[0].shape[:2]
    regions = cover_frames(
        every(policy.tracking.detect_every, full, light), policy.tracking, width=width, height=height
    )
    frames, lumas, outside = [], [], []
    for pixels, faces in zip(rgb, regions, strict=True):
        anonymized = policy.anonymizer.apply(pixels, faces)[0] if faces else pixels
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(anonymized), format="rgb24").reformat(format="yuv420p")
        frames.append(frame)
        lumas.append(frame.to_ndarray()[:height].astype(np.float64))  # yuv420p as one array: the Y plane on top
        outside.append(~policy.anonymizer.region_mask(height, width, faces))
    del rgb
    share = 1 - float(np.mean([mask.mean() for mask in outside]))
    print(
        f"{args.video.name}: {len(frames)} frames {width}x{height}, crf {policy.video.crf}; anonymized regions "
        f"{100 * share:.1f} % of the pixels (left out of the PSNR)"
    )
    print("preset | threading | encode ms/frame wall | CPU ms/frame | size (MiB) | luma PSNR outside faces | vs first")
    first: tuple[int, float] | None = None
    with tempfile.TemporaryDirectory(prefix="efface-bench-encoder-") as scratch:
        for threading in [None, *args.threading]:
            for preset in args.presets:
                out = Path(scratch) / f"{preset}-{threading}.mp4".replace(":", "-")
                wall_s, cpu_s = encode(frames, out, preset=preset, crf=policy.video.crf, threading=threading)
                size = out.stat().st_size
                psnr = luma_psnr_outside(out, lumas, outside)
                first = first or (size, psnr)
                print(
                    f"{preset} | {threading or 'PyAV default'} | {1000 * wall_s / len(frames):.0f} | "
                    f"{1000 * cpu_s / len(frames):.0f} | {size / 2**20:.2f} | {psnr:.2f} dB | "
                    f"size {100 * (size / first[0] - 1):+.1f} %, PSNR {psnr - first[1]:+.2f} dB"
                )


if __name__ == "__main__":
    main()
