"""Speed, memory and detection quality of efface beside deface: same photos, same video, one run.

Run by hand (not a test), from the repository root:

    .venv/bin/python bench/speed.py [--photos DIR] [--limit 40] [--video PATH] [--runs 3]

Speed: each tool runs from its command line, as a user runs it, on a fresh copy of the same photos (in
place) and of the same video; start-up, decoding, detection, anonymization, encoding and writing are all
included. efface runs at its defaults (default preset, audit to a new SQLite file) once per precision
(``--precisions``, fp32 beside int8), deface 1.5.0 at its defaults in its own virtual environment
(``bench/_deface.py``). Each run takes the tools in a rotated order, so that no tool always runs on a
machine warmed or loaded by another; the figures are the median of ``--runs`` runs, and the ratio to deface
is taken within each run before the median (the machine is shared: a ratio from one run holds, an absolute
time does not). Peak memory: the largest proportional set size of a tool's whole process tree (the CLI and
its pool or encoder processes), sampled every 50 ms from ``/proc`` in one further run of each tool (sampling
slows the sampled process, so the timed runs sample nothing), and the largest peak RSS of any one of its
processes (the kernel's own accounting).

Quality, once per precision (it does not vary between runs): the photos' recall by face height and false
positives per image on the WIDER FACE hard set, from ``bench/coverage.py``'s own scoring of efface's default
preset; the video's covered face-frames and longest flash-through from ``bench/video.py``'s own
ground truth and scoring (its detections cached in ``.bench-cache/``). Both are skipped (``--no-quality``)
when only speed is wanted.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _deface import DEFACE_VERSION, deface_executable  # noqa: E402
from _files import fresh_copies  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclasses.dataclass(frozen=True)
class Measured:
    """One tool's one command: wall seconds, peak tree PSS and largest one-process peak RSS (MiB), items."""

    wall_s: float
    peak_mib: float
    process_peak_mib: float
    items: int

    @property
    def rate(self) -> float:
        return self.items / self.wall_s


def _tree_memory_mib(root: int) -> tuple[float, float]:
    """The summed proportional set size of ``root`` and every descendant, and the largest peak RSS (VmHWM)
    of any one of them, from ``/proc`` (0 once they are gone).

    PSS splits each shared page among the processes that map it, so forked pool processes that share their
    parent's pages are not counted twice (a plain RSS sum would count them once per process).
    """
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended while it was read
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    total_kib, largest_kib, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total_kib += _kib(rollup, "Pss:")
        largest_kib = max(largest_kib, _kib(status, "VmHWM:"))
    return total_kib / 1024, largest_kib / 1024


def _kib(text: str, key: str) -> int:
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith(key)), 0)


def measure(command: Sequence[str], items: int, *, sample_memory: bool = False) -> Measured:
    """Runs ``command`` to its end: its wall time, the largest peak RSS of one of its processes (from the
    kernel's accounting, ``wait4``), and, with ``sample_memory``, the peak PSS of its process tree.

    Sampling reads every process's ``smaps_rollup`` each 50 ms, which walks its page tables under its memory
    lock: on the video it slowed deface's run by a quarter (46.0 against 36.8 s, seen here). So the timed runs
    sample nothing, and the tree's memory comes from a run of its own.
    """
    with tempfile.TemporaryFile() as stderr:
        t0 = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        peak = largest = 0.0
        while True:  # reaped here, not by Popen, so that the kernel's resource usage comes with the status
            pid, status, usage = os.wait4(child.pid, os.WNOHANG if sample_memory else 0)
            if pid:
                break
            tree, one = _tree_memory_mib(child.pid)
            peak, largest = max(peak, tree), max(largest, one)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace").strip()[-2000:]
            raise SystemExit(f"{command[0]} exited {child.returncode}: {message}")
    # ru_maxrss (KiB): the largest peak RSS of the child and of the descendants it waited for.
    return Measured(wall, peak, max(largest, usage.ru_maxrss / 1024), items)


def _video_frames(video: Path) -> int:
    import av

    with av.open(str(video)) as container:
        return sum(1 for _ in container.demux(video=0) if _.size)


def _efface() -> str:
    return str(Path(sys.executable).parent / "efface")


def efface_precisions(wanted: Sequence[str]) -> list[str]:
    """The precisions asked for that this build of efface offers (an older build has fp32 only)."""
    help_text = subprocess.run([_efface(), "anonymize", "--help"], capture_output=True, text=True, check=True).stdout
    if "--precision" in help_text:
        return list(wanted)
    if "fp32" not in wanted:
        raise SystemExit("this build of efface has no --precision option: it runs fp32 only")
    print("note: this build of efface has no --precision option; efface runs fp32 only")
    return ["fp32"]


Tool = tuple[str, list[str] | None]  # label, efface's extra options (None: deface)


