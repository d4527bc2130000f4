"""The ``efface`` command line. It parses, builds settings and objects, calls the pipeline, shows
progress and maps outcomes to exit codes: 0 all files succeeded, 1 any file failed, 2 usage or setup
error (bad option, weak transform, unreachable audit database, missing model).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from efface import __version__
from efface.audit import AuditStore, StoredFile, StoredRun
from efface.audit.chain import ChainReport
from efface.audit.export import ExportFormat, export_records
from efface.audit.keys import ApiKey, ApiKeyStore
from efface.audit.query import AuditTable, RecordFilter, column_types, parse_age, parse_time
from efface.audit.report import build_report, render_html
from efface.audit.summary import ReportScope
from efface.config import Settings, load_settings
from efface.detection.models import Models
from efface.errors import AuditError, EffaceError, OutputError
from efface.pipeline.build import audited_settings, build_policy, inference_threads_for, load_models
from efface.pipeline.core import Policy
from efface.pipeline.jobs import PlanItem, count_jobs_ahead, plan_jobs
from efface.pipeline.pool import Executor, FrameProgress, InProcess, ProcessPool
from efface.pipeline.ray import RayPool
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import (
    AnonymizationResult,
    Device,
    MaskShape,
    Method,
    Outcome,
    Preset,
    RunSummary,
    ValidationKind,
    ValidationRecord,
)
from efface.verify.annotations import AnnotationFormat, WiderSubset, read_annotations
from efface.verify.coverage import CoverageRun, measure_coverage
from efface.verify.metrics import HeightBin
from efface.verify.recognizers import load_recognizers
from efface.verify.strength import Attacker, StrengthReport, measure_strength, standard_treatments, verdict

__all__ = ["app", "main"]

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE = 0, 1, 2


# onnxruntime execution providers per device, in order of preference.
_PROVIDERS = {
    Device.CPU: ("CPUExecutionProvider",),
    Device.CUDA: ("CUDAExecutionProvider", "CPUExecutionProvider"),
}
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
T = TypeVar("T")

app = typer.Typer(
    name="efface",
    help="Anonymize every face in photos: detect, transform irreversibly, keep no original, audit everything.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
audit_app = typer.Typer(help="Read, verify, export, report on and prune the audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
verify_app = typer.Typer(help="Measure what efface finds and how well it anonymizes.", no_args_is_help=True)
app.add_typer(verify_app, name="verify")

stdout = Console()
stderr = Console(stderr=True)
for _console in (stdout, stderr):
    if not _console.is_terminal:  # piped or captured: don't squeeze tables into 80 columns
        _console.width = 160

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: $EFFACE_CONFIG or the user config folder)."),
]
MethodOption = Annotated[Method | None, typer.Option(help="How faces are anonymized. [default: fill]")]
ThresholdOption = Annotated[
    float | None,
    typer.Option(min=0.01, max=0.99, help="Detector score threshold. [default: the preset's, chosen on data]"),
]
PresetOption = Annotated[Preset | None, typer.Option(help="Detection preset: time against recall. [default: balanced]")]
DetectorOption = Annotated[
    list[str] | None,
    typer.Option("--detector", help="Fuse a further ONNX detector: yunet:PATH (repeatable)."),
]
MaskOption = Annotated[MaskShape | None, typer.Option(help="Shape of the region. [default: ellipse]")]
BoxScaleOption = Annotated[float | None, typer.Option(help="Grow each face box by this factor (>= 1). [default: 1.6]")]
BlurKernelOption = Annotated[
    float | None,
    typer.Option(help="Blur kernel width as a fraction of the face width (floor 0.1). [default: 1.5]"),
]
PixelateBlocksOption = Annotated[
    int | None, typer.Option(help="Pixel cells across the face width (at most 10). [default: 6]")
]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Audit database URL: sqlite:///PATH or postgresql+psycopg://... [env: EFFACE_DB_URL]"),
]


def _progress(*, is_quiet: bool) -> Progress:
    """A progress bar on stderr, shown only on a terminal and not with --json."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=is_quiet or not stderr.is_terminal,
    )


def _fail_setup(exc: EffaceError) -> typer.Exit:
    stderr.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=stderr, show_path=False)],
        force=True,
    )


def _load(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config_path=config, **overrides)
    except EffaceError as exc:
        raise _fail_setup(exc) from exc


def _open_store(settings: Settings) -> AuditStore:
    try:
        return AuditStore(settings.db_url)
    except EffaceError as exc:
        raise _fail_setup(exc) from exc


