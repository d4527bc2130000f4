"""Per-image time on a 1024 px photo: efface beside deface, same machine, same run, as a ratio.

Run by hand (not a test): ``make bench`` or ``.venv/bin/python bench/image_latency.py [--copies N]``.
deface is installed into its own virtual environment (``.bench-venvs/deface``) on first use.

Both tools are timed as a user runs them, from the command line, on one folder of N copies of the same
photo, and on a single copy; the per-image time is ``(T(N) - T(1)) / (N - 1)``, so interpreter start-up
and model loading cancel out. efface's in-process time per image (decode, detect, anonymize, encode,
atomic replace) and the model's own inference time are printed beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "bench"))

from _deface import deface_executable  # noqa: E402
from make_sample import group_photo  # noqa: E402


def make_photo(path: Path) -> None:
    """A 1024x576 JPEG with five faces of several sizes."""
    group_photo().resize((1024, 576), Image.Resampling.LANCZOS).save(path, quality=92)


def fill_folder(folder: Path, photo: Path, copies: int) -> list[Path]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = [folder / f"photo_{i:03d}.jpg" for i in range(copies)]
    for path in paths:
        shutil.copyfile(photo, path)
    return paths


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def per_image_cli(make_command, work: Path, photo: Path, copies: int, repeats: int) -> tuple[float, float]:
    """Median (T(N) - T(1)) / (N - 1) and median T(1) over ``repeats`` runs."""
    per_image, single = [], []
    for _ in range(repeats):
        one = timed(make_command(fill_folder(work / "one", photo, 1)))
        many = timed(make_command(fill_folder(work / "many", photo, copies)))
        per_image.append((many - one) / (copies - 1))
        single.append(one)
    return statistics.median(per_image), statistics.median(single)


def efface_in_process(photo: Path, work: Path, copies: int) -> tuple[float, float, int]:
    from efface.config import load_settings
    from efface.pipeline import FileJob, anonymize_file
    from efface.pipeline.build import build_policy, inference_threads_for, load_models

    settings = load_settings(db_url="sqlite://")
    models, policy = load_models(settings, inference_threads=inference_threads_for(1)), build_policy(settings)
    detector = models.detector(policy.detection)
    paths = fill_folder(work / "inproc", photo, copies)
    anonymize_file(FileJob(paths[0], paths[0]), models=models, policy=policy)  # warm-up
    times, faces = [], 0
    for path in paths[1:]:
        t0 = time.perf_counter()
        result = anonymize_file(FileJob(path, path), models=models, policy=policy)
        times.append(time.perf_counter() - t0)
        faces = result.faces_detected
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    detection, inference = [], []
    for _ in range(copies):
        t0 = time.perf_counter()
        detector.detect(pixels)
        detection.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        detector.base.detect_raw(pixels, input_scale=1.0)
        inference.append(time.perf_counter() - t0)
    return statistics.median(times), statistics.median(detection), statistics.median(inference), faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="photos per timed folder (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tool; the median is kept")
    args = parser.parse_args()
    deface = deface_executable()
    efface = Path(sys.executable).parent / "efface"
    with tempfile.TemporaryDirectory(prefix="efface-bench-") as scratch:
        work = Path(scratch)
        photo = work / "photo.jpg"
        make_photo(photo)
        db = f"sqlite:///{work / 'audit.sqlite3'}"
        efface_cli, efface_one = per_image_cli(
            lambda paths: [str(efface), "anonymize", str(paths[0].parent), "--db", db],
            work,
            photo,
            args.copies,
            args.repeats,
        )
        deface_cli, deface_one = per_image_cli(
            lambda paths: [str(deface), *map(str, paths)], work, photo, args.copies, args.repeats
        )
        in_process, detection, inference, faces = efface_in_process(photo, work, args.copies)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {platform.system()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"photo: 1024x576 JPEG, {faces} faces (efface defaults); {args.copies} copies, median of {args.repeats} runs")
    print(f"{'':34}{'efface':>10}{'deface':>10}{'ratio':>8}")
    print(f"{'per image, CLI (s)':34}{efface_cli:10.3f}{deface_cli:10.3f}{deface_cli / efface_cli:7.2f}x")
    print(f"{'one-file run incl. start-up (s)':34}{efface_one:10.3f}{deface_one:10.3f}{deface_one / efface_one:7.2f}x")
    print(f"{'efface per image, in process (s)':34}{in_process:10.3f}")
    print(f"{'efface detection, default preset (s)':34}{detection:10.3f}")
    print(f"{'CenterFace at 1x alone, the floor (s)':34}{inference:10.3f}")
    print("ratio > 1: efface is faster")


if __name__ == "__main__":
    main()
