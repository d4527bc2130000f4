"""The loaded detection models of one process, apart from the cheap settings that say how to use them.

An onnxruntime session is expensive (hundreds of MB and a second to build); which passes run and at which
threshold is not. So a process loads its ``Models`` once, with an explicit inference-thread count, and every
option set (a CLI run's settings, each HTTP request's) gets its detector from them with ``detector(spec)``: the
sessions are shared, the ``MultiScaleSpec`` is the option set's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from efface.detection.base import FaceDetector
from efface.detection.centerface import CenterFaceDetector
from efface.detection.multiscale import MultiScaleDetector, MultiScaleSpec, ScalableDetector, combined_sha256
from efface.detection.presets import CANDIDATE_SCORE
from efface.detection.yunet import YuNetDetector
from efface.errors import ConfigurationError
from efface.records import Precision

__all__ = ["DetectionModels", "Models", "load_models"]


class DetectionModels(Protocol):
    """What the pipeline needs of a process's models: their identity for the audit log, and a detector for a
    detection spec. ``Models`` is the real one; ``StaticModels`` a fake for tests.

    Attributes:
        name: the detector name recorded in the audit log, e.g. ``"centerface"`` or ``"centerface+yunet"``.
        weights_sha256: sha256 of the weights (combined when several models are fused).
    """

    @property
    def name(self) -> str: ...

    @property
    def weights_sha256(self) -> str: ...

    def detector(self, spec: MultiScaleSpec) -> FaceDetector:
        """A detector running ``spec``'s passes on these models (cheap: no model is loaded)."""
        ...


@dataclass(frozen=True, slots=True)
class Models:
    """CenterFace and any user-supplied detectors, each loaded once, reporting every candidate.

    The sessions report candidates down to ``CANDIDATE_SCORE``; each spec's operating threshold applies after
    fusion, so one set of sessions serves every preset and threshold.

    Attributes:
        base: CenterFace.
        extra: further detectors fused with it (``--detector yunet:PATH``).
        inference_threads: threads one inference may use.
    """

    base: ScalableDetector
    extra: tuple[ScalableDetector, ...] = ()
    inference_threads: int | None = None

    @property
    def name(self) -> str:
        return "+".join((self.base.name, *(d.name for d in self.extra)))

    @property
    def weights_sha256(self) -> str:
        return combined_sha256(self.base, self.extra)

    def detector(self, spec: MultiScaleSpec) -> MultiScaleDetector:
        return MultiScaleDetector(self.base, spec, extra=self.extra)


def load_models(
    *,
    providers: Sequence[str],
    inference_threads: int,
    yunet_paths: Sequence[Path] = (),
    precision: Precision = Precision.FP32,
) -> Models:
    """Loads CenterFace (the weights shipped inside efface) and any YuNet models.

    Args:
        providers: onnxruntime execution providers, in order of preference.
        inference_threads: threads one inference may use (processes x threads should fit the machine).
        yunet_paths: YuNet ONNX files fused with CenterFace.
        precision: CenterFace's: the published fp32 weights, or the int8 model built from them (from the model
            cache, built there on first use).

    Raises:
        ConfigurationError: an unavailable execution provider, or fewer than one thread.
        ModelError: a model file is missing or unreadable.
    """
    if inference_threads < 1:
        raise ConfigurationError(f"inference_threads must be >= 1, got {inference_threads}")
    base = CenterFaceDetector(
        precision=precision, score_threshold=CANDIDATE_SCORE, providers=providers, threads=inference_threads
    )
    extra = tuple(
        YuNetDetector(path, score_threshold=CANDIDATE_SCORE, providers=providers, threads=inference_threads)
        for path in yunet_paths
    )
    return Models(base=base, extra=extra, inference_threads=inference_threads)
