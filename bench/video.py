"""Video: frames per second and face-frame coverage of efface beside deface, same video, same run.

Run by hand (not a test), e.g. on the crowd clip beside the repository:

    .venv/bin/python bench/video.py ../shared/data/video/crowd_1080p.mp4 [--skip-speed] [--no-cache]

Detections are cached under ``.bench-cache/`` at the repository root (the thorough ground truth takes minutes
on a small machine): one JSON file per detector, keyed by the video's sha256, the detection spec, the model
weights and a hash of efface's detection code (``src/efface/detection/`` but the tracker and presets), so a rerun after
a change to tracking, the pipeline or the encoder detects nothing again, and one after a change to detection
does. deface's detections are keyed by its version and threshold.

Ground truth: there is no hand annotation of this clip, so it is built the way the issue describes: the
``thorough`` preset runs on every frame; its detections are linked into tracks across frames (IoU >= 0.3,
gaps of up to 3 frames); a track seen on at least 3 frames is a face, and the frames inside its gaps are
face-frames too (box interpolated). Tracks on fewer frames are dropped as unconfirmed.

Coverage: a face-frame is covered when >= 70 % of its box lies inside what the tool anonymizes on that
frame. For efface: the default preset's detections, with faces carried between frames and without (no
hold-over, no look-back), with detection on every frame and on every 2nd/3rd frame, the latter with and
without light passes in between (``TrackingSpec.light_passes``: the preset's light pass, one half-size
pass, on the frames between full detections), and efface's default settings as they are; for deface: its
own detector at its defaults (threshold 0.2, box grown 1.3x into an ellipse), per frame.
Also the longest run of consecutive uncovered frames of a face that the tool covers on some other frame
(a "flash-through": what carrying faces between frames is for), and apart from it the faces a tool never
covers on any frame (a detector miss, issue of recall rather than tracking).

Speed: each tool's command line on a copy of the video (decode, detect, anonymize, encode, write; start-up
included), frames / wall time: deface, efface at its defaults, efface with ``--detect-every 1`` and, where
today's defaults differ from them, efface with the defaults before light passes (detection on every frame,
x264 preset medium). deface 1.5.0 runs in its own virtual environment (``bench/_deface.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _deface import DEFACE_VERSION, deface_executable, deface_python  # noqa: E402

from efface.config import Settings, load_settings  # noqa: E402
from efface.detection.multiscale import MultiScaleSpec  # noqa: E402
from efface.detection.postprocess import pairwise_iou  # noqa: E402
from efface.detection.presets import light_pass_spec  # noqa: E402
from efface.detection.tracking import TrackingSpec, cover_frames  # noqa: E402
from efface.pipeline.build import build_policy, inference_threads_for, load_models  # noqa: E402
from efface.records import BBox, Face, Preset, TransformSpec  # noqa: E402
from efface.transforms import Anonymizer  # noqa: E402

CACHE = ROOT / ".bench-cache"
DETECTION_CODE = ROOT / "src" / "efface" / "detection"
# The defaults before light passes, for the speed row "as before".
BEFORE_DEFAULTS = {"detect_every": 1, "video_preset": "medium"}

DEFACE_THRESHOLD = 0.2
LINK_IOU = 0.3
MAX_GAP = 3
MIN_FRAMES = 3
COVERED_SHARE = 0.7


@dataclass
class _Track:
    boxes: dict[int, BBox]

    @property
    def last(self) -> tuple[int, BBox]:
        index = max(self.boxes)
        return index, self.boxes[index]


def ground_truth(detections: list[tuple[Face, ...]]) -> list[dict[int, BBox]]:
    """Face tracks (frame index -> box) confirmed over neighbouring frames, gaps interpolated."""
    live: list[_Track] = []
    done: list[_Track] = []
    for index, faces in enumerate(detections):
        live, ended = (
            [t for t in live if index - t.last[0] <= MAX_GAP + 1],
            [t for t in live if index - t.last[0] > MAX_GAP + 1],
        )
        done.extend(ended)
        unmatched = list(range(len(faces)))
        if live and faces:
            iou = pairwise_iou(
                np.array([t.last[1].xyxy for t in live], np.float32),
                np.array([f.box.xyxy for f in faces], np.float32),
            )
            for flat in np.argsort(-iou, axis=None):
                row, col = np.unravel_index(flat, iou.shape)
                if iou[row, col] < LINK_IOU:
                    break
                if col in unmatched and live[row].last[0] < index:
                    live[row].boxes[index] = faces[col].box
                    unmatched.remove(col)
        live.extend(_Track({index: faces[col].box}) for col in unmatched)
    done.extend(live)
    tracks = []
    for track in done:
        if len(track.boxes) < MIN_FRAMES:
            continue
        frames = sorted(track.boxes)
        filled = dict(track.boxes)
        for a, b in itertools.pairwise(frames):
            for index in range(a + 1, b):
                t = (index - a) / (b - a)
                xa, xb = np.array(track.boxes[a].xyxy), np.array(track.boxes[b].xyxy)
                filled[index] = BBox(*((1 - t) * xa + t * xb).tolist())
        tracks.append(filled)
    return tracks


@dataclass(frozen=True)
class Coverage:
    """How one tool covered the ground-truth faces of a clip.

    Attributes:
        covered: share of face-frames covered.
        flash_through: the longest run of consecutive uncovered frames of a face the tool covers on at least
            one other frame (a face that flashes through).
        missed_faces: face tracks never covered on any frame (a detector miss, not a tracking gap).
        missed_face_frames: their face-frames.
    """

    covered: float
    flash_through: int
    missed_faces: int
    missed_face_frames: int


def coverage(
    tracks: list[dict[int, BBox]], covers: list[tuple[Face, ...]], anonymizer: Anonymizer, hw: tuple[int, int]
) -> Coverage:
    masks: dict[int, np.ndarray] = {}
    covered = total = longest = missed = missed_frames = 0
    for track in tracks:
        flags = []
        for index in sorted(track):
            if index not in masks:
                masks[index] = anonymizer.region_mask(hw[0], hw[1], covers[index])
            box = track[index]
            x1, y1 = max(0, round(box.x1)), max(0, round(box.y1))
            x2, y2 = min(hw[1], round(box.x2)), min(hw[0], round(box.y2))
            area = max(1, (x2 - x1) * (y2 - y1))
            flags.append(bool(masks[index][y1:y2, x1:x2].sum() / area >= COVERED_SHARE))
        total += len(flags)
        covered += sum(flags)
        if not any(flags):
            missed += 1
            missed_frames += len(flags)
            continue
        run = 0
        for flag in flags:
            run = 0 if flag else run + 1
            longest = max(longest, run)
    return Coverage(covered / max(total, 1), longest, missed, missed_frames)


def decode(video: Path) -> list[np.ndarray]:
    with av.open(str(video)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def detection_code_sha256() -> str:
    """sha256 over efface's detection modules: not the tracker (it only reads detections), nor the presets
    (the spec is in the key itself)."""
    digest = hashlib.sha256()
    for path in sorted(DETECTION_CODE.glob("*.py")):
        if path.name not in ("tracking.py", "presets.py"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cached(
    name: str, key: dict[str, object], compute: Callable[[], list[tuple[Face, ...]]], *, cache: Path | None
) -> list[tuple[Face, ...]]:
    """Per-frame detections from ``cache`` where a file there has exactly ``key``, else computed and stored."""
    text = json.dumps(key, sort_keys=True, default=str)
    path = None if cache is None else cache / f"video-{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if path is not None and path.is_file():
        stored = json.loads(path.read_text())
        if stored["key"] == json.loads(text):
            print(f"{name}: detections from {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
            return [tuple(Face(BBox(*r[:4]), r[4]) for r in rows) for rows in stored["frames"]]
    t0 = time.perf_counter()
    found = compute()
    print(f"{name}: detected in {time.perf_counter() - t0:.1f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = [[[*f.box.xyxy, f.score] for f in faces] for faces in found]
        path.write_text(json.dumps({"key": json.loads(text), "frames": frames}))
    return found


def efface_detections(
    name: str,
    frames: list[np.ndarray],
    settings: Settings,
    spec: MultiScaleSpec,
    *,
    video_sha256: str,
    cache: Path | None,
) -> list[tuple[Face, ...]]:
    """``spec``'s detections on every frame, through efface's own models (all cores' threads)."""
    models = load_models(settings, inference_threads=inference_threads_for(1))
    key = {
        "video_sha256": video_sha256,
        "spec": spec.as_dict(),
        "weights_sha256": models.weights_sha256,
        "detection_code_sha256": detection_code_sha256(),
    }
    detector = models.detector(spec)
    return cached(name, key, lambda: [detector.detect(frame) for frame in frames], cache=cache)


def deface_detections(video: Path, work: Path, *, video_sha256: str, cache: Path | None) -> list[tuple[Face, ...]]:
    def run_deface() -> list[tuple[Face, ...]]:
        out = work / "deface.json"
        subprocess.run(
            [str(deface_python()), str(ROOT / "bench" / "deface_video_detect.py"), str(video), str(out), "0.05"],
            check=True,
        )
        return [
            tuple(
                Face(BBox(*row[:4]), min(max(row[4], 0.0), 1.0)) for row in rows if row[2] > row[0] and row[3] > row[1]
            )
            for rows in json.loads(out.read_text())["frames"]
        ]

    key = {"video_sha256": video_sha256, "deface": DEFACE_VERSION, "detect_threshold": 0.05}
    found = cached("deface", key, run_deface, cache=cache)
    return [tuple(f for f in faces if f.score >= DEFACE_THRESHOLD) for faces in found]


def every(
    n: int, detections: list[tuple[Face, ...]], light: list[tuple[Face, ...]] | None
) -> list[tuple[Face, ...] | None]:
    """What the tracker gets with detection on every ``n``-th frame: ``light`` (or nothing) in between."""
    return [faces if i % n == 0 else (light[i] if light is not None else None) for i, faces in enumerate(detections)]


def as_configured(
    tracking: TrackingSpec, detections: list[tuple[Face, ...]], light: list[tuple[Face, ...]]
) -> list[tuple[Face, ...] | None]:
    """What the tracker gets under ``tracking``'s own detect_every and light passes."""
    return every(tracking.detect_every, detections, light if tracking.light_passes else None)


def thorough_tracks(frames: list[np.ndarray], *, video_sha256: str, cache: Path | None) -> list[dict[int, BBox]]:
    """The clip's ground truth: the thorough preset's detections on every frame, linked into tracks."""
    settings = load_settings(db_url="sqlite://", preset=Preset.THOROUGH)
    spec = build_policy(settings).detection
    return ground_truth(efface_detections("thorough", frames, settings, spec, video_sha256=video_sha256, cache=cache))


def default_and_light(
    frames: list[np.ndarray], settings: Settings, *, video_sha256: str, cache: Path | None
) -> tuple[list[tuple[Face, ...]], list[tuple[Face, ...]]]:
    """``settings``' full detection and its light pass, each on every frame (the tracker picks its frames)."""
    spec = build_policy(settings).detection
    default = efface_detections("default", frames, settings, spec, video_sha256=video_sha256, cache=cache)
    light = efface_detections("light", frames, settings, light_pass_spec(spec), video_sha256=video_sha256, cache=cache)
    return default, light


def configured_coverage(
    frames: list[np.ndarray],
    settings: Settings,
    tracks: list[dict[int, BBox]],
    *,
    video_sha256: str,
    cache: Path | None,
) -> Coverage:
    """How ``settings`` (preset, precision, detect_every, light passes, tracking) cover the clip."""
    policy = build_policy(settings)
    default, light = default_and_light(frames, settings, video_sha256=video_sha256, cache=cache)
    hw = frames[0].shape[:2]
    covers = cover_frames(as_configured(policy.tracking, default, light), policy.tracking, width=hw[1], height=hw[0])
    return coverage(tracks, covers, policy.anonymizer, hw)


def deface_coverage(
    video: Path,
    tracks: list[dict[int, BBox]],
    hw: tuple[int, int],
    work: Path,
    *,
    video_sha256: str,
    cache: Path | None,
) -> Coverage:
    """deface at its defaults, per frame: threshold 0.2, box grown 1.3x into an ellipse."""
    found = deface_detections(video, work, video_sha256=video_sha256, cache=cache)
    return coverage(tracks, found, Anonymizer(TransformSpec(box_scale=1.3)), hw)


def timed(command: list[str], *, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    return time.perf_counter() - t0


def efface_run(copy: Path, work: Path, label: str, options: list[str], env: dict[str, str]) -> float:
    """Seconds of one ``efface anonymize`` of ``copy`` into a folder of its own (this checkout's code)."""
    out = work / f"efface-{len(list(work.glob('efface-*')))}"
    command = [sys.executable, "-m", "efface", "anonymize", str(copy), "--output", str(out)]
    command += ["--db", f"sqlite:///{out}.sqlite3", *options]
    seconds = timed(command, env={"PYTHONPATH": str(ROOT / "src"), **env})
    print(f"speed: {label}: {seconds:.1f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--cache", type=Path, default=CACHE, help="where detections are cached (.bench-cache/)")
    parser.add_argument("--no-cache", action="store_true", help="detect everything again, store nothing")
    parser.add_argument("--skip-speed", action="store_true", help="coverage only: no timed command-line runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cache = None if args.no_cache else args.cache
    frames = decode(args.video)
    hw = frames[0].shape[:2]
    video_sha256 = file_sha256(args.video)
    print(f"{args.video.name}: {len(frames)} frames, {hw[1]}x{hw[0]}")

    tracks = thorough_tracks(frames, video_sha256=video_sha256, cache=cache)

    settings = load_settings(db_url="sqlite://")
    policy = build_policy(settings)
    default, light = default_and_light(frames, settings, video_sha256=video_sha256, cache=cache)
    configured = policy.tracking
    # Each row names how often it detects: the defaults of TrackingSpec are efface's (every 3rd frame).
    every_frame = {"detect_every": 1, "light_passes": False}
    rows = {}
    for label, spec, detections in (
        ("efface, no carrying", TrackingSpec(hold_frames=0, lookback_frames=0, **every_frame), default),
        ("efface, detect every frame (carrying)", TrackingSpec(**every_frame), default),
        ("efface, detect every 2nd frame", TrackingSpec(detect_every=2, light_passes=False), every(2, default, None)),
        ("efface, detect every 3rd frame", TrackingSpec(detect_every=3, light_passes=False), every(3, default, None)),
        (
            "efface, detect every 2nd frame + light passes",
            TrackingSpec(detect_every=2, light_passes=True),
            every(2, default, light),
        ),
        (
            "efface, detect every 3rd frame + light passes",
            TrackingSpec(detect_every=3, light_passes=True),
            every(3, default, light),
        ),
        (
            f"efface default (detect every {configured.detect_every}, light passes {configured.light_passes})",
            configured,
            as_configured(configured, default, light),
        ),
    ):
        covers = cover_frames(detections, spec, width=hw[1], height=hw[0])
        rows[label] = coverage(tracks, covers, policy.anonymizer, hw)

    speeds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="efface-bench-video-") as scratch:
        work = Path(scratch)
        rows[f"deface {DEFACE_VERSION} (per frame)"] = deface_coverage(
            args.video, tracks, hw, work, video_sha256=video_sha256, cache=cache
        )

        if not args.skip_speed:
            copy = work / f"input{args.video.suffix}"
            shutil.copyfile(args.video, copy)
            speeds[f"deface {DEFACE_VERSION}"] = timed(
                [str(deface_executable()), str(copy), "-o", str(work / f"deface{args.video.suffix}")]
            )
            print(f"speed: deface: {speeds[f'deface {DEFACE_VERSION}']:.1f} s")
            speeds["efface default"] = efface_run(copy, work, "efface default", [], {})
            speeds["efface --detect-every 1"] = efface_run(
                copy, work, "efface --detect-every 1", ["--detect-every", "1"], {}
            )
            if any(getattr(settings, name) != value for name, value in BEFORE_DEFAULTS.items()):
                before = {f"EFFACE_{name.upper()}": str(value) for name, value in BEFORE_DEFAULTS.items()}
                label = (
                    "efface, defaults before light passes (" + ", ".join(f"{k}={v}" for k, v in before.items()) + ")"
                )
                speeds[label] = efface_run(copy, work, label, [], before)
    n = len(frames)
    faces = sum(len(t) for t in tracks)
    print(f"ground truth: {len(tracks)} face tracks, {faces} face-frames (thorough, confirmed on >= {MIN_FRAMES})")
    print("tool | face-frames covered | longest flash-through (frames) | faces never covered (face-frames)")
    for label, row in rows.items():
        print(f"{label} | {row.covered:.3f} | {row.flash_through} | {row.missed_faces} ({row.missed_face_frames})")
    if speeds:
        deface_s = speeds[f"deface {DEFACE_VERSION}"]
        print("speed, command line, whole clip | seconds | fps | x deface")
        for label, seconds in speeds.items():
            print(f"{label} | {seconds:.1f} | {n / seconds:.2f} | {deface_s / seconds:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "frames": n,
                    "face_tracks": len(tracks),
                    "face_frames": faces,
                    "coverage": {k: dataclasses.asdict(v) for k, v in rows.items()},
                    "seconds": speeds,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
