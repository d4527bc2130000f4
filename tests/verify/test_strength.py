"""``verify strength``: the protocol's pure parts, and both real recognizers on real identities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from efface.config import load_settings
from efface.errors import InputNotFoundError
from efface.pipeline.build import build_policy, load_models
from efface.records import Method, TransformSpec
from efface.verify.strength import (
    Attacker,
    StrengthReport,
    StrengthRow,
    load_identities,
    measure_strength,
    standard_treatments,
    verdict,
)

IDENTITIES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces-identity" / "people"


def test_standard_treatments_mark_the_configured_one() -> None:
    table = standard_treatments(TransformSpec())
    configured = [t for t in table if t.is_configured]
    assert len(configured) == 1 and configured[0].spec == TransformSpec()
    assert table[0].spec is None
    below = [t for t in table if t.spec is not None and not t.is_at_or_above_floor]
    assert [t.label for t in below] == ["blur, 2 px kernel (below the floor, reference)"]
    custom = standard_treatments(TransformSpec(method=Method.PIXELATE, pixelate_blocks=4, box_scale=1.6))
    assert custom[-1].is_configured and custom[-1].label == "configured setting"
    assert all(t.spec.box_scale == 1.6 for t in custom if t.spec is not None)


def _report(configured: dict, fill: dict, gallery: int = 100, fill_per_identity: float | None = None) -> StrengthReport:
    rows = []
    for (recognizer, attacker), value in configured.items():
        rows.append(StrengthRow("mine", recognizer, attacker, value, 50, True, True))
    for (recognizer, attacker), value in fill.items():
        rows.append(StrengthRow("solid fill", recognizer, attacker, value, 50, False, True, fill_per_identity))
    return StrengthReport(tuple(rows), identities=gallery, gallery_size=gallery, probes=50, skipped=(), duration_s=1)


@pytest.mark.parametrize(
    ("mine", "fill", "passed", "reason"),
    [
        (0.010, 0.015, True, None),
        (0.025, 0.015, True, None),  # within the 0.01 tolerance
        (0.030, 0.015, False, "exceeds the fill"),
        (0.010, 0.030, False, "grow the region"),  # the fill itself leaks: region too small
    ],
)
def test_verdict(mine: float, fill: float, passed: bool, reason: str | None) -> None:
    key = ("dlib", Attacker.INFORMED)
    ok, reasons = verdict(_report({key: mine}, {key: fill}))
    assert ok is passed
    assert (reason is None and not reasons) or any(reason in r for r in reasons)


@pytest.mark.parametrize(
    ("per_identity", "passed"),
    [
        (0.010, True),  # a constant answer: 0.025 per probe, exactly chance per identity
        (0.020, True),  # 2 x chance is the limit itself
        (0.021, False),
    ],
)
def test_verdict_judges_the_fill_per_identity(per_identity: float, passed: bool) -> None:
    key = ("dlib", Attacker.NAIVE)
    ok, reasons = verdict(_report({key: 0.025}, {key: 0.025}, fill_per_identity=per_identity))
    assert ok is passed, reasons
    assert passed or any("grow the region" in r for r in reasons)


def test_identity_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="no such folder"):
        load_identities(tmp_path / "missing")
    (tmp_path / "alone").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "alone" / "1.jpg")
    with pytest.raises(InputNotFoundError, match="two or more images"):
        load_identities(tmp_path)


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not IDENTITIES.is_dir():
        pytest.skip(f"evaluation data not present: {IDENTITIES}")
    chosen = tmp_path_factory.mktemp("people")
    for person in sorted(IDENTITIES.iterdir())[:20]:
        (chosen / person.name).symlink_to(person)
    return chosen


@pytest.mark.slow
def test_real_recognizers_identify_clean_faces_and_not_the_default(people: Path) -> None:
    from efface.recognition.recognizers import load_recognizers

    settings = load_settings(db_url="sqlite://")
    policy = build_policy(settings)
    teeth = "blur, 2 px kernel (below the floor, reference)"
    # Only the treatments asserted on below (the table itself is tested above): each one costs every probe
    # anonymized and embedded by both recognizers.
    treatments = [
        t
        for t in standard_treatments(TransformSpec())
        if t.spec is None or t.is_configured or t.label in (teeth, "solid fill")
    ]
    assert {t.label for t in treatments} >= {"clean (no treatment)", teeth, "solid fill"}
    report = measure_strength(
        people,
        detector=load_models(settings, inference_threads=2).detector(policy.detection),
        codec=policy.codec,
        treatments=treatments,
        recognizers=load_recognizers(),
    )
    default = next(row.treatment for row in report.rows if row.is_configured)
    for recognizer in ("dlib", "facenet"):
        assert report.rank1("clean (no treatment)", recognizer, None) >= 0.8
        for attacker in Attacker:
            assert report.rank1(teeth, recognizer, attacker) > 3 * report.chance
            fill = report.rank1("solid fill", recognizer, attacker)
            assert report.rank1(default, recognizer, attacker) <= fill + 0.01
    assert np.isclose(report.chance, 1 / report.gallery_size)
