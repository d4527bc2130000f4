"""The audit record of a measurement: what ``efface verify coverage`` and ``verify strength`` store."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from efface import __version__
from efface.config import Settings
from efface.detection.base import FaceDetector
from efface.pipeline.build import audited_settings
from efface.records import ValidationKind, ValidationRecord

__all__ = ["new_validation_record"]


def new_validation_record(
    kind: ValidationKind,
    *,
    detector: FaceDetector,
    settings: Settings,
    dataset: Mapping[str, object],
    figures: Mapping[str, object],
    passed: bool | None,
    extra_settings: Mapping[str, object] | None = None,
) -> ValidationRecord:
    """A fresh validation record, stamped now, on this machine, with this version of efface.

    Args:
        kind: coverage or strength.
        detector: the detector measured (its name and weights' sha256 are recorded).
        settings: the settings measured with; recorded as the audit log records a run's.
        dataset: what was measured on (paths, format, counts), JSON-serialisable.
        figures: the results, JSON-serialisable.
        passed: the outcome of the pass/fail criterion, None without one.
        extra_settings: further choices of the measurement itself (e.g. the recognizers), JSON-serialisable.
    """
    return ValidationRecord(
        validation_id=uuid.uuid4().hex,
        kind=kind,
        created_at=datetime.now(UTC),
        efface_version=__version__,
        model_name=detector.name,
        model_sha256=detector.weights_sha256,
        settings={**audited_settings(settings), **(extra_settings or {})},
        dataset=dict(dataset),
        figures=dict(figures),
        passed=passed,
        hostname=socket.gethostname(),
    )