def tools_for(precisions: Sequence[str]) -> list[Tool]:
    """deface, then efface once per precision (the option only where this build has a choice)."""
    tools: list[Tool] = [(f"deface {DEFACE_VERSION}", None)]
    for precision in precisions:
        tools.append((f"efface {precision}", ["--precision", precision] if precisions != ["fp32"] else []))
    return tools


def _rotated(tools: list[Tool], order: int) -> list[Tool]:
    shift = order % len(tools)
    return tools[shift:] + tools[:shift]


def _efface_command(path: Path, work: Path, options: list[str]) -> list[str]:
    db = work / "audit.sqlite3"
    db.unlink(missing_ok=True)  # a new audit log each time: no run resumes another
    return [_efface(), "anonymize", str(path), "--db", f"sqlite:///{db}", *options]


def photo_run(
    images: list[Path], tools: list[Tool], work: Path, order: int, *, sample_memory: bool = False
) -> dict[str, Measured]:
    results = {}
    for label, options in _rotated(tools, order):
        folder = work / "photos"
        copies = fresh_copies(images, folder)
        if options is None:
            command = [str(deface_executable()), *map(str, copies)]
        else:
            command = _efface_command(folder, work, options)
        results[label] = measure(command, len(copies), sample_memory=sample_memory)
    return results


def video_run(
    video: Path, frames: int, tools: list[Tool], work: Path, order: int, *, sample_memory: bool = False
) -> dict[str, Measured]:
    results = {}
    for label, options in _rotated(tools, order):
        folder = work / "video"
        (copy,) = fresh_copies([video], folder)
        if options is None:
            command = [str(deface_executable()), str(copy), "-o", str(folder / f"deface{video.suffix}")]
        else:
            command = _efface_command(copy, work, options)
        results[label] = measure(command, frames, sample_memory=sample_memory)
    return results


