"""The named detection presets. Their passes and thresholds were chosen on data, not by taste: on
WIDER FACE validation images (``../shared/data/wider-dev``, hard set), each operating threshold is the
lowest on a 0.05 grid at which the preset makes no more false positives per image than deface at its
defaults (3.67), measured with ``bench/coverage.py`` and ``efface verify coverage``.
"""

from __future__ import annotations

from efface.detection.multiscale import FocusSpec, MultiScaleSpec
from efface.records import Preset

__all__ = ["CANDIDATE_SCORE", "DEFAULT_PRESET", "preset_spec"]

DEFAULT_PRESET = Preset.BALANCED
# Base detectors report everything above this; the presets' thresholds apply after fusion.
CANDIDATE_SCORE = 0.1

_SPECS = {
    # Full resolution plus a half-size pass for close-ups.
    Preset.FAST: MultiScaleSpec(scales=(1.0, 0.5), score_threshold=0.3, is_noisy_or=True),
    # ... plus a 2x pass on the tiles around faint small candidates of the full-resolution pass.
    Preset.BALANCED: MultiScaleSpec(
        scales=(1.0, 0.5),
        focus=FocusSpec(scale=2.0, cell_px=128, margin_px=16, candidate_score=0.15, candidate_max_height_px=48.0),
        score_threshold=0.35,
        is_noisy_or=True,
    ),
    # Recall first: five scales over the whole image and a mirrored pass.
    Preset.THOROUGH: MultiScaleSpec(
        scales=(1.0, 0.25, 0.5, 1.5, 2.0), flip_scales=(1.0,), score_threshold=0.55, is_noisy_or=True
    ),
}


def preset_spec(preset: Preset, *, score_threshold: float | None = None) -> MultiScaleSpec:
    """The passes of a preset, with its own operating threshold unless one is given."""
    spec = _SPECS[Preset(preset)]
    if score_threshold is None:
        return spec
    return MultiScaleSpec(
        scales=spec.scales,
        flip_scales=spec.flip_scales,
        focus=spec.focus,
        score_threshold=score_threshold,
        match_iou=spec.match_iou,
        nms_iou=spec.nms_iou,
        is_noisy_or=spec.is_noisy_or,
    )
