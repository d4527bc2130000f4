"""The named detection presets. Their passes and thresholds were chosen on data, not by taste: on
WIDER FACE validation images (``../shared/data/wider-dev``, hard set), each operating threshold is the
lowest on a 0.05 grid at which the preset makes no more false positives per image than deface at its
defaults (3.67), measured with ``bench/coverage.py`` and ``efface verify coverage``. Boxes at least
48 px tall (where the ">= 50 px" recall is decided) get a size prior: the lowest raw score on the same grid,
down to the candidate floor, that still keeps false positives per image at or under deface's (see
``favour_large``).
"""

from __future__ import annotations

import dataclasses

from efface.detection.multiscale import FocusSpec, MultiScaleSpec
from efface.records import Preset

__all__ = ["CANDIDATE_SCORE", "DEFAULT_PRESET", "LIGHT_PASS_SCALE", "light_pass_spec", "preset_spec"]

DEFAULT_PRESET = Preset.BALANCED
# Base detectors report everything above this; the presets' thresholds apply after fusion.
CANDIDATE_SCORE = 0.1
# The light pass between a video's full detections: a quarter of a full pass's pixels, enough for the large
# faces that move most between two full detections; the tracker carries the small ones.
LIGHT_PASS_SCALE = 0.5

_SPECS = {
    # Full resolution plus a half-size pass for close-ups.
    Preset.FAST: MultiScaleSpec(scales=(1.0, 0.5), score_threshold=0.3, is_noisy_or=True, large_face_score=0.1),
    # ... plus a 2x pass on the tiles around faint small candidates of the full-resolution pass.
    Preset.BALANCED: MultiScaleSpec(
        scales=(1.0, 0.5),
        focus=FocusSpec(scale=2.0, cell_px=128, margin_px=16, candidate_score=0.15, candidate_max_height_px=48.0),
        score_threshold=0.35,
        is_noisy_or=True,
        large_face_score=0.15,
    ),
    # Every candidate the balanced passes produce, down to the floor: for users who prefer over-redaction to any
    # miss (street video for publication). Nothing is left as a faint candidate.
    Preset.RECALL: MultiScaleSpec(
        scales=(1.0, 0.5),
        focus=FocusSpec(scale=2.0, cell_px=128, margin_px=16, candidate_score=0.15, candidate_max_height_px=48.0),
        score_threshold=CANDIDATE_SCORE,
        is_noisy_or=True,
    ),
    # Five scales over the whole image and a mirrored pass.
    Preset.THOROUGH: MultiScaleSpec(
        scales=(1.0, 0.25, 0.5, 1.5, 2.0),
        flip_scales=(1.0,),
        score_threshold=0.55,
        is_noisy_or=True,
        large_face_score=0.25,
    ),
}


def preset_spec(preset: Preset, *, score_threshold: float | None = None) -> MultiScaleSpec:
    """The passes of a preset, with its own operating threshold unless one is given."""
    spec = _SPECS[Preset(preset)]
    if score_threshold is None:
        return spec
    # A threshold of the user's own: large boxes never need more than it.
    large = spec.large_face_score
    return dataclasses.replace(
        spec,
        score_threshold=score_threshold,
        large_face_score=None if large is None or large >= score_threshold else large,
    )


def light_pass_spec(spec: MultiScaleSpec) -> MultiScaleSpec:
    """The light pass of a detection spec: one pass at ``LIGHT_PASS_SCALE``, no mirrored or focused pass,
    with ``spec``'s thresholds (its size prior included). Further detectors fused with the base one still run.
    """
    return dataclasses.replace(spec, scales=(LIGHT_PASS_SCALE,), flip_scales=(), focus=None)