@app.command()
def anonymize(
    paths: Annotated[list[Path], typer.Argument(help="Image and video files and folders (walked recursively).")],
    method: MethodOption = None,
    threshold: ThresholdOption = None,
    preset: PresetOption = None,
    detector: DetectorOption = None,
    db: DbOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write a mirrored tree here and leave the sources untouched."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Detect and audit only; write nothing.")] = False,
    mask: MaskOption = None,
    box_scale: BoxScaleOption = None,
    blur_kernel: BlurKernelOption = None,
    pixelate_blocks: PixelateBlocksOption = None,
    jpeg_quality: Annotated[int | None, typer.Option(min=1, max=100, help="JPEG/WebP quality. [default: 92]")] = None,
    video_codec: Annotated[
        str | None, typer.Option(help="Video encoder, e.g. libx264, libvpx-vp9. [default: H.264 where it fits]")
    ] = None,
    video_crf: Annotated[
        int | None, typer.Option(min=0, max=51, help="Video quality, x264 CRF scale (lower is better). [default: 18]")
    ] = None,
    detect_every: Annotated[
        int | None,
        typer.Option(min=1, max=30, help="Video: detect on every Nth frame, tracking in between. [default: 1]"),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, max=256, help="Files at once, one process each. [default: cores]"),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Re-anonymize files an earlier run already did (default: skip them)."),
    ] = False,
    device: Annotated[
        Device | None,
        typer.Option(
            help="Where the detector runs: cpu, or cuda (an NVIDIA GPU, with onnxruntime-gpu). [default: cpu]"
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run on a Ray cluster: 'auto', a head node's HOST:PORT, or 'local' (a cluster of this machine). "
            "Every node must see the paths.",
        ),
    ] = None,
    config: ConfigOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON line per file instead of tables.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what is done.")] = False,
) -> None:
    """Find every face in PATHS and anonymize it; each file is replaced atomically and audited."""
    _configure_logging(verbose)
    settings = _load(
        config,
        method=method,
        score_threshold=threshold,
        preset=preset,
        extra_detectors=tuple(detector) if detector else None,
        db_url=db,
        mask_shape=mask,
        box_scale=box_scale,
        blur_kernel_fraction=blur_kernel,
        pixelate_blocks=pixelate_blocks,
        jpeg_quality=jpeg_quality,
        video_codec=video_codec,
        video_crf=video_crf,
        detect_every=detect_every,
        workers=jobs,
        providers=_PROVIDERS[device] if device is not None else None,
    )
    try:
        plan = plan_jobs(paths, output_dir=output, dry_run=dry_run)
        # No more processes than files: a single file runs here, with every core for its inference. The walk
        # goes only as far as it takes to find that many files.
        files_ahead, items = count_jobs_ahead(plan.items(), limit=settings.workers)
        processes = max(1, files_ahead)
        policy = build_policy(settings)
        models = load_models(settings, inference_threads=inference_threads_for(processes))
    except EffaceError as exc:
        raise _fail_setup(exc) from exc
    store = _open_store(settings)
    outcomes: Counter[Outcome] = Counter()
    progress = _progress(is_quiet=json_output)

    frame_tasks: dict[Path, TaskID] = {}

    def on_frame(path: Path, done: int, expected: int | None) -> None:
        if path not in frame_tasks:
            frame_tasks[path] = progress.add_task(f"  {escape(path.name)}", total=expected)
        progress.update(frame_tasks[path], completed=done)

    def on_result(result: AnonymizationResult) -> None:
        outcomes[result.outcome] += 1
        progress.advance(task)
        if result.path in frame_tasks:
            progress.remove_task(frame_tasks.pop(result.path))
        if json_output:
            typer.echo(json.dumps(_result_json(result)))  # JSON Lines: one object per file
        elif result.outcome is Outcome.ERROR:
            stderr.print(
                f"[red]error:[/red] {result.path}: {result.error_message} ({result.error_class})",
                highlight=False,
                soft_wrap=True,
            )
        else:
            _print_video(result)

    def walked(items: Iterator[PlanItem]) -> Iterator[PlanItem]:
        # The total is known once the walk ends (a few files before the run does).
        count = 0
        for item in items:
            count += 1
            yield item
        progress.update(task, total=count)

    try:
        with store, progress:
            task = progress.add_task("anonymizing", total=None)
            executors = _executor(
                settings, models, policy, processes=processes, on_frame=on_frame, ray_address=ray_address
            )
            with executors as executor:
                run = AuditedRun.begin(
                    store,
                    command="anonymize",
                    mode=plan.mode,
                    models=models,
                    settings=audited_settings(settings),
                    on_result=on_result,
                )
                with run:
                    run_plan(walked(items), executor=executor, run=run, is_forced=force)
                summary = run.finish()
    except KeyboardInterrupt:
        done = sum(outcomes.values()) - outcomes[Outcome.LEFTOVER_REMOVED]
        stderr.print(
            f"interrupted after {done} file(s); every file is either as it was or anonymized, and all finished "
            "ones are audited. Run the same command again to resume: files already done are skipped.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except EffaceError as exc:  # the audit log failed mid-run: stop, the files done so far are audited
        stderr.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FILES_FAILED) from exc
    if not json_output:
        _print_summary(run.run_id, summary, outcomes)
    raise typer.Exit(EXIT_FILES_FAILED if summary.files_failed else EXIT_OK)


