"""Where efface's time goes: start-up, the photo path stage by stage, the video path frame by frame.

Run by hand (not a test), from the repository root:

    .venv/bin/python bench/profile.py [--photos N] [--video PATH] [--frames N]

Three parts, each printed as a table of seconds and shares:

1. Start-up of ``efface anonymize`` on one photo: the whole CLI process (median of three), the interpreter
   alone, the import of ``efface.cli`` (``-X importtime``, the ten largest cumulative imports), and the load
   of the CenterFace session through efface's own ``pipeline.build.load_models`` (ONNX graph rewrite,
   weights hash, session build).
2. The photo path in process on N WIDER FACE photos (``../shared/data/wider-dev``, temporary copies, in
   place), default preset, one inference thread: read, decode, every detection pass (its input sizes, the
   ONNX run apart from resize, tensor fill, heatmap decode and NMS), fusion, transform, encode, hashing,
   staging, audit rows and the swap, as the CLI runs them (``stage_file`` then ``AuditedRun.commit``).
3. The video path on a clip (``../shared/data/video/crowd_1080p.mp4`` by default) for its first ``--frames``
   encoded frames: decode, detect, track, anonymize, colour conversion, encode, per thread (detection runs on
   a thread of its own, overlapping the rest; the main thread's wait for it is a row of its own).

Each stage is timed with ``time.perf_counter`` around efface's own module-level functions and methods,
wrapped for the run (nothing under ``src/`` changes); times are exclusive: a stage's row leaves out the
stages timed inside it, so the rows of one thread add up to its wall time ("untimed" is the rest).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_PHOTOS = DATA / "wider-dev" / "images"
DEFAULT_VIDEO = DATA / "video" / "crowd_1080p.mp4"

logger = logging.getLogger("bench.profile")


class Profile:
    """Exclusive wall time per (thread, stage), from nested ``stage`` blocks."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: Counter[tuple[str, str]] = Counter()
        self.shapes: Counter[tuple[str, tuple[int, ...]]] = Counter()
        self._local = threading.local()
        self._restore: list[tuple[object, str, object]] = []

    def _stack(self) -> list[list[Any]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def current(self, prefix: str) -> str:
        """The innermost open stage of this thread whose name starts with ``prefix`` ('' if none)."""
        for name, _children in reversed(self._stack()):
            if name.startswith(prefix):
                return str(name).split(" | ")[0]
        return ""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        stack = self._stack()
        entry: list[Any] = [name, 0.0]
        stack.append(entry)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            stack.pop()
            thread = "main" if threading.current_thread() is threading.main_thread() else "detect thread"
            self.seconds[thread, name] += elapsed - entry[1]
            self.calls[thread, name] += 1
            if stack:
                stack[-1][1] += elapsed

    def wrap(self, owner: object, attribute: str, name: str | Callable[..., str]) -> None:
        """Replaces ``owner.attribute`` (a function or method) with one timed as stage ``name`` (a name, or a
        function of the call's arguments that gives it), until ``restore``."""
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name(*args, **kwargs) if callable(name) else name):
                return original(*args, **kwargs)

        self._restore.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def wrap_generator(self, owner: object, attribute: str, name: str) -> None:
        """Like ``wrap`` for a generator function: each step of the generator is timed."""
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return self.steps(original(*args, **kwargs), name)

        self._restore.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def steps(self, iterator: Iterator[Any], name: str) -> Iterator[Any]:
        iterator = iter(iterator)
        try:
            while True:
                with self.stage(name):
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def restore(self) -> None:
        while self._restore:
            owner, attribute, original = self._restore.pop()
            setattr(owner, attribute, original)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.shapes.clear()


class _Namespace:
    """A module stand-in that times some of its functions and passes every other name through."""

    def __init__(self, module: object, timed: dict[str, Callable[..., Any]]) -> None:
        self._module = module
        self._timed = timed

    def __getattr__(self, name: str) -> Any:
        return self._timed.get(name) or getattr(self._module, name)


