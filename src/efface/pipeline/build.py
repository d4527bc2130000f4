"""Turns ``Settings`` into the pipeline's parts: the one place every entry point (CLI, service, Ray actors, pool
processes, the library) does it.

- ``load_models``: the expensive part, once per process, with an explicit inference-thread count.
- ``build_policy``: the cheap part (detection spec, anonymizer with its strength checked, codec, video and
  tracking options), per option set or per request.
- ``audited_settings``: what the audit log records about the settings of a run.
- ``settings_sha256``: the part of them a resumed run must share with the run that did a file.
- ``build_selection``: selective anonymization from reference photos (``--keep-person``, ``--only-person``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from efface.config import Settings
from efface.detection.models import DetectionModels, Models
from efface.detection.models import load_models as load_detection_models
from efface.detection.presets import preset_spec
from efface.detection.providers import providers_for
from efface.detection.tracking import TrackingSpec
from efface.errors import ConfigurationError
from efface.media.images import CodecOptions
from efface.media.video import VideoOptions
from efface.pipeline.core import Policy
from efface.recognition.matching import MatchMode
from efface.recognition.selection import Selection, load_person
from efface.transforms.core import Anonymizer

__all__ = [
    "audited_settings",
    "build_policy",
    "build_selection",
    "inference_threads_for",
    "load_models",
    "settings_sha256",
    "with_selection",
]

# The audited settings that decide which faces are found and how they are made unrecognisable (for a video
# also whether identifying metadata stays). Encoder quality, providers and limits are left out: changing them
# leaves a file as anonymous as it was.
_RESUME_SETTINGS = (
    "detection",
    "tracking",
    "method",
    "mask_shape",
    "box_scale",
    "blur_kernel_fraction",
    "pixelate_blocks",
    "fill_rgb",
    "keep_video_metadata",
)


def inference_threads_for(processes: int) -> int:
    """Threads each of ``processes`` concurrent inferences may use so that together they fit this machine's
    cores (at least one)."""
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def load_models(settings: Settings, *, inference_threads: int) -> Models:
    """CenterFace and the configured further detectors, loaded once for this process.

    Raises:
        ConfigurationError: an unavailable execution provider.
        ModelError: a model file is missing or unreadable.
    """
    return load_detection_models(
        providers=_providers(settings),
        inference_threads=inference_threads,
        yunet_paths=settings.yunet_paths,
        precision=settings.precision,
    )


def build_policy(settings: Settings) -> Policy:
    """The detection spec, anonymizer (strength checked), codec, video and tracking options of ``settings``.

    Raises:
        WeakTransformError: the configured transform is below the legal floor.
        ConfigurationError: another setting cannot work (e.g. a video setting).
    """
    anonymizer = Anonymizer(settings.transform_spec())
    codec = CodecOptions(
        jpeg_quality=settings.jpeg_quality,
        keep_icc_profile=settings.keep_icc_profile,
        max_image_pixels=settings.max_image_pixels,
    )
    try:
        video = VideoOptions(
            codec=settings.video_codec,
            crf=settings.video_crf,
            preset=settings.video_preset,
            keep_metadata=settings.keep_video_metadata,
            max_pixels=settings.max_image_pixels,
        )
        tracking = _tracking_spec(settings)
    except ValueError as exc:
        raise ConfigurationError(f"invalid video setting: {exc}") from exc
    detection = preset_spec(settings.preset, score_threshold=settings.score_threshold)
    return Policy(
        detection=detection,
        anonymizer=anonymizer,
        codec=codec,
        video=video,
        tracking=tracking,
        image_columns=settings.image_columns,
    )


def build_selection(
    *, keep: Sequence[Path] = (), only: Sequence[Path] = (), models: DetectionModels, policy: Policy
) -> Selection | None:
    """Selective anonymization from reference photos, one image or folder of images per person: everyone but
    ``keep``'s people anonymized, or only ``only``'s (None when neither is given). The reference faces are found
    with the policy's detector and embedded in memory; nothing is written.

    Raises:
        ConfigurationError: both given, or the recognizers are not installed.
        InputError: a reference photo that cannot be used (no face, several, too small, unreadable).
        ModelError: a recognizer cannot be loaded.
    """
    if keep and only:
        raise ConfigurationError("give --keep-person or --only-person, not both")
    if not keep and not only:
        return None
    detector = models.detector(policy.detection)
    people = tuple(load_person(Path(path), detector=detector, codec=policy.codec) for path in (keep or only))
    return Selection(MatchMode.KEEP if keep else MatchMode.ONLY, people)


def with_selection(policy: Policy, selection: Selection | None) -> Policy:
    """``policy`` with ``selection`` (unchanged for None)."""
    return policy if selection is None else dataclasses.replace(policy, identity=selection)


def audited_settings(settings: Settings, *, identity: Selection | None = None) -> dict[str, object]:
    """Every setting that affects the output, for the audit log (the database URL is left out), with the
    execution providers the detector runs on, the detection passes the preset stands for and, under selective
    anonymization, its settings and the references' sha256 (never an embedding)."""
    audited = settings.model_dump(mode="json", exclude={"db_url", "jobs"})
    audited["providers"] = list(_providers(settings))
    audited["detection"] = preset_spec(settings.preset, score_threshold=settings.score_threshold).as_dict()
    audited["tracking"] = _tracking_spec(settings).as_dict()
    if identity is not None:
        audited["identity"] = identity.audited()
    return audited


def settings_sha256(audited: Mapping[str, object], *, model_sha256: str) -> str:
    """sha256 of the detection and transform settings among ``audited`` (as ``audited_settings`` gives them:
    the preset stands there as its passes and threshold) and of the model weights, in canonical JSON.

    A resumed run skips a file only when the run that did it has the same: a re-run with a stronger preset,
    a lower threshold, another method or other weights anonymizes the file again.
    """
    canonical = {"model_sha256": model_sha256, **{name: audited.get(name) for name in _RESUME_SETTINGS}}
    if audited.get("identity") is not None:  # whose faces were kept: a run without it anonymizes them too
        canonical["identity"] = audited["identity"]
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _providers(settings: Settings) -> tuple[str, ...]:
    """The execution providers the settings name, else those of their device."""
    return settings.providers if settings.providers is not None else providers_for(settings.device)


def _tracking_spec(settings: Settings) -> TrackingSpec:
    return TrackingSpec(
        hold_frames=settings.track_hold_frames,
        lookback_frames=settings.track_lookback_frames,
        detect_every=settings.detect_every,
        light_passes=settings.light_passes,
    )