@verify_app.command("coverage")
def verify_coverage(
    images: Annotated[Path, typer.Argument(help="Folder the annotation's image paths are relative to.")],
    annotations: Annotated[
        Path, typer.Option("--annotations", "-a", help="WIDER FACE text, COCO JSON, Pascal VOC XML (file or folder).")
    ],
    annotation_format: Annotated[
        AnnotationFormat | None, typer.Option("--format", help="Annotation format. [default: from the file]")
    ] = None,
    category: Annotated[str, typer.Option(help="COCO/VOC category name or COCO id of faces.")] = "face",
    subset: Annotated[
        WiderSubset | None, typer.Option(help="WIDER difficulty subset to count (needs --difficulty).")
    ] = None,
    difficulty: Annotated[
        Path | None, typer.Option(help="WIDER difficulty JSON: per image, the face indices of each subset.")
    ] = None,
    preset: PresetOption = None,
    threshold: ThresholdOption = None,
    detector: DetectorOption = None,
    mask: MaskOption = None,
    box_scale: BoxScaleOption = None,
    fail_under: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Exit 1 when the recall is below this.")
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Measure detection coverage on an annotated sample, with the settings `anonymize` would use."""
    _configure_logging(False)
    settings = _load(
        config,
        preset=preset,
        score_threshold=threshold,
        extra_detectors=tuple(detector) if detector else None,
        mask_shape=mask,
        box_scale=box_scale,
        db_url=db,
    )
    try:
        policy = build_policy(settings)
        detector = load_models(settings, inference_threads=inference_threads_for(1)).detector(policy.detection)
        sample = read_annotations(
            annotations,
            images_root=images,
            annotation_format=annotation_format,
            category=int(category) if category.isdigit() else category,
            subset=subset,
            difficulty_file=difficulty,
        )
    except EffaceError as exc:
        raise _fail_setup(exc) from exc
    store = _open_store(settings)
    progress = _progress(is_quiet=json_output)
    try:
        with store, progress:
            task = progress.add_task("measuring coverage", total=len(sample))
            run = measure_coverage(sample, detector=detector, policy=policy, on_image=lambda _: progress.advance(task))
            recall = run.report.recall
            passed = None if fail_under is None else (recall is not None and recall >= fail_under)
            record = ValidationRecord(
                validation_id=uuid.uuid4().hex,
                kind=ValidationKind.COVERAGE,
                created_at=datetime.now(UTC),
                efface_version=__version__,
                model_name=detector.name,
                model_sha256=detector.weights_sha256,
                settings=audited_settings(settings),
                dataset={
                    "images_root": str(images.resolve()),
                    "annotations": str(annotations.resolve()),
                    "format": annotation_format.value if annotation_format else None,
                    "category": category,
                    "subset": subset.value if subset else None,
                    "images": len(sample),
                },
                figures=run.as_dict(),
                passed=passed,
                hostname=socket.gethostname(),
            )
            store.record_validation(record)
    except EffaceError as exc:
        stderr.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FILES_FAILED) from exc
    if json_output:
        typer.echo(json.dumps({"validation_id": record.validation_id, "passed": passed, **run.as_dict()}, indent=2))
    else:
        _print_coverage(record.validation_id, run, settings)
    if passed is False:
        stderr.print(f"recall {recall:.3f} is below --fail-under {fail_under}", highlight=False)
        raise typer.Exit(EXIT_FILES_FAILED)


@verify_app.command("strength")
def verify_strength(
    people: Annotated[Path, typer.Argument(help="Identities: PERSON/*.jpg, two or more images each.")],
    distractors: Annotated[
        Path | None, typer.Option(help="Images of further people, enrolled in the gallery only.")
    ] = None,
    method: MethodOption = None,
    blur_kernel: BlurKernelOption = None,
    pixelate_blocks: PixelateBlocksOption = None,
    mask: MaskOption = None,
    box_scale: BoxScaleOption = None,
    recognizer: Annotated[
        list[str] | None, typer.Option("--recognizer", help="dlib and/or facenet. [default: both]")
    ] = None,
    only_configured: Annotated[
        bool, typer.Option("--only-configured", help="Measure the configured setting, clean and fill only.")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Measure whether face recognition still identifies anonymized faces (rank-1, two attackers)."""
    _configure_logging(False)
    settings = _load(
        config,
        method=method,
        blur_kernel_fraction=blur_kernel,
        pixelate_blocks=pixelate_blocks,
        mask_shape=mask,
        box_scale=box_scale,
        db_url=db,
    )
    try:
        policy = build_policy(settings)  # refuses a setting below the floor: it cannot be certified
        detector = load_models(settings, inference_threads=inference_threads_for(1)).detector(policy.detection)
        recognizers = load_recognizers(tuple(recognizer) if recognizer else ("dlib", "facenet"))
    except EffaceError as exc:
        raise _fail_setup(exc) from exc
    treatments = standard_treatments(settings.transform_spec())
    if only_configured:
        treatments = [t for t in treatments if t.spec is None or t.is_configured or t.label == "solid fill"]
    store = _open_store(settings)
    try:
        with store, stderr.status("measuring re-identification") as status:
            report = measure_strength(
                people,
                detector=detector,
                codec=policy.codec,
                treatments=treatments,
                recognizers=recognizers,
                distractors_dir=distractors,
                on_step=lambda text: status.update(f"measuring re-identification: {text}"),
            )
            passed, reasons = verdict(report)
            record = ValidationRecord(
                validation_id=uuid.uuid4().hex,
                kind=ValidationKind.STRENGTH,
                created_at=datetime.now(UTC),
                efface_version=__version__,
                model_name=detector.name,
                model_sha256=detector.weights_sha256,
                settings={**audited_settings(settings), "recognizers": [r.name for r in recognizers]},
                dataset={
                    "people": str(people.resolve()),
                    "distractors": str(distractors.resolve()) if distractors else None,
                    "identities": report.identities,
                    "probes": report.probes,
                    "gallery_size": report.gallery_size,
                },
                figures={**report.as_dict(), "reasons": reasons},
                passed=passed,
                hostname=socket.gethostname(),
            )
            store.record_validation(record)
    except EffaceError as exc:
        stderr.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FILES_FAILED) from exc
    if json_output:
        typer.echo(
            json.dumps(
                {"validation_id": record.validation_id, "passed": passed, "reasons": reasons, **report.as_dict()},
                indent=2,
            )
        )
    else:
        _print_strength(record.validation_id, report, recognizers)
    if passed:
        stderr.print("[green]verified:[/green] the configured setting leaks no more identity than a solid fill")
    else:
        stderr.print("[bold red]NOT VERIFIED:[/bold red] the configured setting did not pass; it is recorded so")
        for reason in reasons:
            stderr.print(f"  - {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FILES_FAILED)


def _print_strength(validation_id: str, report: StrengthReport, recognizers: list) -> None:
    table = Table(
        title=f"rank-1 identification ({report.identities} people, {report.probes} probes, gallery "
        f"{report.gallery_size}), validation {validation_id[:12]}",
        header_style="bold",
    )
    table.add_column("treatment")
    columns = [(r.name, attacker) for r in recognizers for attacker in (Attacker.NAIVE, Attacker.INFORMED)]
    for name, attacker in columns:
        table.add_column(f"{name} {attacker.value}", justify="right")
    configured = {row.treatment for row in report.rows if row.is_configured}
    for label in dict.fromkeys(row.treatment for row in report.rows):
        cells = []
        for name, attacker in columns:
            try:
                value = report.rank1(label, name, attacker)
            except KeyError:
                value = report.rank1(label, name, None) if attacker is Attacker.NAIVE else None
            cells.append("-" if value is None else f"{value:.3f}")
        table.add_row(escape(label + (" (configured)" if label in configured else "")), *cells)
    table.add_row("chance", *[f"{report.chance:.3f}"] * len(columns))
    stdout.print(table)
    for row in report.rows:
        if (row.is_configured or row.treatment == "solid fill") and row.rank1_per_identity is not None:
            stdout.print(
                f"{'configured' if row.is_configured else 'solid fill'}, {row.recognizer} "
                f"{row.attacker.value if row.attacker else ''}: rank-1 averaged per identity "
                f"{row.rank1_per_identity:.3f} (chance {report.chance:.3f})",
                highlight=False,
            )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_coverage(validation_id: str, run: CoverageRun, settings: Settings) -> None:
    report = run.report
    title = (
        f"coverage ({settings.preset.value} preset, threshold {report.score_threshold:g}), "
        f"validation {validation_id[:12]}"
    )
    table = Table(title=title, header_style="bold")
    for column in ("face height", "faces", "found", "recall", "covered >= 70 %", "mean covered"):
        table.add_column(column, justify="right")
    for height_bin in HeightBin:
        found = report.found_by_height[height_bin]
        covered = report.covered_by_height[height_bin]
        table.add_row(
            height_bin.value,
            str(found.total),
            str(found.found),
            _share(found.share),
            _share(covered.share),
            _share(covered.mean_fraction),
        )
    stdout.print(table)
    stdout.print(
        f"images {report.images}, ignored faces {report.ignored_faces}, false positives per image "
        f"{report.fp_per_image:.2f}, AP (WIDER protocol, IoU 0.5) {_share(report.ap)}, "
        f"{run.images_per_s:.2f} images/s (detection {run.detection_s / max(report.images, 1):.3f} s/image), "
        f"anonymized pixels outside any annotated face {_share(report.over_redaction_share)}"
    )


def _result_json(result: AnonymizationResult) -> dict[str, object]:
    return {
        "path": str(result.path),
        "outcome": result.outcome.value,
        "mode": result.mode.value,
        "output_path": str(result.output_path) if result.output_path else None,
        "faces_detected": result.faces_detected,
        "faces_anonymized": result.faces_anonymized,
        "faces": [{"xyxy": [round(v, 1) for v in f.box.xyxy], "score": round(f.score, 4)} for f in result.faces],
        "output_sha256": result.output_sha256,
        "video": result.video.as_dict() if result.video is not None else None,
        "duration_s": round(result.duration_s, 4),
        "error_class": result.error_class,
        "error_message": result.error_message,
    }


@contextlib.contextmanager
def _executor(
    settings: Settings,
    models: Models,
    policy: Policy,
    *,
    processes: int,
    on_frame: FrameProgress,
    ray_address: str | None,
) -> Iterator[Executor]:
    """A Ray cluster when asked; this process for one job; otherwise a process pool with models of its own
    in each process."""
    executor: Executor
    if ray_address is not None:
        try:
            # One inference thread per actor: Ray gives each actor one CPU, and runs one actor per CPU.
            executor = RayPool(
                functools.partial(load_models, settings, inference_threads=1), policy, address=ray_address
            )
        except EffaceError as exc:
            raise _fail_setup(exc) from exc
    elif processes == 1:
        executor = InProcess(models, policy, on_frame=on_frame)
    else:
        make_models = functools.partial(load_models, settings, inference_threads=inference_threads_for(processes))
        executor = ProcessPool(make_models, policy, processes=processes, on_frame=on_frame)
    try:
        yield executor
    finally:
        executor.close()


def _print_video(result: AnonymizationResult) -> None:
    video = result.video
    if video is None or result.outcome is Outcome.ERROR:
        return
    encoded = f", encoded with {video.encoder} (CRF {video.crf})" if video.encoder else ""
    stdout.print(
        f"video {escape(result.path.name)}: {video.frames} frames, faces covered on {video.frames_with_faces} "
        f"({video.detections} detections, {video.regions - video.detections} boxes carried between frames)"
        f"{encoded}",
        highlight=False,
    )


def _print_summary(run_id: str, summary: RunSummary, counts: Counter[Outcome]) -> None:
    table = Table(title=f"efface run {run_id}", show_header=True, header_style="bold")
    for column in ("files", "anonymized", "no faces", "errors", "faces found", "faces anonymized", "time"):
        table.add_column(column, justify="right")
    table.add_row(
        str(summary.files_total),
        str(counts[Outcome.ANONYMIZED]),
        str(counts[Outcome.NO_FACES]),
        str(summary.files_failed),
        str(summary.faces_detected),
        str(summary.faces_anonymized),
        f"{summary.duration_s:.2f} s",
    )
    stdout.print(table)
    if counts[Outcome.DRY_RUN]:
        stdout.print(f"dry run: {counts[Outcome.DRY_RUN]} file(s) analysed, nothing written")
    if counts[Outcome.LEFTOVER_REMOVED]:
        stdout.print(f"removed {counts[Outcome.LEFTOVER_REMOVED]} temporary file(s) left by an interrupted run")
    if counts[Outcome.SKIPPED]:
        stdout.print(
            f"skipped {counts[Outcome.SKIPPED]} file(s) already anonymized by an earlier run (--force redoes them)"
        )


RunFilterOption = Annotated[
    str | None, typer.Option("--run", help="Only this run: an id, a unique prefix of one, or 'latest'.")
]
SinceOption = Annotated[
    datetime | None,
    typer.Option(
        parser=parse_time,
        metavar="WHEN",
        help="From this time on: a date, a date-time (UTC unless it has an offset) or an age such as 30d.",
    ),
]
UntilOption = Annotated[
    datetime | None, typer.Option(parser=parse_time, metavar="WHEN", help="Before this time (same forms as --since).")
]
OutcomeOption = Annotated[
    list[Outcome] | None, typer.Option("--outcome", help="Only files with this outcome (repeatable).")
]
PathGlobOption = Annotated[
    str | None, typer.Option("--path", metavar="GLOB", help="Only files whose whole path matches: * ? [...].")
]


def _record_filter(
    store: AuditStore,
    *,
    run: str | None,
    since: datetime | None,
    until: datetime | None,
    outcomes: list[Outcome] | None,
    path_glob: str | None,
) -> RecordFilter:
    run_id = _or_exit(lambda: _find_run(store, run).run_id) if run else None
    return RecordFilter(run_id=run_id, since=since, until=until, outcomes=tuple(outcomes or ()), path_glob=path_glob)


@audit_app.command("list")
def audit_list(
    db: DbOption = None,
    limit: Annotated[int, typer.Option(min=1, help="How many rows, newest first.")] = 20,
    show_files: Annotated[bool, typer.Option("--files", help="List files instead of runs.")] = False,
    run: RunFilterOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    outcome: OutcomeOption = None,
    path: PathGlobOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """List recent runs; with --files, --run, --outcome or --path, the files they recorded."""
    settings = _load(config, db_url=db)
    is_files = show_files or bool(run or outcome or path)
    with _open_store(settings) as store:
        record_filter = _record_filter(store, run=run, since=since, until=until, outcomes=outcome, path_glob=path)
        if is_files:
            records: list[StoredRun] | list[StoredFile] = _or_exit(lambda: store.find_files(record_filter, limit=limit))
        else:
            records = _or_exit(lambda: store.list_runs(limit=limit, record_filter=record_filter))
    if json_output:
        typer.echo(json.dumps([_stored_json(record) for record in records], default=str, indent=2))
    elif is_files:
        _print_files(records, title="efface files")  # type: ignore[arg-type]
    else:
        _print_runs(records)  # type: ignore[arg-type]


def _print_runs(runs: list[StoredRun]) -> None:
    table = Table(title="efface runs", header_style="bold")
    for column in ("run", "started (UTC)", "command", "mode", "status", "files", "errors", "faces", "anonymized"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.run_id[:12],
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            run.command,
            str(run.mode),
            str(run.status),
            str(run.files_total),
            str(run.files_failed),
            str(run.faces_detected),
            str(run.faces_anonymized),
        )
    stdout.print(table)


@audit_app.command("show")
def audit_show(
    run_id: Annotated[str, typer.Argument(help="A run id, a unique prefix of one, or 'latest'.")],
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show one run and every file it touched."""
    settings = _load(config, db_url=db)
    with _open_store(settings) as store:
        run = _or_exit(lambda: _find_run(store, run_id))
        files = _or_exit(lambda: store.list_files(run.run_id))
    if json_output:
        document = {"run": _stored_json(run), "files": [_stored_json(f) for f in files]}
        typer.echo(json.dumps(document, default=str, indent=2))
        return
    _print_run(run, files)


def _find_run(store: AuditStore, run_id: str) -> StoredRun:
    if run_id != "latest":
        return store.get_run(run_id)
    runs = store.list_runs(limit=1)
    if not runs:
        raise AuditError("the audit log holds no run yet")
    return runs[0]


def _stored_json(record: StoredRun | StoredFile) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _print_run(run: StoredRun, files: list[StoredFile]) -> None:
    head = Table(show_header=False, title=f"run {run.run_id}")
    head.add_column("field", style="bold")
    head.add_column("value")
    for name in (
        "started_at",
        "finished_at",
        "status",
        "command",
        "mode",
        "efface_version",
        "hostname",
        "model_name",
        "model_sha256",
        "files_total",
        "files_failed",
        "faces_detected",
        "faces_anonymized",
        "duration_s",
    ):
        head.add_row(name, str(getattr(run, name)))
    head.add_row("settings", json.dumps(run.settings, sort_keys=True))
    stdout.print(head)
    _print_files(files, title="files")


def _print_files(files: list[StoredFile], *, title: str) -> None:
    table = Table(title=title, header_style="bold")
    for column in (
        "run",
        "path",
        "outcome",
        "faces",
        "anonymized",
        "format",
        "size",
        "time (s)",
        "output sha256",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for row in files:
        table.add_row(
            row.run_id[:12],
            escape(str(row.path)),
            str(row.outcome),
            str(row.faces_detected),
            str(row.faces_anonymized),
            row.image_format or "",
            f"{row.width}x{row.height}" if row.width else "",
            f"{row.duration_s:.3f}",
            (row.output_sha256 or "")[:16],
            escape(f"{row.error_class}: {row.error_message}") if row.error_class else "",
        )
    stdout.print(table)


@audit_app.command("export")
def audit_export(
    export_format: Annotated[ExportFormat, typer.Option("--format", help="csv, jsonl or parquet.")],
    out: Annotated[Path | None, typer.Option("--out", help="The file to write. [default: standard output]")] = None,
    table: Annotated[AuditTable, typer.Option("--table", help="What to export.")] = AuditTable.FILES,
    run: RunFilterOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    outcome: OutcomeOption = None,
    path: PathGlobOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Export audit rows, streamed (memory stays constant for millions of rows), oldest first."""
    settings = _load(config, db_url=db)
    with _open_store(settings) as store:
        record_filter = _record_filter(store, run=run, since=since, until=until, outcomes=outcome, path_glob=path)
        try:
            records = store.iter_records(table, record_filter)
            rows = export_records(records, column_types(table), export_format, out=out)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        except EffaceError as exc:
            raise _fail_setup(exc) from exc
    stderr.print(f"exported {rows:,} {table.value} rows" + (f" to {escape(str(out))}" if out else ""), highlight=False)


@audit_app.command("verify")
def audit_verify(
    expect: Annotated[
        list[str] | None,
        typer.Option("--expect", metavar="HASH", help="A head hash noted earlier that must still be in the chain."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Walk the hash chain: exit 0 when every row is intact, 1 naming the first altered, deleted or inserted row.

    Set EFFACE_AUDIT_KEY to the key the log was written with to check keyed rows.
    """
    settings = _load(config, db_url=db)
    with _open_store(settings) as store:
        report = _or_exit(lambda: store.verify(expected_hashes=expect or ()))
    if json_output:
        document = {name: getattr(report, name) for name in report.__dataclass_fields__}
        document["is_intact"] = report.is_intact
        document["breaks"] = [{n: getattr(b, n) for n in b.__dataclass_fields__} for b in report.breaks]
        typer.echo(json.dumps(document, default=str, indent=2))
    else:
        _print_chain(report)
    if not report.is_intact:
        raise typer.Exit(EXIT_FILES_FAILED)


def _print_chain(report: ChainReport) -> None:
    keyed = f"{report.keyed_rows:,} keyed" if report.keyed_rows else "not keyed"
    summary = (
        f"{report.rows:,} chain rows ({keyed}), {report.records_checked:,} records checked, {report.prunes} prunes; "
        f"head {report.head_seq} {report.head_hash}"
    )
    if report.is_intact:
        stdout.print(f"[green]chain intact:[/green] {summary}", highlight=False, soft_wrap=True)
        return
    first = report.first_break
    stderr.print(
        f"[bold red]chain BROKEN:[/bold red] {report.breaks_total:,} findings; the first: "
        f"{escape(first.message if first else '?')}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title=summary, header_style="bold")
    for column in ("finding", "table", "row", "chain row", "what"):
        table.add_column(column, overflow="fold")
    for found in report.breaks[:20]:
        table.add_row(found.kind.value, found.table, found.row_id, str(found.seq or "-"), escape(found.message))
    stdout.print(table)


@audit_app.command("prune")
def audit_prune(
    older_than: Annotated[
        timedelta, typer.Option("--older-than", parser=parse_age, metavar="AGE", help="e.g. 365d, 52w or 48h.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be removed; remove nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    even_if_broken: Annotated[
        bool, typer.Option("--even-if-broken", help="Prune even when the chain does not verify.")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove runs (with their files) and validations older than AGE; the prune is itself a chain event."""
    settings = _load(config, db_url=db)
    cutoff = datetime.now(UTC) - older_than
    with _open_store(settings) as store:
        if not even_if_broken:
            report = _or_exit(store.verify)
            if not report.is_intact:
                _print_chain(report)
                stderr.print("refusing to prune a log that does not verify (--even-if-broken overrides)")
                raise typer.Exit(EXIT_FILES_FAILED)
        planned = _or_exit(lambda: store.prune(older_than=cutoff, is_dry_run=True))
        what = (
            f"{planned.runs:,} runs, {planned.files:,} files and {planned.validations:,} validations "
            f"older than {cutoff:%Y-%m-%d %H:%M} UTC"
        )
        if dry_run:
            stdout.print(f"would remove {what}", highlight=False)
            return
        if not yes and not typer.confirm(f"Remove {what}?"):
            raise typer.Exit(EXIT_FILES_FAILED)
        done = _or_exit(lambda: store.prune(older_than=cutoff))
    stdout.print(
        f"removed {done.runs:,} runs, {done.files:,} files and {done.validations:,} validations; recorded as chain "
        f"row {done.seq} ({done.chain_rows:,} chain rows marked pruned)",
        highlight=False,
    )


@audit_app.command("report")
def audit_report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    run: Annotated[
        str | None, typer.Option("--run", help="Report on this run only (an id, a prefix, or 'latest').")
    ] = None,
    since: SinceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a self-contained HTML report for a data-protection officer: what was processed, settings and model,
    totals and errors, the latest validations, plots, the chain's status and the checklist with its evidence.
    """
    if run and since:
        raise typer.BadParameter("give --run or --since, not both")
    settings = _load(config, db_url=db)
    with _open_store(settings) as store:
        scope = ReportScope(run_id=_or_exit(lambda: _find_run(store, run).run_id) if run else None, since=since)
        data = _or_exit(lambda: build_report(store, scope, efface_version=__version__))
    page = _or_exit(lambda: render_html(data))
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise _fail_setup(OutputError(f"cannot write the report: {exc.strerror or exc}", path=out)) from exc
    stdout.print(f"report written to {escape(str(out))}", highlight=False)
    for item in data.checklist:
        stdout.print(f"  {item.status.value:>8}  {item.title}", highlight=False)


def _or_exit(call: Callable[[], T]) -> T:
    try:
        return call()
    except EffaceError as exc:
        raise _fail_setup(exc) from exc


keys_app = typer.Typer(
    help="Manage the API keys of the HTTP service (stored hashed in the audit database).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="Images processed at once (threads sharing one model). [default: cores]"),
    ] = None,
    queue: Annotated[
        int, typer.Option(min=0, help="Further requests that may wait for a worker; beyond that, 503.")
    ] = 64,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest image accepted, in MiB.")] = 25.0,
    max_pixels: Annotated[
        int | None, typer.Option(min=1, help="Most pixels an image may have. [default: 50 million]")
    ] = None,
    rate_limit: Annotated[
        int, typer.Option(min=1, help="Requests per minute per API key, for keys that set none.")
    ] = 600,
    request_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request may wait for and take in processing.")
    ] = 60.0,
    method: MethodOption = None,
    preset: PresetOption = None,
    threshold: ThresholdOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what is done.")] = False,
) -> None:
    """Serve the HTTP API (POST /v1/anonymize, /v1/detect) until Ctrl-C; every request is audited."""
    # Imported here: FastAPI and uvicorn would slow down the start of every other command.
    from efface.service import ServiceLimits, create_app
    from efface.service.limits import DEFAULT_SERVICE_MAX_PIXELS
    from efface.service.server import serve as run_server

    _configure_logging(verbose)
    settings = _load(config, method=method, preset=preset, score_threshold=threshold, db_url=db, workers=workers)
    try:
        limits = ServiceLimits(
            max_upload_bytes=round(max_upload_mb * 1024 * 1024),
            max_image_pixels=max_pixels or min(settings.max_image_pixels, DEFAULT_SERVICE_MAX_PIXELS),
            workers=settings.workers,
            queue_size=queue,
            rate_limit_per_min=rate_limit,
            request_timeout_s=request_timeout,
        )
    except ValueError as exc:
        stderr.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from exc
    try:  # refuse a weak transform, a missing model or an unreachable database before listening
        build_policy(settings)
        AuditStore(settings.db_url).close()
    except EffaceError as exc:
        raise _fail_setup(exc) from exc
    service_app = create_app(settings, limits=limits)
    if not run_server(service_app, host=host, port=port, max_connections=limits.max_connections):
        raise typer.Exit(EXIT_USAGE)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    rate_limit: Annotated[
        int | None, typer.Option(min=1, help="Requests per minute. [default: the server's --rate-limit]")
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it (on stdout, alone); it is stored hashed and cannot be shown again."""
    settings = _load(config, db_url=db)
    with _open_store(settings) as store:
        try:
            issued = ApiKeyStore(store).create(name, rate_limit_per_min=rate_limit)
        except ValueError as exc:
            stderr.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from exc
        except EffaceError as exc:
            raise _fail_setup(exc) from exc
    stderr.print(f"created key {issued.key.key_id} for {issued.key.name!r}; store it now, it is not shown again")
    typer.echo(issued.value)


@keys_app.command("list")
def keys_list(
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """List the keys (ids and names only; the keys themselves are not stored)."""
    settings = _load(config, db_url=db)
    with _open_store(settings) as store:
        keys = _or_exit(ApiKeyStore(store).list_keys)
    if json_output:
        typer.echo(json.dumps([_key_json(key) for key in keys], indent=2))
        return
    table = Table(title="API keys", header_style="bold")
    for column in ("key id", "name", "created (UTC)", "revoked (UTC)", "requests/min"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.key_id,
            escape(key.name),
            key.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else "",
            str(key.rate_limit_per_min) if key.rate_limit_per_min else "server default",
        )
    stdout.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (the part after 'eff_').")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key: a running server refuses it from its next request."""
    settings = _load(config, db_url=db)
    with _open_store(settings) as store:
        key = _or_exit(lambda: ApiKeyStore(store).revoke(key_id))
    stderr.print(f"revoked key {key.key_id} ({key.name!r}) at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC", highlight=False)


def _key_json(key: ApiKey) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "rate_limit_per_min": key.rate_limit_per_min,
    }


def main() -> None:
    """Console-script entry point."""
    app()