def _timed_call(profile: Profile, function: Callable[..., Any], name: Callable[[], str]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        with profile.stage(name()):
            return function(*args, **kwargs)

    return timed


class _Timed:
    """Stands in for ``wrapped``: a subclass times some of its methods, every other name is passed through."""

    def __init__(self, wrapped: Any, profile: Profile) -> None:
        self._wrapped = wrapped
        self._profile = profile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _TimedVideoFrame(_Timed):
    """``av.VideoFrame`` for the encoder: ``from_ndarray`` and the ``reformat`` of what it makes are timed."""

    def from_ndarray(self, array: np.ndarray, **kwargs: Any) -> Any:
        with self._profile.stage("RGB array -> av.VideoFrame"):
            frame = self._wrapped.from_ndarray(array, **kwargs)
        profile = self._profile

        class Reformat:
            def reformat(self, **options: Any) -> Any:
                with profile.stage("RGB -> YUV reformat (swscale)"):
                    return frame.reformat(**options)

        return Reformat()


class _TimedSession(_Timed):
    """An onnxruntime session whose runs are timed (and their input shapes counted) per detection pass."""

    def run(self, output_names: Any, feed: dict[str, np.ndarray], options: Any = None) -> Any:
        pass_name = self._profile.current("detect pass")
        (tensor,) = feed.values()
        self._profile.shapes[pass_name, tuple(tensor.shape)] += 1
        with self._profile.stage(f"{pass_name} | ONNX run"):
            return self._wrapped.run(output_names, feed, options)


def instrument(profile: Profile, models: Any) -> None:
    """Wraps the stages of the photo and video paths (see the module docstring)."""
    from efface.audit.store import AuditStore
    from efface.detection import centerface, multiscale
    from efface.detection.tracking import TemporalCover
    from efface.media import atomic, images
    from efface.media.video import _decode, _encode
    from efface.pipeline import core, run
    from efface.transforms.core import Anonymizer

    def in_pass(what: str) -> Callable[..., str]:
        return lambda *args, **kwargs: f"{profile.current('detect pass')} | {what}"

    # Photo: read, decode, encode, hashing, staging.
    profile.wrap(core, "_read", "read file")
    profile.wrap(core, "decode_image", "decode (Pillow, checks)")
    profile.wrap(images, "_to_rgb_and_alpha", "decode | to RGB array")
    profile.wrap(images, "find_extra_content", "decode | scan for trailing content")
    profile.wrap(core, "encode_image", "encode (Pillow)")
    profile.wrap(core, "stage_bytes", "write temp file (fsync)")
    profile.wrap(core, "_file_sha256", "hash file (sha256)")
    core.hashlib = _Namespace(hashlib, {"sha256": _timed_call(profile, hashlib.sha256, lambda: "hash bytes (sha256)")})
    # Audit: the pending row, the swap, the result row.
    profile.wrap(AuditStore, "record_file", "audit row (SQLite commit)")
    profile.wrap(run, "claim", "swap | claim (lock)")
    profile.wrap(atomic.ClaimedFile, "commit", "swap | os.replace + fsync")
    # Detection: each pass, and inside it resize, tensor fill, ONNX, heatmap decode, NMS, rescale.
    profile.wrap(multiscale.MultiScaleDetector, "detect_all_raw", "detect | fuse, NMS, clip (multiscale)")
    profile.wrap(
        centerface.CenterFaceDetector,
        "detect_raw",
        lambda self, image, *, input_scale: (
            f"detect pass x{input_scale:g}" + (" (light)" if profile.current("light pass") else "")
        ),
    )
    profile.wrap(multiscale.MultiScaleDetector, "_focus_pass", "detect pass focus (tiles)")
    profile.wrap(multiscale, "select_focus_cells", in_pass("select cells"))
    profile.wrap(
        centerface.CenterFaceDetector, "detect_batch_raw", in_pass("tensor fill (np.zeros, HWC->CHW float32 copy)")
    )
    centerface.cv2 = _Namespace(cv2, {"resize": _timed_call(profile, cv2.resize, in_pass("cv2.resize"))})
    multiscale.cv2 = _Namespace(
        cv2, {"copyMakeBorder": _timed_call(profile, cv2.copyMakeBorder, in_pass("tile crop + pad"))}
    )
    profile.wrap(centerface, "decode_centerface", in_pass("heatmap decode"))
    profile.wrap(centerface, "suppress", in_pass("NMS"))
    profile.wrap(centerface, "to_original_pixels", in_pass("rescale"))
    models.base._session = _TimedSession(models.base._session, profile)
    # Transform.
    profile.wrap(Anonymizer, "apply", "anonymize (blur, copy)")
    # Video: decode (with YUV->RGB), tracking, colour conversion back, x264, muxing.
    profile.wrap_generator(_decode.Demuxer, "frames", "decode frame + YUV->RGB (PyAV)")
    profile.wrap(TemporalCover, "push", "track (TemporalCover)")
    profile.wrap(TemporalCover, "flush", "track (TemporalCover)")
    original_encode_processed = _encode._encode_processed

    def encode_processed(processed: Iterator[np.ndarray], *args: Any, **kwargs: Any) -> int:
        return original_encode_processed(profile.steps(processed, "wait for detection, queue, rotate"), *args, **kwargs)

    profile._restore.append((_encode, "_encode_processed", original_encode_processed))
    _encode._encode_processed = encode_processed
    profile.wrap(_encode, "_encode", "encode frame (x264)")
    profile._restore.append((_encode, "VideoFrame", _encode.VideoFrame))
    _encode.VideoFrame = _TimedVideoFrame(_encode.VideoFrame, profile)
    profile.wrap(_encode, "_mux", "mux copied packets")


def print_table(title: str, rows: list[tuple[str, int, float]], *, total_s: float, per: str, count: int) -> None:
    """Rows of (stage, calls, seconds), largest first, with their share of ``total_s`` and time per item."""
    print(f"\n{title}")
    print(f"{'stage':62}{'calls':>7}{'seconds':>10}{'share':>8}{f'ms/{per}':>11}{'ms/call':>10}")
    for name, calls, seconds in sorted(rows, key=lambda row: -row[2]):
        share = 100 * seconds / total_s if total_s else 0.0
        per_call = f"{1000 * seconds / calls:10.1f}" if calls else ""
        print(f"{name:62}{calls:7d}{seconds:10.3f}{share:7.1f}%{1000 * seconds / max(count, 1):11.1f}{per_call}")
    print(f"{'total (wall)':62}{'':7}{total_s:10.3f}{100.0:7.1f}%{1000 * total_s / max(count, 1):11.1f}")


def thread_rows(profile: Profile, thread: str, *, wall_s: float | None) -> list[tuple[str, int, float]]:
    rows = [(name, profile.calls[t, name], s) for (t, name), s in profile.seconds.items() if t == thread]
    if wall_s is not None:
        rows.append(("(untimed: loop, results, GC)", 0, wall_s - sum(s for _name, _calls, s in rows)))
    return rows


def print_pass_shapes(profile: Profile) -> None:
    print("\nONNX input tensors per pass (batch, channels, height, width): runs")
    for (name, shape), runs in sorted(profile.shapes.items()):
        print(f"  {name:50} {shape!s:24} {runs}")


# --- 1. start-up ---------------------------------------------------------------------------------------------


def _timed_process(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t0


def startup(photo: Path, work: Path) -> None:
    python = sys.executable
    cli, bare, imports = [], [], []
    for attempt in range(3):
        copy = work / f"startup_{attempt}.jpg"
        shutil.copyfile(photo, copy)
        db = f"sqlite:///{work / f'startup_{attempt}.sqlite3'}"
        cli.append(_timed_process([python, "-m", "efface", "anonymize", str(copy), "--db", db]))
        bare.append(_timed_process([python, "-c", "pass"]))
        imports.append(_timed_process([python, "-c", "import efface.cli"]))
    traced = subprocess.run(
        [python, "-X", "importtime", "-c", "import efface.cli"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    cumulative: list[tuple[int, int, int, str]] = []  # cumulative us, self us, nesting depth, module
    for line in traced.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            cumulative.append((int(match[2]), int(match[1]), (len(match[3]) - 1) // 2, match[4]))
    total_us = sum(entry[1] for entry in cumulative)
    print("\n1. START-UP: `python -m efface anonymize ONE_PHOTO --db sqlite:///...` (median of 3 processes)")
    print(f"{'whole CLI process, one 1024 px photo (s)':58}{statistics.median(cli):10.3f}")
    print(f"{'  python -c pass (interpreter alone) (s)':58}{statistics.median(bare):10.3f}")
    print(f"{'  python -c import efface.cli (s)':58}{statistics.median(imports):10.3f}")
    print(f"{'  -X importtime: sum of self times of all imports (s)':58}{total_us / 1e6:10.3f}")
    print("\nimport efface.cli, top 10 cumulative (-X importtime, s):")
    for cumulative_us, _self_us, depth, name in sorted(cumulative, reverse=True)[:10]:
        print(f"  {'  ' * depth + name:50}{cumulative_us / 1e6:10.3f}")
    print("packages other than efface (top-level names, where first imported), top 10 cumulative (s):")
    packages = sorted((entry for entry in cumulative if "." not in entry[3] and entry[3] != "efface"), reverse=True)
    for cumulative_us, _self_us, _depth, name in packages[:10]:
        print(f"  {name:50}{cumulative_us / 1e6:10.3f}")


def load_models_timed(profile: Profile) -> Any:
    from efface.config import load_settings
    from efface.detection import _onnx, centerface
    from efface.pipeline.build import load_models

    settings = load_settings(db_url="sqlite://")
    profile.wrap(centerface, "dynamic_model_bytes", "onnx.load + make dims dynamic + serialize")
    profile.wrap(centerface, "file_sha256", "weights sha256")
    profile.wrap(centerface, "create_session", "create_session (providers, arena, options)")
    profile.wrap(_onnx.ort, "InferenceSession", "ort.InferenceSession (graph load + optimise)")
    t0 = time.perf_counter()
    with profile.stage("load_models (rest)"):
        models = load_models(settings, inference_threads=1)
    wall = time.perf_counter() - t0
    print_table(
        "model load: efface.pipeline.build.load_models(settings, inference_threads=1), in process",
        thread_rows(profile, "main", wall_s=None),
        total_s=wall,
        per="load",
        count=1,
    )
    profile.restore()
    profile.reset()
    return models


# --- 2. photos -----------------------------------------------------------------------------------------------


def pick_photos(folder: Path, count: int) -> list[Path]:
    """``count`` photos spread evenly over the sorted folder (every event is represented)."""
    found = sorted(folder.rglob("*.jpg"))
    if not found:
        raise SystemExit(f"no .jpg under {folder}")
    indices = np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)
    return [found[index] for index in dict.fromkeys(indices.tolist())]


def photos(models: Any, profile: Profile, sources: list[Path], work: Path) -> None:
    from efface.audit.store import AuditStore
    from efface.config import load_settings
    from efface.pipeline.build import audited_settings, build_policy
    from efface.pipeline.core import FileJob, stage_file
    from efface.pipeline.run import AuditedRun
    from efface.records import WriteMode

    settings = load_settings(db_url=f"sqlite:///{work / 'audit.sqlite3'}")
    policy = build_policy(settings)
    store = AuditStore(settings.db_url)
    folder = work / "photos"
    folder.mkdir()
    copies = []
    for index, source in enumerate(sources):
        copies.append(folder / f"{index:03d}_{source.name}")
        shutil.copyfile(source, copies[-1])
    warm = folder / "warm-up.jpg"
    shutil.copyfile(sources[0], warm)
    faces = 0
    run = AuditedRun.begin(
        store, command="anonymize", mode=WriteMode.IN_PLACE, models=models, settings=audited_settings(settings)
    )
    with run:
        run.commit(stage_file(FileJob(warm, warm), models=models, policy=policy))  # first-run allocations
        profile.reset()
        t0 = time.perf_counter()
        for path in copies:
            done = stage_file(FileJob(path, path), models=models, policy=policy)
            run.commit(done)
            faces += done.result.faces_anonymized
        wall = time.perf_counter() - t0
        run.finish()
    store.close()
    print(
        f"\n2. PHOTOS: {len(copies)} WIDER photos in place, preset {settings.preset.value}, 1 inference thread, "
        f"{faces} faces anonymized (stage_file + AuditedRun.commit, as the CLI runs them; warm-up excluded)"
    )
    print_table(
        "photo path, exclusive seconds per stage",
        thread_rows(profile, "main", wall_s=wall),
        total_s=wall,
        per="photo",
        count=len(copies),
    )
    print_pass_shapes(profile)
    summarise_detection(profile, wall)


def summarise_detection(profile: Profile, wall_s: float) -> None:
    """The detection rows grouped: ONNX runs against everything else, per pass."""
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (_thread, name), seconds in profile.seconds.items():
        if not name.startswith("detect"):
            continue
        pass_name = name.split(" | ")[0] if name.startswith("detect pass") else "fusion, NMS, clip (multiscale)"
        groups[pass_name][1 if name.endswith("ONNX run") else 0] += seconds
    print(f"\ndetection by pass: {'':28}{'ONNX (s)':>10}{'other (s)':>11}{'share of wall':>15}")
    for pass_name, (other, onnx) in sorted(groups.items(), key=lambda item: -sum(item[1])):
        print(f"  {pass_name:46}{onnx:10.3f}{other:11.3f}{100 * (onnx + other) / wall_s:14.1f}%")
    onnx_total = sum(onnx for _other, onnx in groups.values())
    other_total = sum(other for other, _onnx in groups.values())
    print(
        f"  {'all detection':46}{onnx_total:10.3f}{other_total:11.3f}{100 * (onnx_total + other_total) / wall_s:14.1f}%"
    )


# --- 3. video ------------------------------------------------------------------------------------------------


class _Enough(Exception):
    """Stops the video after the frames asked for."""


def video(models: Any, profile: Profile, source: Path, work: Path, frames: int) -> None:
    from efface.config import load_settings
    from efface.detection.presets import light_pass_spec
    from efface.media.atomic import Stager, discard
    from efface.media.video import open_video
    from efface.pipeline.build import build_policy
    from efface.pipeline.video import anonymize_video

    settings = load_settings(db_url="sqlite://")
    policy = build_policy(settings)
    clip = work / f"clip{source.suffix}"
    shutil.copyfile(source, clip)
    detect = models.detector(policy.detection).detect
    light_detect = models.detector(light_pass_spec(policy.detection)).detect

    def detect_light(image: np.ndarray) -> Any:
        with profile.stage("light pass"):
            return light_detect(image)

    stager = Stager()
    profile.reset()

    encoded = [0]
    stopped: list[tuple[float, dict[tuple[str, str], float], Counter[tuple[str, str]], Counter[Any]]] = []

    def on_frame(done: int, _expected: int | None) -> None:
        encoded[0] = done
        if done >= frames:
            # The figures as they stand now: closing the pipeline waits for the detections still in flight.
            stopped.append(
                (time.perf_counter(), dict(profile.seconds), Counter(profile.calls), Counter(profile.shapes))
            )
            raise _Enough

    t0 = time.perf_counter()
    with profile.stage("open + inspect (first frame)"):
        source_video = open_video(clip, options=policy.video)
    info = source_video.info
    try:
        with source_video:
            anonymize_video(
                source_video,
                work / f"out{source.suffix}",
                detect=detect,
                detect_light=detect_light if policy.tracking.light_passes else None,
                anonymize=policy.anonymizer.apply,
                tracking=policy.tracking,
                options=policy.video,
                on_frame=on_frame,
                stager=stager,
            )
    except _Enough:
        pass
    wall = time.perf_counter() - t0
    if stopped:
        stop_t, seconds, calls, shapes = stopped[0]
        wall = stop_t - t0
        profile.seconds.clear()
        profile.seconds.update(seconds)
        profile.calls, profile.shapes = calls, shapes
    if stager.staged is not None:
        discard(stager.staged)
    light = profile.calls.get(("detect thread", "light pass"), 0)
    detected = sum(calls for (thread, name), calls in profile.calls.items() if name.startswith("detect |")) - light
    print(
        f"\n3. VIDEO: {source.name}, {info.width}x{info.height} {info.codec} at {info.fps} fps, first {encoded[0]} "
        f"frames encoded ({detected} detected, {light} light passes; the tracker looks "
        f"{policy.tracking.lookback_frames} frames back), encoder {policy.video.codec or 'default'} preset "
        f"{policy.video.preset} crf {policy.video.crf}, 1 inference thread, detect every "
        f"{policy.tracking.detect_every} frame(s), light passes {policy.tracking.light_passes}"
    )
    print_table(
        "video, main thread (decode, track, anonymize, encode), exclusive seconds",
        thread_rows(profile, "main", wall_s=wall),
        total_s=wall,
        per="frame",
        count=encoded[0],
    )
    print_table(
        "video, detect thread (runs beside the main thread), exclusive seconds; share of the same wall",
        thread_rows(profile, "detect thread", wall_s=None),
        total_s=wall,
        per="frame",
        count=encoded[0],
    )
    print_pass_shapes(profile)
    summarise_detection(profile, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10, help="WIDER photos to profile (default 10)")
    parser.add_argument("--photo-dir", type=Path, default=DEFAULT_PHOTOS, help="where the photos are")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="the clip to profile")
    parser.add_argument("--frames", type=int, default=60, help="frames of the clip to encode (default 60)")
    parser.add_argument("--skip", choices=("startup", "photos", "video"), action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sources = pick_photos(args.photo_dir, args.photos)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="efface-profile-") as scratch:
        work = Path(scratch)
        if "startup" not in args.skip:
            startup(sources[0], work)
        profile = Profile()
        models = load_models_timed(profile)
        instrument(profile, models)
        try:
            if "photos" not in args.skip:
                photos(models, profile, sources, work)
            if "video" not in args.skip:
                if not args.video.is_file():
                    raise SystemExit(f"no video at {args.video}")
                video(models, profile, args.video, work, args.frames)
        finally:
            profile.restore()


if __name__ == "__main__":
    main()
