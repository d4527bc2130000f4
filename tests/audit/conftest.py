"""Audit fixtures: each test runs on a new SQLite file and on a new schema of the real PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from efface.audit import AuditStore
from efface.records import (
    AnonymizationResult,
    BBox,
    Face,
    Outcome,
    RunInfo,
    RunStatus,
    RunSummary,
    Uncertainty,
    ValidationKind,
    ValidationRecord,
    WriteMode,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        # The folder does not exist yet: the store creates it.
        return f"sqlite:///{tmp_path / 'audit' / 'audit.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def raw_engine(db_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the same database, to look under the store."""
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[AuditStore]:
    with AuditStore(db_url) as opened:
        yield opened


HISTORY_START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
HISTORY_SETTINGS: dict[str, object] = {
    "method": "fill",
    "mask_shape": "ellipse",
    "box_scale": 1.6,
    "preset": "balanced",
    "score_threshold": 0.35,
    "detection": {"passes": ["1x", "0.5x", "2x tiles"]},
}
# Faces in the files of each run, cycled; every 9th file fails.
_FACES_CYCLE = (0, 1, 1, 2, 3, 0, 5, 1, 25, 2, 1)


def coverage_record(*, passed: bool | None = True, created_at: datetime = HISTORY_START) -> ValidationRecord:
    return ValidationRecord(
        validation_id=uuid.uuid4().hex,
        kind=ValidationKind.COVERAGE,
        created_at=created_at - timedelta(days=3),
        efface_version="0.1.0",
        model_name="centerface",
        model_sha256="ab" * 32,
        settings=HISTORY_SETTINGS,
        dataset={"images_root": "/data/wider-dev/images", "annotations": "/data/gt.txt", "images": 198},
        figures={
            "recall": 0.891,
            "images": 198,
            "faces": 1999,
            "recall_by_height": {"<20": {"found": 10, "total": 12, "share": 0.838}},
            "fp_per_image": 3.11,
            "coverage": {"covered_share": 0.927},
        },
        passed=passed,
        hostname="dpo-host",
    )


def strength_record(*, passed: bool = True, method: str = "fill") -> ValidationRecord:
    return ValidationRecord(
        validation_id=uuid.uuid4().hex,
        kind=ValidationKind.STRENGTH,
        created_at=HISTORY_START - timedelta(days=2),
        efface_version="0.1.0",
        model_name="centerface",
        model_sha256="ab" * 32,
        settings={**HISTORY_SETTINGS, "method": method},
        dataset={"people": "/data/people", "identities": 100, "probes": 243},
        figures={
            "identities": 100,
            "probes": 243,
            "gallery_size": 100,
            "chance": 0.01,
            "rows": [
                {
                    "treatment": "fill",
                    "recognizer": "facenet",
                    "attacker": "informed",
                    "rank1": 0.0082,
                    "is_configured": True,
                },
                {
                    "treatment": "clean",
                    "recognizer": "facenet",
                    "attacker": None,
                    "rank1": 0.959,
                    "is_configured": False,
                },
            ],
            "reasons": [] if passed else ["facenet/informed: rank-1 0.300 exceeds the fill's 0.008 + 0.01"],
        },
        passed=passed,
        hostname="dpo-host",
    )


def record_history(store: AuditStore, *, days: int = 5, files_per_run: int = 18) -> list[str]:
    """A week of in-place runs (one a day, some files failing) and one validation of each kind."""
    store.record_validation(coverage_record())
    store.record_validation(strength_record())
    run_ids = []
    for day in range(days):
        run = RunInfo(
            run_id=uuid.uuid4().hex,
            started_at=HISTORY_START + timedelta(days=day, hours=day % 3),
            efface_version="0.1.0",
            command="anonymize",
            mode=WriteMode.IN_PLACE,
            model_name="centerface",
            model_sha256="ab" * 32,
            settings=HISTORY_SETTINGS,
            hostname="worker-1",
        )
        store.start_run(run)
        results = []
        for index in range(files_per_run):
            path = Path(f"/photos/day{day}/IMG_{index:04d}.jpg")
            started_at = run.started_at + timedelta(seconds=3 * index)
            if index % 9 == 8:
                results.append(
                    AnonymizationResult(
                        path,
                        Outcome.ERROR,
                        WriteMode.IN_PLACE,
                        started_at,
                        0.01,
                        error_class="CorruptImageError" if day % 2 else "UnsupportedFormatError",
                        error_message="image file is truncated" if day % 2 else "HEIC is not supported",
                    )
                )
                continue
            faces_count = _FACES_CYCLE[index % len(_FACES_CYCLE)]
            faces = tuple(Face(BBox(10.0 * j, 10.0, 10.0 * j + 30.0, 50.0), 0.9) for j in range(faces_count))
            # Every sixth file from the second has a faint candidate left (3 files a run).
            faint = (Face(BBox(200.0, 20.0, 212.0, 36.0), 0.2),) if index % 6 == 1 else ()
            results.append(
                AnonymizationResult(
                    path,
                    Outcome.ANONYMIZED if faces_count else Outcome.NO_FACES,
                    WriteMode.IN_PLACE,
                    started_at,
                    0.12,
                    output_path=path,
                    faces=faces,
                    faces_anonymized=faces_count,
                    image_format="JPEG",
                    resolution_wh=(1024, 768),
                    uncertainty=Uncertainty.of_faces(faint),
                )
            )
        store.record_files(run.run_id, results)
        failed = sum(r.outcome is Outcome.ERROR for r in results)
        faces_total = sum(r.faces_detected for r in results)
        store.finish_run(
            run.run_id,
            RunSummary(
                RunStatus.FAILED if failed else RunStatus.COMPLETED,
                run.started_at + timedelta(minutes=2),
                files_per_run,
                failed,
                faces_total,
                faces_total,
                120.0,
            ),
        )
        run_ids.append(run.run_id)
    return run_ids
