"""Video: frames per second and face-frame coverage of efface beside deface, same video, same run.

Run by hand (not a test), e.g. on the crowd clip beside the repository:

    .venv/bin/python bench/video.py ../shared/data/video/crowd_1080p.mp4

Ground truth: there is no hand annotation of this clip, so it is built the way the issue describes: the
``thorough`` preset runs on every frame; its detections are linked into tracks across frames (IoU >= 0.3,
gaps of up to 3 frames); a track seen on at least 3 frames is a face, and the frames inside its gaps are
face-frames too (box interpolated). Tracks on fewer frames are dropped as unconfirmed.

Coverage: a face-frame is covered when >= 70 % of its box lies inside what the tool anonymizes on that
frame. For efface: the default preset's detections, with faces carried between frames (the default
``TrackingSpec``) and without (no hold-over, no look-back), and with detection on every 2nd/3rd frame;
for deface: its own detector at its defaults (threshold 0.2, box grown 1.3x into an ellipse), per frame.
Also the longest run of consecutive uncovered frames of a face that the tool covers on some other frame
(a "flash-through": what carrying faces between frames is for), and apart from it the faces a tool never
covers on any frame (a detector miss, issue of recall rather than tracking).

Speed: each tool's command line on a copy of the video (decode, detect, anonymize, encode, write; start-up
included), frames / wall time. deface 1.5.0 runs in its own virtual environment (``bench/_deface.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _deface import DEFACE_VERSION, deface_executable, deface_python  # noqa: E402

from efface.config import load_settings  # noqa: E402
from efface.detection.postprocess import pairwise_iou  # noqa: E402
from efface.detection.tracking import TrackingSpec, cover_frames  # noqa: E402
from efface.pipeline.build import build_policy, inference_threads_for, load_models  # noqa: E402
from efface.records import BBox, Face, Preset, TransformSpec  # noqa: E402
from efface.transforms import Anonymizer  # noqa: E402

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


def deface_detections(video: Path, work: Path) -> list[tuple[Face, ...]]:
    out = work / "deface.json"
    subprocess.run(
        [str(deface_python()), str(ROOT / "bench" / "deface_video_detect.py"), str(video), str(out), "0.05"],
        check=True,
    )
    frames = json.loads(out.read_text())["frames"]
    return [
        tuple(
            Face(BBox(*row[:4]), min(max(row[4], 0.0), 1.0))
            for row in rows
            if row[2] > row[0] and row[3] > row[1] and row[4] >= DEFACE_THRESHOLD
        )
        for rows in frames
    ]


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--ground-truth-cache", type=Path, help="keep the thorough detections here (JSON)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    frames = decode(args.video)
    hw = frames[0].shape[:2]
    print(f"{args.video.name}: {len(frames)} frames, {hw[1]}x{hw[0]}")

    if args.ground_truth_cache and args.ground_truth_cache.is_file():
        cached = json.loads(args.ground_truth_cache.read_text())
        thorough = [tuple(Face(BBox(*r[:4]), r[4]) for r in rows) for rows in cached]
    else:
        thorough_settings = load_settings(db_url="sqlite://", preset=Preset.THOROUGH)
        detector = load_models(thorough_settings, inference_threads=inference_threads_for(1)).detector(
            build_policy(thorough_settings).detection
        )
        thorough = [detector.detect(frame) for frame in frames]
        if args.ground_truth_cache:
            args.ground_truth_cache.write_text(
                json.dumps([[[*f.box.xyxy, f.score] for f in faces] for faces in thorough])
            )
    tracks = ground_truth(thorough)

    settings = load_settings(db_url="sqlite://")
    policy = build_policy(settings)
    default_detector = load_models(settings, inference_threads=inference_threads_for(1)).detector(policy.detection)
    t0 = time.perf_counter()
    default = [default_detector.detect(frame) for frame in frames]
    detect_s = (time.perf_counter() - t0) / len(frames)
    default_spec = TrackingSpec()
    rows = {}
    for label, spec, detections in (
        ("efface, no carrying", TrackingSpec(hold_frames=0, lookback_frames=0), default),
        ("efface default (carrying)", default_spec, default),
        (
            "efface, detect every 2nd frame",
            TrackingSpec(detect_every=2),
            [faces if i % 2 == 0 else None for i, faces in enumerate(default)],
        ),
        (
            "efface, detect every 3rd frame",
            TrackingSpec(detect_every=3),
            [faces if i % 3 == 0 else None for i, faces in enumerate(default)],
        ),
    ):
        covers = cover_frames(detections, spec, width=hw[1], height=hw[0])
        rows[label] = coverage(tracks, covers, policy.anonymizer, hw)

    with tempfile.TemporaryDirectory(prefix="efface-bench-video-") as scratch:
        work = Path(scratch)
        deface_found = deface_detections(args.video, work)
        deface_region = Anonymizer(TransformSpec(box_scale=1.3))
        rows[f"deface {DEFACE_VERSION} (per frame)"] = coverage(tracks, list(deface_found), deface_region, hw)

        copy = work / f"input{args.video.suffix}"
        shutil.copyfile(args.video, copy)
        deface_s = timed([str(deface_executable()), str(copy), "-o", str(work / f"deface{args.video.suffix}")])
        efface_s = timed(
            [
                str(Path(sys.executable).parent / "efface"),
                "anonymize",
                str(copy),
                "--output",
                str(work / "efface"),
                "--db",
                f"sqlite:///{work / 'audit.sqlite3'}",
            ]
        )
    n = len(frames)
    faces = sum(len(t) for t in tracks)
    print(f"ground truth: {len(tracks)} face tracks, {faces} face-frames (thorough, confirmed on >= {MIN_FRAMES})")
    print("tool | face-frames covered | longest flash-through (frames) | faces never covered (face-frames)")
    for label, row in rows.items():
        print(f"{label} | {row.covered:.3f} | {row.flash_through} | {row.missed_faces} ({row.missed_face_frames})")
    print(f"speed, command line, whole clip: deface {n / deface_s:.2f} fps, efface {n / efface_s:.2f} fps")
    print(f"efface / deface: {deface_s / efface_s:.2f}x; efface detection alone {detect_s:.3f} s/frame")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "frames": n,
                    "face_tracks": len(tracks),
                    "face_frames": faces,
                    "coverage": {k: dataclasses.asdict(v) for k, v in rows.items()},
                    "deface_fps": n / deface_s,
                    "efface_fps": n / efface_s,
                    "ratio": deface_s / efface_s,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
