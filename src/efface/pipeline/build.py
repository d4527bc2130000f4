"""Builds the long-lived pipeline parts from ``Settings``: the one place every entry point (CLI,
service, Ray workers) turns configuration into a ``Worker``.
"""

from __future__ import annotations

from efface.config import Settings
from efface.detection.centerface import CenterFaceDetector
from efface.media.images import CodecOptions
from efface.pipeline.core import Worker
from efface.transforms.core import Anonymizer

__all__ = ["audited_settings", "build_worker"]


def build_worker(settings: Settings) -> Worker:
    """Builds detector, anonymizer (strength checked) and codec options.

    Raises:
        WeakTransformError: the configured transform is below the legal floor.
        ConfigurationError: another setting cannot work (e.g. an unavailable execution provider).
        ModelError: the detector model cannot be loaded.
    """
    anonymizer = Anonymizer(settings.transform_spec())
    detector = CenterFaceDetector(
        score_threshold=settings.score_threshold,
        nms_iou=settings.nms_iou,
        providers=settings.providers,
    )
    codec = CodecOptions(
        jpeg_quality=settings.jpeg_quality,
        keep_icc_profile=settings.keep_icc_profile,
        max_image_pixels=settings.max_image_pixels,
    )
    return Worker(detector=detector, anonymizer=anonymizer, codec=codec)


def audited_settings(settings: Settings) -> dict[str, object]:
    """Every setting that affects the output, for the audit log (the database URL is left out)."""
    return settings.model_dump(mode="json", exclude={"db_url"})
