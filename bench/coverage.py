"""Detection coverage and speed: efface's presets beside deface at its defaults, same images, same run.

Run by hand (not a test); by default on the WIDER FACE validation sample beside the repository
(``../shared/data/wider-dev``), e.g. fp32 beside int8 on the default preset, efface alone:

    nice .venv/bin/python bench/coverage.py --presets balanced --precisions fp32,int8 --no-deface --no-cli

deface 1.5.0 is installed into its own virtual environment (``.bench-venvs/deface``) and run there: its
detections come from its own CenterFace wrapper at its default threshold (0.2, full resolution); its speed
from its command line on a copy of the images. Every figure of both tools is computed by efface's
``verify`` code with the official WIDER protocol: recall at the operating threshold by face height on the
chosen subset (hard by default), false positives per image (a detection overlapping no annotated face by
IoU 0.3, invalid faces included), AP on easy/medium/hard, the share of faces whose box lies >= 70 % inside
the anonymized region (both tools grow the box 1.3x into an ellipse), and images per second end to end
from the command line (decode, detect, blur, encode, write; start-up included).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _deface import DEFACE_VERSION, deface_executable, deface_python  # noqa: E402

from efface.config import load_settings  # noqa: E402
from efface.media.images import CodecOptions, decode_image  # noqa: E402
from efface.pipeline.build import build_policy, inference_threads_for, load_models  # noqa: E402
from efface.records import BBox, Face, Preset, TransformSpec  # noqa: E402
from efface.transforms import Anonymizer  # noqa: E402
from efface.verify import CoverageAccumulator, HeightBin, read_annotations  # noqa: E402

DEFACE_THRESHOLD = 0.2
# The annotated WIDER FACE sample beside the repository (research use only; never copied into it).
WIDER_DEV = ROOT.parent / "shared" / "data" / "wider-dev"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


SUBSETS = ("easy", "medium", "hard")


def load_sets(args: argparse.Namespace) -> dict[str, list]:
    if args.difficulty is None:
        return {"all": read_annotations(args.annotations, images_root=args.images)}
    return {
        subset: read_annotations(
            args.annotations, images_root=args.images, subset=subset, difficulty_file=args.difficulty
        )
        for subset in SUBSETS
    }


def score(
    sets: dict[str, list],
    detections: dict[Path, tuple[Face, ...]],
    threshold: float,
    anonymizer: Anonymizer,
    sizes: dict[Path, tuple[int, int]],
) -> dict[str, object]:
    reports = {}
    for subset, images in sets.items():
        accumulator = CoverageAccumulator(threshold)
        for image in images:
            found = detections[image.path]
            operating = tuple(face for face in found if face.score >= threshold)
            height, width = sizes[image.path]
            accumulator.add(image, found, anonymizer.region_mask(height, width, operating))
        reports[subset] = accumulator.report()
    return reports


def deface_detections(paths: list[Path], work: Path) -> tuple[dict[Path, tuple[Face, ...]], float]:
    listing = work / "images.txt"
    listing.write_text("\n".join(map(str, paths)))
    out = work / "deface.json"
    # Detections down to 0.05 (for the AP curve); its operating threshold 0.2 is applied when scoring.
    subprocess.run(
        [str(deface_python()), str(ROOT / "bench" / "deface_detect.py"), str(listing), str(out), "0.05"], check=True
    )
    data = json.loads(out.read_text())
    detections = {
        Path(path): tuple(
            sorted(
                (
                    Face(BBox(*row[:4]), min(max(row[4], 0.0), 1.0))
                    for row in rows
                    if row[2] > row[0] and row[3] > row[1]
                ),
                key=lambda face: -face.score,
            )
        )
        for path, rows in data["detections"].items()
    }
    return detections, data["detect_s"] / max(len(paths), 1)


def efface_detections(paths: list[Path], preset: Preset, precision: str = "fp32"):
    settings = load_settings(db_url="sqlite://", preset=preset, precision=precision)
    policy = build_policy(settings)
    detector = load_models(settings, inference_threads=inference_threads_for(1)).detector(policy.detection)
    detections, sizes, detect_s = {}, {}, 0.0
    for path in paths:
        pixels = decode_image(path.read_bytes(), path=path, options=CodecOptions()).pixels
        sizes[path] = pixels.shape[:2]
        t0 = time.perf_counter()
        detections[path] = detector.detect_all(pixels)
        detect_s += time.perf_counter() - t0
    inference = []
    for path in paths[:20]:
        pixels = decode_image(path.read_bytes(), path=path, options=CodecOptions()).pixels
        t0 = time.perf_counter()
        detector.base.detect_raw(pixels, input_scale=1.0)
        inference.append(time.perf_counter() - t0)
    return detector, policy, detections, sizes, detect_s / len(paths), float(np.median(inference))


def cli_images_per_s(command: list[str], source: list[Path], work: Path) -> float:
    folder = work / "cli"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    copies = []
    for index, path in enumerate(source):
        copy = folder / f"{index:04d}{path.suffix}"
        shutil.copyfile(path, copy)
        copies.append(copy)
    t0 = time.perf_counter()
    subprocess.run([*command, *map(str, copies)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return len(copies) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, nargs="?", default=WIDER_DEV / "images")
    parser.add_argument("--annotations", type=Path, default=WIDER_DEV / "wider_face_gt.txt")
    parser.add_argument(
        "--difficulty", type=Path, default=WIDER_DEV / "difficulty.json", help="WIDER difficulty JSON: easy/medium/hard"
    )
    parser.add_argument("--presets", default="fast,balanced,thorough")
    parser.add_argument("--precisions", default="fp32", help="efface's detector precisions, e.g. fp32,int8")
    parser.add_argument("--no-deface", action="store_true", help="leave deface out (efface's figures alone)")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end command-line timing")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sets = load_sets(args)
    main_set = "hard" if "hard" in sets else "all"
    paths = [image.path for image in sets[main_set]]
    region = Anonymizer(TransformSpec(box_scale=1.3))
    rows, figures = [], {}
    deface_ips = None
    with tempfile.TemporaryDirectory(prefix="efface-bench-") as scratch:
        work = Path(scratch)
        if not args.no_deface:
            deface_found, deface_detect_s = deface_detections(paths, work)
            deface_ips = None if args.no_cli else cli_images_per_s([str(deface_executable())], paths, work)
        sizes = {}
        for preset in [Preset(p) for p in args.presets.split(",")]:
            for precision in args.precisions.split(","):
                name = f"efface {preset.value}" + ("" if args.precisions == "fp32" else f" {precision}")
                detector, policy, found, sizes, detect_s, inference_s = efface_detections(paths, preset, precision)
                threshold = detector.spec.score_threshold
                reports = score(sets, found, threshold, policy.anonymizer, sizes)
                db = f"sqlite:///{work / 'audit.sqlite3'}"
                command = [str(Path(sys.executable).parent / "efface"), "anonymize", "--preset", preset.value]
                command += ["--precision", precision, "--db", db]
                ips = None if args.no_cli else cli_images_per_s(command, paths, work)
                rows.append((name, threshold, reports, ips, detect_s))
                figures[name] = {
                    "threshold": threshold,
                    "precision": precision,
                    "images_per_s": ips,
                    "detect_s": detect_s,
                    "inference_1x_s": inference_s,
                    **{k: r.as_dict() for k, r in reports.items()},
                }
        if not args.no_deface:
            reports = score(sets, deface_found, DEFACE_THRESHOLD, region, sizes)
            rows.insert(0, (f"deface {DEFACE_VERSION}", DEFACE_THRESHOLD, reports, deface_ips, deface_detect_s))
            figures[f"deface {DEFACE_VERSION}"] = {
                "threshold": DEFACE_THRESHOLD,
                "images_per_s": deface_ips,
                "detect_s": deface_detect_s,
                **{k: r.as_dict() for k, r in reports.items()},
            }
    bins = (HeightBin.ALL, HeightBin.UNDER_20, HeightBin.FROM_20_TO_50, HeightBin.AT_LEAST_20, HeightBin.AT_LEAST_50)
    print(
        f"{len(paths)} images, {sets[main_set] and sum(len(i.counted_faces) for i in sets[main_set])} faces counted "
        f"({main_set} set); recall at each tool's operating threshold, IoU 0.5"
    )
    head = ["tool", "thr"] + [f"R {b.value}" for b in bins] + ["FP/img", "covered"]
    head += [f"AP {s}" for s in sets] + ["img/s", "x deface", "detect s/img"]
    print(" | ".join(head))
    for name, threshold, reports, ips, detect_s in rows:
        main = reports[main_set]
        cells = [name, f"{threshold:g}"] + [_fmt(main.found_by_height[b].share) for b in bins]
        cells += [f"{main.fp_per_image:.2f}", _fmt(main.covered_share)]
        cells += [_fmt(reports[s].ap) for s in sets]
        cells += ["-" if ips is None else f"{ips:.2f}"]
        cells += ["-" if ips is None or deface_ips is None else f"{ips / deface_ips:.2f}", f"{detect_s:.3f}"]
        print(" | ".join(cells))
    for name, data in figures.items():
        if "inference_1x_s" in data:
            print(f"{name}: CenterFace inference alone at 1x (the floor) {data['inference_1x_s']:.3f} s/image")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
