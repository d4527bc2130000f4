"""``efface anonymize``: plan the files, run them on the chosen executor, audit and show every result."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TaskID

from efface.cli._options import (
    EXIT_FILES_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BlurKernelOption,
    BoxScaleOption,
    ConfigOption,
    DbOption,
    DetectorOption,
    DeviceOption,
    FillColorOption,
    MaskOption,
    MethodOption,
    PixelateBlocksOption,
    PrecisionOption,
    PresetOption,
    ThresholdOption,
    fail_setup,
    fill_color,
    load,
    open_store,
    or_exit,
    setting_default,
    with_default,
)
from efface.cli._render import (
    configure_logging,
    print_error,
    print_file,
    print_summary,
    print_video,
    progress_bar,
    result_json,
    shown,
    stderr,
    stdout,
)
from efface.errors import EffaceError
from efface.records import AnonymizationResult, Location, Outcome
from efface.text import path_text

if TYPE_CHECKING:
    from efface.pipeline.jobs import PlanItem

__all__ = ["anonymize"]


def anonymize(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Image and video files and folders (walked recursively), or object URLs (s3://bucket/prefix/).",
            metavar="PATH_OR_URL...",
        ),
    ],
    method: MethodOption = None,
    threshold: ThresholdOption = None,
    preset: PresetOption = None,
    detector: DetectorOption = None,
    db: DbOption = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Leave the sources untouched and write here: for one input file, the file to write (e.g. "
            "photo_anonymized.jpg); otherwise a folder that gets a mirrored tree (a name ending in /; an s3:// "
            "prefix for object inputs).",
        ),
    ] = None,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option",
            metavar="KEY=VALUE",
            help="An option of the object store's filesystem (s3fs), e.g. endpoint_url=http://127.0.0.1:9000; "
            "repeatable. Credentials come from the AWS environment and files; options are never audited.",
        ),
    ] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            metavar="NAME",
            help="In Parquet and Arrow tables, a column of pictures (repeatable); every cell of it must be one. "
            "Default: the columns typed as datasets images, and binary columns whose cells are pictures.",
        ),
    ] = None,
    keep_person: Annotated[
        list[Path] | None,
        typer.Option(
            "--keep-person",
            metavar="REF",
            help="Leave this person's faces visible and anonymize everyone else's (a subject access request): a "
            "photo of them, or a folder of photos of them alone; repeat for each person. A face is kept only when "
            "both face recognizers are sure (needs the verify extra).",
        ),
    ] = None,
    only_person: Annotated[
        list[Path] | None,
        typer.Option(
            "--only-person",
            metavar="REF",
            help="Anonymize only this person's faces (an erasure request), with the same references as "
            "--keep-person; a face either recognizer finds close, and every face too small or turned to tell, "
            "is anonymized.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Detect and audit only; write nothing.")] = False,
    fill_colour: FillColorOption = None,
    mask: MaskOption = None,
    box_scale: BoxScaleOption = None,
    blur_kernel: BlurKernelOption = None,
    pixelate_blocks: PixelateBlocksOption = None,
    jpeg_quality: Annotated[
        int | None,
        typer.Option(min=1, max=100, help=with_default("JPEG/WebP quality.", setting_default("jpeg_quality"))),
    ] = None,
    video_codec: Annotated[
        str | None,
        # Settings.video_codec defaults to None, which means this:
        typer.Option(help=with_default("Video encoder, e.g. libx264, libvpx-vp9.", "H.264 where it fits")),
    ] = None,
    video_crf: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=51,
            help=with_default("Video quality, x264 CRF scale (lower is better).", setting_default("video_crf")),
        ),
    ] = None,
    detect_every: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=30,
            help=with_default(
                "Video: detect on every Nth frame, tracking in between.", setting_default("detect_every")
            ),
        ),
    ] = None,
    light_passes: Annotated[
        bool | None,
        typer.Option(
            "--light-passes/--no-light-passes",
            help=with_default(
                "Video: a light half-size pass (large faces) on the frames between detections.",
                setting_default("light_passes"),
            ),
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        # Settings.jobs defaults to the number of cores.
        typer.Option("--jobs", "-j", min=1, max=256, help=with_default("Files at once, one process each.", "cores")),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Re-anonymize files an earlier run already did (default: skip them)."),
    ] = False,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run on a Ray cluster: 'auto', a head node's HOST:PORT, or 'local' (a cluster of this machine). "
            "Every node must see the paths.",
        ),
    ] = None,
    config: ConfigOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON line per file instead of tables.")
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="A line per file (path, outcome, faces) and efface's log; -vv adds the libraries' log.",
        ),
    ] = 0,
) -> None:
    """Find every face in PATHS and anonymize it; each file is replaced atomically and audited."""
    # The pipeline (onnxruntime, OpenCV, Pillow, the audit store) is imported when the command runs, not when
    # the command line is built: ``efface --help`` and the other commands do not pay for it.
    from efface.pipeline.build import (
        audited_settings,
        build_policy,
        build_selection,
        inference_threads_for,
        load_models,
        with_selection,
    )
    from efface.pipeline.executors import fit_processes, open_executor
    from efface.pipeline.objects import WorkFolder
    from efface.pipeline.run import AuditedRun, run_plan
    from efface.pipeline.sources import parse_storage_options, plan_sources

    configure_logging(verbose)
    settings = load(
        config,
        method=method,
        score_threshold=threshold,
        preset=preset,
        extra_detectors=tuple(detector) if detector else None,
        db_url=db,
        mask_shape=mask,
        fill_rgb=fill_color(fill_colour) if fill_colour is not None else None,
        box_scale=box_scale,
        blur_kernel_fraction=blur_kernel,
        pixelate_blocks=pixelate_blocks,
        jpeg_quality=jpeg_quality,
        video_codec=video_codec,
        video_crf=video_crf,
        detect_every=detect_every,
        light_passes=light_passes,
        jobs=jobs,
        device=device,
        precision=precision,
        image_columns=tuple(column) if column else None,
    )
    work = WorkFolder() if any("://" in text and not text.lower().startswith("file://") for text in paths) else None
    try:
        plan = plan_sources(
            paths,
            output=output,
            dry_run=dry_run,
            storage_options=parse_storage_options(storage_option or []),
            work_folder=work.path if work is not None else None,
        )
        processes, items = fit_processes(settings.jobs, plan.items())
        policy = build_policy(settings)
        models = load_models(settings, inference_threads=inference_threads_for(processes))
        selection = build_selection(keep=keep_person or (), only=only_person or (), models=models, policy=policy)
        policy = with_selection(policy, selection)
    except EffaceError as exc:
        if work is not None:
            work.close()
        raise fail_setup(exc) from exc
    store = open_store(settings)
    outcomes: Counter[Outcome] = Counter()
    by_identity: Counter[str] = Counter()  # faces (tracks) kept, anonymized and unrecognized by identity
    uncertain = [0]  # files with something the detector was unsure of
    dry_with_faces = [0]  # dry-run files with a face found
    faces_done = [0]  # faces anonymized so far, for the progress bar
    progress = progress_bar(is_quiet=json_output)

    frame_tasks: dict[Location, TaskID] = {}

    def on_frame(path: Location, done: int, expected: int | None) -> None:
        if path not in frame_tasks:
            frame_tasks[path] = progress.add_task(f"  {shown(path_text(path.name))}", total=expected, unit="frames")
        progress.update(frame_tasks[path], completed=done)

    def on_result(result: AnonymizationResult) -> None:
        outcomes[result.outcome] += 1
        dry_with_faces[0] += result.outcome is Outcome.DRY_RUN and result.faces_detected > 0
        identity = result.details.get("identity")
        if isinstance(identity, dict):
            by_identity.update({key: int(value) for key, value in identity.items() if key != "boxes_kept"})
        if result.uncertainty is not None and result.uncertainty.count and result.outcome is not Outcome.PENDING:
            uncertain[0] += 1
        progress.advance(task)
        faces_done[0] += result.faces_anonymized
        progress.update(task, faces=faces_done[0])
        if result.path in frame_tasks:
            progress.remove_task(frame_tasks.pop(result.path))
        if json_output:  # JSON Lines: one object per file, then the run's summary
            typer.echo(json.dumps({"type": "file", "run_id": run.run_id, **result_json(result)}))
        elif result.outcome is Outcome.ERROR:
            subject = path_text(result.path) if result.path is not None else f"request {result.request_id}"
            print_error(f"{subject}: {result.error_message} ({result.error_class})")
        else:
            if verbose:
                print_file(result)
            print_video(result)

    def walked(items: Iterator[PlanItem]) -> Iterator[PlanItem]:
        # The total is known once the walk ends (a few files before the run does).
        count = 0
        for item in items:
            count += 1
            yield item
        progress.update(task, total=count)

    try:
        with store, progress, work or contextlib.nullcontext():
            task = progress.add_task("anonymizing", total=None, unit="files", faces=0)
            started = or_exit(
                lambda: open_executor(
                    settings,
                    models=models,
                    policy=policy,
                    processes=processes,
                    on_frame=on_frame,
                    ray_address=ray_address,
                )
            )
            with started as executor:
                run = AuditedRun.begin(
                    store,
                    command="anonymize",
                    mode=plan.mode,
                    models=models,
                    settings=audited_settings(settings, identity=selection),
                    on_result=on_result,
                )
                with run:
                    run_plan(walked(items), executor=executor, run=run, is_forced=force)
                summary = run.finish()
    except KeyboardInterrupt:
        done = sum(count for outcome, count in outcomes.items() if outcome.is_counted)
        stderr.print(
            f"interrupted after {done} file(s); every file is either as it was or anonymized, and all finished "
            "ones are audited. Run the same command again to resume: files already done are skipped.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except EffaceError as exc:  # the audit log failed mid-run: stop, the files done so far are audited
        print_error(exc)
        raise typer.Exit(EXIT_FILES_FAILED) from exc
    if json_output:
        record = {
            "type": "summary",
            "run_id": run.run_id,
            "mode": plan.mode.value,
            "files": summary.files_total + outcomes[Outcome.NOT_MEDIA],
            "by_outcome": {outcome.value: n for outcome, n in sorted(outcomes.items()) if outcome.is_counted or n},
            "files_failed": summary.files_failed,
            "faces_detected": summary.faces_detected,
            "faces_anonymized": summary.faces_anonymized,
            "uncertain_files": uncertain[0],
            "identity": dict(by_identity) if selection is not None else None,
            "duration_s": round(summary.duration_s, 4),
        }
        typer.echo(json.dumps(record))
    else:
        print_summary(run.run_id, summary, outcomes, uncertain=uncertain[0], dry_run_with_faces=dry_with_faces[0])
        if selection is not None:
            stdout.print(
                f"by identity ({selection.mode.value} person): {by_identity['kept']} kept visible, "
                f"{by_identity['anonymized']} anonymized, {by_identity['unrecognized']} too small or turned to "
                "tell (anonymized); a video counts tracks",
                highlight=False,
            )
    raise typer.Exit(EXIT_FILES_FAILED if summary.files_failed else EXIT_OK)
