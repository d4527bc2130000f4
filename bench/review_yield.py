"""What a reviewer would be shown: on an annotated sample, the share of the default preset's missed faces (by
size) that the review page shows as a faint candidate, how many pictures it would ask a person to look at, and the
recall-first preset (``--preset recall``) beside the default: recall by size and the share of anonymized pixels
outside every annotated face.

Run by hand (not a test); by default on the WIDER FACE validation sample beside the repository, e.g.:

    .venv/bin/python bench/review_yield.py --subset hard

One detection per image: the recall preset runs exactly the balanced passes and keeps every fused candidate down
to the candidate floor, so its faces are the default's faces and faint candidates together (the default's size
prior only lifts scores, which changes nothing at the floor). A missed face "appears as a faint candidate" when a
candidate below the default's threshold matches it (IoU >= 0.5, the WIDER protocol's); a picture is "to look at"
when it has at least one faint candidate, as ``anonymize`` records it (``files.uncertain``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from efface.config import load_settings
from efface.detection.presets import CANDIDATE_SCORE, preset_spec
from efface.media.images import decode_image
from efface.pipeline.build import build_policy, load_models
from efface.records import Preset
from efface.verify.annotations import read_annotations
from efface.verify.metrics import CoverageAccumulator, HeightBin

ROOT = Path(__file__).resolve().parents[1]
WIDER = ROOT.parent / "shared" / "data" / "wider-dev"
BINS = (HeightBin.ALL, HeightBin.UNDER_20, HeightBin.FROM_20_TO_50, HeightBin.AT_LEAST_50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=WIDER / "images")
    parser.add_argument("--annotations", type=Path, default=WIDER / "wider_face_gt.txt")
    parser.add_argument("--difficulty", type=Path, default=WIDER / "difficulty.json")
    parser.add_argument("--subset", choices=["easy", "medium", "hard"], default=None, help="default: every face")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    settings = load_settings()
    policy = build_policy(settings)
    detector = load_models(settings, inference_threads=2).detector(policy.detection)
    threshold = detector.score_threshold
    recall_spec, default_spec = preset_spec(Preset.RECALL), policy.detection
    assert recall_spec.score_threshold == CANDIDATE_SCORE  # the recall preset: the same passes, down to the floor
    assert (recall_spec.scales, recall_spec.flip_scales, recall_spec.focus) == (
        default_spec.scales,
        default_spec.flip_scales,
        default_spec.focus,
    )
    sample = read_annotations(
        args.annotations,
        images_root=args.images,
        subset=args.subset,
        difficulty_file=args.difficulty if args.subset else None,
    )
    default, recall = CoverageAccumulator(threshold), CoverageAccumulator(CANDIDATE_SCORE)
    to_look_at = faint_total = 0
    t0 = time.perf_counter()
    for image in sample:
        pixels = decode_image(image.path.read_bytes(), path=image.path, options=policy.codec).pixels
        every = detector.detect_all(pixels)
        operating = tuple(face for face in every if face.score >= threshold)
        faint = len(every) - len(operating)
        to_look_at += faint > 0
        faint_total += faint
        height, width = pixels.shape[:2]
        default.add(image, every, policy.anonymizer.region_mask(height, width, operating))
        recall.add(image, every, policy.anonymizer.region_mask(height, width, every))
    took = time.perf_counter() - t0
    by_default, by_recall = default.report(), recall.report()

    figures: dict[str, object] = {
        "images": by_default.images,
        "subset": args.subset or "all faces",
        "default_threshold": threshold,
        "pictures_with_faint_candidates": to_look_at,
        "faint_candidates": faint_total,
        "seconds": round(took, 1),
        "by_size": {},
    }
    print(f"{by_default.images} images from {args.images}, {figures['subset']}; default (balanced, {threshold:g})")
    print(
        f"pictures a reviewer is asked to look at: {to_look_at} of {by_default.images} "
        f"({to_look_at / by_default.images:.1%}), {faint_total} faint candidates in all"
    )
    print("size | faces | missed by default | shown as faint | share | recall default | recall 'recall'")
    for height_bin in BINS:
        found_default = by_default.found_by_height[height_bin]
        found_recall = by_recall.found_by_height[height_bin]
        missed = found_default.total - found_default.found
        shown = found_recall.found - found_default.found
        share = shown / missed if missed else None
        figures["by_size"][height_bin.value] = {  # type: ignore[index]
            "faces": found_default.total,
            "missed_by_default": missed,
            "shown_as_faint": shown,
            "share_shown": share,
            "recall_default": found_default.share,
            "recall_recall_preset": found_recall.share,
        }
        print(
            f"{height_bin.value} | {found_default.total} | {missed} | {shown} | "
            f"{'-' if share is None else f'{share:.3f}'} | {found_default.share:.3f} | {found_recall.share:.3f}"
        )
    over_default, over_recall = by_default.over_redaction_share, by_recall.over_redaction_share
    figures["over_redaction_default"] = over_default
    figures["over_redaction_recall_preset"] = over_recall
    figures["fp_per_image_default"] = by_default.fp_per_image
    figures["fp_per_image_recall_preset"] = by_recall.fp_per_image
    print(f"anonymized pixels outside every face: default {over_default:.3f}, recall preset {over_recall:.3f}")
    print(f"false positives per image: default {by_default.fp_per_image:.2f}, recall {by_recall.fp_per_image:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
