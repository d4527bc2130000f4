"""The validation record both ``verify`` commands store."""

from __future__ import annotations

from datetime import UTC, datetime

from efface import __version__
from efface.config import load_settings
from efface.detection import StaticDetector
from efface.records import ValidationKind
from efface.verify.validation import new_validation_record


def test_a_validation_record_carries_the_detector_the_audited_settings_and_the_figures() -> None:
    settings = load_settings(method="pixelate")
    record = new_validation_record(
        ValidationKind.STRENGTH,
        detector=StaticDetector(name="fake"),
        settings=settings,
        dataset={"people": "/data/people", "identities": 3},
        figures={"chance": 0.1},
        passed=True,
        extra_settings={"recognizers": ["dlib"]},
    )
    assert record.kind is ValidationKind.STRENGTH and record.passed is True
    assert (record.model_name, record.model_sha256) == ("fake", StaticDetector.weights_sha256)
    assert record.settings["method"] == "pixelate" and record.settings["recognizers"] == ["dlib"]
    assert "db_url" not in record.settings  # audited as a run's settings are
    assert record.dataset == {"people": "/data/people", "identities": 3} and record.figures == {"chance": 0.1}
    assert record.efface_version == __version__ and record.created_at <= datetime.now(UTC)
    assert len(record.validation_id) == 32


def test_every_record_has_its_own_id() -> None:
    def make() -> str:
        return new_validation_record(
            ValidationKind.COVERAGE,
            detector=StaticDetector(),
            settings=load_settings(),
            dataset={},
            figures={},
            passed=None,
        ).validation_id

    assert make() != make()