def _load_bench(name: str) -> ModuleType:
    """A sibling bench script as a module (``coverage`` would clash with the coverage package)."""
    spec = importlib.util.spec_from_file_location(f"efface_bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def photo_quality(args: argparse.Namespace, precisions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per precision: recall by height, FP/img and covered share of the default preset on the hard set."""
    coverage = _load_bench("coverage")
    from efface.detection.presets import DEFAULT_PRESET
    from efface.records import TransformSpec
    from efface.transforms import Anonymizer
    from efface.verify.metrics import HeightBin

    sets = coverage.load_sets(
        argparse.Namespace(images=args.annotated, annotations=args.annotations, difficulty=args.difficulty)
    )
    main_set = "hard" if "hard" in sets else "all"
    paths = [image.path for image in sets[main_set]]
    figures = {}
    for precision in precisions:
        kwargs = {} if list(precisions) == ["fp32"] else {"precision": precision}
        detector, policy, found, sizes, _detect_s, _inference_s = coverage.efface_detections(
            paths, DEFAULT_PRESET, **kwargs
        )
        reports = coverage.score(sets, found, detector.spec.score_threshold, policy.anonymizer, sizes)
        main = reports[main_set]
        figures[f"efface {precision}"] = {
            **{f"R {b.value}": main.found_by_height[b].share for b in HeightBin},
            "FP/img": main.fp_per_image,
            "covered": main.covered_share,
        }
    deface_found, _ = coverage.deface_detections(paths, Path(tempfile.mkdtemp(prefix="efface-bench-")))
    region = Anonymizer(TransformSpec(box_scale=1.3))
    reports = coverage.score(sets, deface_found, coverage.DEFACE_THRESHOLD, region, sizes)
    main = reports[main_set]
    figures[f"deface {DEFACE_VERSION}"] = {
        **{f"R {b.value}": main.found_by_height[b].share for b in HeightBin},
        "FP/img": main.fp_per_image,
        "covered": main.covered_share,
    }
    return figures


def video_quality(video: Path, precisions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per precision: the default settings' covered face-frames, longest flash-through and faces never covered
    on the clip, against ``bench/video.py``'s ground truth (its detections cached in ``.bench-cache/``)."""
    bench_video = _load_bench("video")
    from efface.config import load_settings

    frames = bench_video.decode(video)
    hw = frames[0].shape[:2]
    sha256 = bench_video.file_sha256(video)
    cache = bench_video.CACHE
    tracks = bench_video.thorough_tracks(frames, video_sha256=sha256, cache=cache)
    rows = {}
    for precision in precisions:
        kwargs = {} if list(precisions) == ["fp32"] else {"precision": precision}
        settings = load_settings(db_url="sqlite://", **kwargs)
        rows[f"efface {precision}"] = bench_video.configured_coverage(
            frames, settings, tracks, video_sha256=sha256, cache=cache
        )
    with tempfile.TemporaryDirectory(prefix="efface-bench-") as scratch:
        rows[f"deface {DEFACE_VERSION}"] = bench_video.deface_coverage(
            video, tracks, hw, Path(scratch), video_sha256=sha256, cache=cache
        )
    return {
        label: {
            "covered": row.covered,
            "flash-through": row.flash_through,
            "never covered": row.missed_faces,
        }
        for label, row in rows.items()
    }


def _print_quality(title: str, quality: dict[str, dict[str, float]]) -> None:
    print(title)
    keys = list(next(iter(quality.values())))
    print("tool | " + " | ".join(keys))
    for label, row in quality.items():
        print(f"{label} | " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else f"{row[k]}" for k in keys))


def _median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(
    runs: list[dict[str, Measured]], memory: dict[str, Measured], baseline: str
) -> dict[str, dict[str, float]]:
    """Median rate and median per-run ratio to the baseline over the timed ``runs``; the peak tree PSS of
    the ``memory`` run; the largest one-process peak RSS of them all."""
    summary = {}
    for label in runs[0]:
        summary[label] = {
            "rate": _median([run[label].rate for run in runs]),
            "ratio": _median([run[label].rate / run[baseline].rate for run in runs]),
            "peak_mib": memory[label].peak_mib,
            "process_peak_mib": max(run[label].process_peak_mib for run in (*runs, memory)),
            "ratios": [round(run[label].rate / run[baseline].rate, 3) for run in runs],
        }
    return summary


def _print_speed(title: str, unit: str, summary: dict[str, dict[str, float]]) -> None:
    print(title)
    print(
        f"tool | {unit} (median) | x deface (median of per-run ratios) | per-run ratios"
        " | peak PSS MiB (tree) | peak RSS MiB (one process)"
    )
    for label, row in summary.items():
        ratios = ", ".join(f"{r:.2f}" for r in row["ratios"])  # type: ignore[attr-defined]
        memory = f"{row['peak_mib']:.0f} | {row['process_peak_mib']:.0f}"
        print(f"{label} | {row['rate']:.2f} | {row['ratio']:.2f} | {ratios} | {memory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=SHARED / "wider-dev" / "images", help="walked recursively")
    parser.add_argument("--limit", type=int, default=40, help="photos to time")
    parser.add_argument("--video", type=Path, default=SHARED / "video" / "crowd_1080p.mp4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,int8", help="efface's inference precisions, comma-separated")
    parser.add_argument("--annotated", type=Path, default=SHARED / "wider-dev" / "images", help="for recall")
    parser.add_argument("--annotations", type=Path, default=SHARED / "wider-dev" / "wider_face_gt.txt")
    parser.add_argument("--difficulty", type=Path, default=SHARED / "wider-dev" / "difficulty.json")
    parser.add_argument("--no-quality", action="store_true", help="speed and memory only")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    offered = efface_precisions(args.precisions.split(","))
    tools = tools_for(offered)
    images = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not images:
        raise SystemExit(f"no photos under {args.photos}")
    baseline = f"deface {DEFACE_VERSION}"
    figures: dict[str, object] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="efface-bench-speed-") as scratch:
        work = Path(scratch)
        photo_runs, video_runs = [], []
        frames = 0 if args.no_video else _video_frames(args.video)
        for order in range(args.runs):
            photo_runs.append(photo_run(images, tools, work, order))
            if not args.no_video:
                video_runs.append(video_run(args.video, frames, tools, work, order))
        # The tree's memory, sampled, from one more run each (sampling slows what it samples).
        photo_memory = photo_run(images, tools, work, 0, sample_memory=True)
        video_memory = {} if args.no_video else video_run(args.video, frames, tools, work, 0, sample_memory=True)
    figures["load_after"] = os.getloadavg()
    figures["photos"] = summarize(photo_runs, photo_memory, baseline)
    _print_speed(
        f"{len(images)} photos from {args.photos}, {args.runs} runs; whole command lines, start-up included",
        "images/s",
        figures["photos"],  # type: ignore[arg-type]
    )
    if video_runs:
        figures["video"] = summarize(video_runs, video_memory, baseline)
        _print_speed(f"{args.video.name}: {frames} frames, {args.runs} runs", "fps", figures["video"])  # type: ignore[arg-type]
    if not args.no_quality:
        figures["recall"] = photo_quality(args, offered)
        _print_quality("recall on the WIDER hard set (default preset; deface at its defaults)", figures["recall"])  # type: ignore[arg-type]
        if not args.no_video:
            figures["video coverage"] = video_quality(args.video, offered)
            _print_quality(
                f"{args.video.name}: face-frames covered, longest flash-through (frames), faces never covered"
                " (efface at its video defaults; deface per frame)",
                figures["video coverage"],  # type: ignore[arg-type]
            )
    print(f"load average before {figures['load_before']}, after {figures['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=dataclasses.asdict))


if __name__ == "__main__":
    main()
