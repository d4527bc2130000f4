"""Builds the long-lived pipeline parts from ``Settings``: the one place every entry point (CLI,
service, Ray workers) turns configuration into a ``Worker``.
"""

from __future__ import annotations

import os
from pathlib import Path

from efface.config import Settings
from efface.detection.centerface import CenterFaceDetector
from efface.detection.multiscale import MultiScaleDetector
from efface.detection.presets import CANDIDATE_SCORE, preset_spec
from efface.detection.providers import providers_for
from efface.detection.tracking import TrackingSpec
from efface.detection.yunet import YuNetDetector
from efface.errors import ConfigurationError
from efface.media.images import CodecOptions
from efface.media.video import VideoOptions
from efface.pipeline.core import Worker
from efface.transforms.core import Anonymizer

__all__ = ["audited_settings", "build_detector", "build_worker"]


def build_worker(settings: Settings) -> Worker:
    """Builds detector, anonymizer (strength checked) and codec options.

    Raises:
        WeakTransformError: the configured transform is below the legal floor.
        ConfigurationError: another setting cannot work (e.g. an unavailable execution provider).
        ModelError: the detector model cannot be loaded.
    """
    anonymizer = Anonymizer(settings.transform_spec())
    detector = build_detector(settings)
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
    return Worker(detector=detector, anonymizer=anonymizer, codec=codec, video=video, tracking=tracking)


def build_detector(settings: Settings) -> MultiScaleDetector:
    """CenterFace in the configured preset, fused with any user-supplied detectors.

    Raises:
        ConfigurationError: an unavailable execution provider.
        ModelError: a model file is missing or unreadable.
    """
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    providers = _providers(settings)
    base = CenterFaceDetector(score_threshold=CANDIDATE_SCORE, providers=providers, threads=threads)
    extra = [
        YuNetDetector(
            Path(item.partition(":")[2]),
            score_threshold=CANDIDATE_SCORE,
            providers=providers,
            threads=threads,
        )
        for item in settings.extra_detectors
    ]
    spec = preset_spec(settings.preset, score_threshold=settings.score_threshold)
    return MultiScaleDetector(base, spec, extra=extra)


def audited_settings(settings: Settings) -> dict[str, object]:
    """Every setting that affects the output, for the audit log (the database URL is left out), with the
    execution providers the detector runs on and the detection passes the preset stands for."""
    audited = settings.model_dump(mode="json", exclude={"db_url", "workers"})
    audited["providers"] = list(_providers(settings))
    audited["detection"] = preset_spec(settings.preset, score_threshold=settings.score_threshold).as_dict()
    audited["tracking"] = _tracking_spec(settings).as_dict()
    return audited


def _providers(settings: Settings) -> tuple[str, ...]:
    """The execution providers the settings name, else those of their device."""
    return settings.providers if settings.providers is not None else providers_for(settings.device)


def _tracking_spec(settings: Settings) -> TrackingSpec:
    return TrackingSpec(
        hold_frames=settings.track_hold_frames,
        lookback_frames=settings.track_lookback_frames,
        detect_every=settings.detect_every,
    )
