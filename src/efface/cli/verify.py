"""``efface verify``: detection coverage on an annotated sample, strength against face recognition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from efface.cli._options import (
    EXIT_FILES_FAILED,
    BlurKernelOption,
    BoxScaleOption,
    ConfigOption,
    DbOption,
    DetectorOption,
    MaskOption,
    MethodOption,
    PixelateBlocksOption,
    PresetOption,
    ThresholdOption,
    fail_setup,
    load,
    open_store,
    with_default,
)
from efface.cli._render import (
    configure_logging,
    print_coverage,
    print_error,
    print_strength,
    progress_bar,
    shown,
    stderr,
    stdout,
)
from efface.errors import EffaceError
from efface.recognition.recognizers import RECOGNIZER_NAMES
from efface.records import ValidationKind

# The options need these enums and names; the measuring code (and the pipeline under it) is imported by the
# command that runs, so that the commands of other groups do not load it.
from efface.verify.annotations import AnnotationFormat, WiderSubset

__all__ = ["verify_app"]

verify_app = typer.Typer(help="Measure what efface finds and how well it anonymizes.", no_args_is_help=True)


@verify_app.command("coverage")
def verify_coverage(
    images: Annotated[Path, typer.Argument(help="Folder the annotation's image paths are relative to.")],
    annotations: Annotated[
        Path, typer.Option("--annotations", "-a", help="WIDER FACE text, COCO JSON, Pascal VOC XML (file or folder).")
    ],
    annotation_format: Annotated[
        AnnotationFormat | None, typer.Option("--format", help=with_default("Annotation format.", "from the file"))
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
    from efface.pipeline.build import build_policy, inference_threads_for, load_models
    from efface.verify.annotations import read_annotations
    from efface.verify.coverage import measure_coverage
    from efface.verify.validation import new_validation_record

    configure_logging(False)
    settings = load(
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
        candidates = load_models(settings, inference_threads=inference_threads_for(1)).detector(policy.detection)
        sample = read_annotations(
            annotations,
            images_root=images,
            annotation_format=annotation_format,
            category=int(category) if category.isdigit() else category,
            subset=subset,
            difficulty_file=difficulty,
        )
    except EffaceError as exc:
        raise fail_setup(exc) from exc
    store = open_store(settings)
    progress = progress_bar(is_quiet=json_output)
    try:
        with store, progress:
            task = progress.add_task("measuring coverage", total=len(sample), unit="images")
            run = measure_coverage(
                sample, detector=candidates, policy=policy, on_image=lambda _: progress.advance(task)
            )
            recall = run.report.recall
            passed = None if fail_under is None else (recall is not None and recall >= fail_under)
            record = new_validation_record(
                ValidationKind.COVERAGE,
                detector=candidates,
                settings=settings,
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
            )
            store.record_validation(record)
    except EffaceError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_FILES_FAILED) from exc
    if json_output:
        counted = {"faces_counted": subset.value if subset else "all"}
        document = {"validation_id": record.validation_id, "passed": passed, **counted, **run.as_dict()}
        typer.echo(json.dumps(document, indent=2))
    else:
        print_coverage(record.validation_id, run, settings, subset=subset)
    if passed is False:
        if recall is None:  # nothing annotated was counted: no recall to pass on
            stderr.print(f"no annotated face to measure recall on: --fail-under {fail_under} fails", highlight=False)
        else:
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
        list[str] | None,
        typer.Option(
            "--recognizer", help=with_default(" and/or ".join(RECOGNIZER_NAMES) + ".", ", ".join(RECOGNIZER_NAMES))
        ),
    ] = None,
    only_configured: Annotated[
        bool, typer.Option("--only-configured", help="Measure the configured setting, clean and fill only.")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Measure whether face recognition still identifies anonymized faces (rank-1, two attackers)."""
    from efface.pipeline.build import build_policy, inference_threads_for, load_models
    from efface.recognition.recognizers import load_recognizers
    from efface.verify.strength import measure_strength, standard_treatments, verdict
    from efface.verify.validation import new_validation_record

    configure_logging(False)
    settings = load(
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
        face_detector = load_models(settings, inference_threads=inference_threads_for(1)).detector(policy.detection)
        recognizers = load_recognizers(tuple(recognizer) if recognizer else RECOGNIZER_NAMES)
    except EffaceError as exc:
        raise fail_setup(exc) from exc
    treatments = standard_treatments(settings.transform_spec())
    if only_configured:
        treatments = [t for t in treatments if t.spec is None or t.is_configured or t.label == "solid fill"]
    store = open_store(settings)
    try:
        with store, stderr.status("measuring re-identification") as status:
            report = measure_strength(
                people,
                detector=face_detector,
                codec=policy.codec,
                treatments=treatments,
                recognizers=recognizers,
                distractors_dir=distractors,
                on_step=lambda text: status.update(f"measuring re-identification: {shown(text)}"),
            )
            passed, reasons = verdict(report)
            record = new_validation_record(
                ValidationKind.STRENGTH,
                detector=face_detector,
                settings=settings,
                extra_settings={"recognizers": [r.name for r in recognizers]},
                dataset={
                    "people": str(people.resolve()),
                    "distractors": str(distractors.resolve()) if distractors else None,
                    "identities": report.identities,
                    "probes": report.probes,
                    "gallery_size": report.gallery_size,
                },
                figures={**report.as_dict(), "reasons": reasons},
                passed=passed,
            )
            store.record_validation(record)
    except EffaceError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_FILES_FAILED) from exc
    if json_output:
        typer.echo(
            json.dumps(
                {"validation_id": record.validation_id, "passed": passed, "reasons": reasons, **report.as_dict()},
                indent=2,
            )
        )
    else:
        print_strength(record.validation_id, report, recognizers)
    if passed:
        stderr.print("[green]verified:[/green] the configured setting leaks no more identity than a solid fill")
    else:
        stderr.print("[bold red]NOT VERIFIED:[/bold red] the configured setting did not pass; it is recorded so")
        for reason in reasons:
            stderr.print(f"  - {shown(reason)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FILES_FAILED)


@verify_app.command("identity")
def verify_identity(
    people: Annotated[Path, typer.Argument(help="Identities: PERSON/*.jpg, two or more images each.")],
    distractors: Annotated[
        Path | None, typer.Option(help="Images of further people (one face each), counted as strangers only.")
    ] = None,
    leak_rate: Annotated[
        float,
        typer.Option(
            min=0.00001,
            max=0.5,
            help="The share of third-party faces each recognizer alone may take for the subject.",
        ),
    ] = 0.001,
    references: Annotated[
        int,
        typer.Option(
            min=1,
            max=5,
            help="Reference photos per person (each person's first ones), as --keep-person with that many photos: "
            "people with fewer than this plus one are strangers only.",
        ),
    ] = 1,
    recognizer: Annotated[
        list[str] | None,
        typer.Option(
            "--recognizer", help=with_default(" and/or ".join(RECOGNIZER_NAMES) + ".", ", ".join(RECOGNIZER_NAMES))
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Measure the matcher of selective anonymization: how often a third party would be kept visible (the leak
    rate) and the data subject would be, at thresholds chosen on half the people and measured on the others."""
    from efface.pipeline.build import build_policy, inference_threads_for, load_models
    from efface.recognition.recognizers import load_recognizers
    from efface.verify.identity import measure_identity
    from efface.verify.validation import new_validation_record

    configure_logging(False)
    settings = load(config, db_url=db)
    try:
        policy = build_policy(settings)
        face_detector = load_models(settings, inference_threads=inference_threads_for(1)).detector(policy.detection)
        recognizers = load_recognizers(tuple(recognizer) if recognizer else RECOGNIZER_NAMES)
    except EffaceError as exc:
        raise fail_setup(exc) from exc
    store = open_store(settings)
    try:
        with store, stderr.status("measuring the matcher") as status:
            report = measure_identity(
                people,
                detector=face_detector,
                codec=policy.codec,
                recognizers=recognizers,
                distractors_dir=distractors,
                leak_rate=leak_rate,
                references=references,
                on_step=lambda text: status.update(f"measuring the matcher: {shown(text)}"),
            )
            record = new_validation_record(
                ValidationKind.IDENTITY,
                detector=face_detector,
                settings=settings,
                extra_settings={
                    "recognizers": list(report.recognizers),
                    "target_leak_rate": leak_rate,
                    "references": references,
                },
                dataset={
                    "people_dir": str(people.resolve()),
                    "distractors": str(distractors.resolve()) if distractors else None,
                    "people": report.people,
                    "faces": report.faces,
                    "skipped": report.skipped,
                },
                figures=report.as_dict(),
                passed=report.passed,
            )
            store.record_validation(record)
    except (EffaceError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(EXIT_FILES_FAILED) from exc
    rates = report.rates
    if json_output:
        typer.echo(json.dumps({"validation_id": record.validation_id, **report.as_dict()}, indent=2))
    else:
        thresholds = ", ".join(f"{name} {value:.4f}" for name, value in report.thresholds.keep.items())
        stdout.print(
            f"validation {record.validation_id}: {report.people} people, {report.faces} faces "
            f"({report.skipped} skipped)\n"
            f"third parties kept (leak rate): {rates.leak_rate:.5f} of {rates.third_party_faces:,} "
            f"(target {leak_rate:g})\n"
            f"data subject kept: {rates.subject_kept_rate:.3f} of {rates.subject_faces:,}; "
            f"missed under --only-person: {rates.only_missed_rate:.3f}, others anonymized with them: "
            f"{rates.only_others_rate:.3f}\n"
            f"thresholds chosen on every person (keep, cosine): {thresholds}",
            highlight=False,
        )
        defaults = report.at_defaults
        if defaults is not None:
            stdout.print(
                f"at efface's default thresholds, {references} reference photo(s) per person: third parties kept "
                f"{defaults.leak_rate:.5f} of {defaults.third_party_faces:,}, data subject kept "
                f"{defaults.subject_kept_rate:.3f} of {defaults.subject_faces:,}",
                highlight=False,
            )
    if not report.passed:
        stderr.print(f"[bold red]NOT VERIFIED:[/bold red] the leak rate is above {leak_rate:g}")
        raise typer.Exit(EXIT_FILES_FAILED)
