"""What the detector was unsure of, recorded per file: the faint candidates it did not anonymize (boxes and counts
by size, never pixels), a video's bridged frames; found by ``audit list --uncertain``, counted in the summary."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from efface.arrays import ImageArray
from efface.audit import AuditStore
from efface.cli import app
from efface.cli._render import print_summary
from efface.detection.base import CandidateDetector, detect_with_faint
from efface.detection.static import StaticModels
from efface.pipeline import plan_jobs
from efface.pipeline.core import FaintTally, Policy
from efface.pipeline.pool import InProcess
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import BBox, Face, Outcome, RunStatus, RunSummary, Uncertainty, VideoStats

SURE = Face(BBox(100.0, 100.0, 200.0, 220.0), 0.9)
FAINT_SMALL = Face(BBox(10.0, 10.0, 22.0, 26.0), 0.2)  # 16 px tall
FAINT_LARGE = Face(BBox(250.0, 20.0, 330.0, 120.0), 0.12)  # 100 px tall


class _Candidates:
    """A detector with an operating threshold of 0.3 that reports candidates below it (as ``MultiScaleDetector``)."""

    name = "candidates"
    weights_sha256 = "1" * 64
    score_threshold = 0.3

    def __init__(self, found: tuple[Face, ...]) -> None:
        self.found = found

    def detect(self, image: ImageArray) -> tuple[Face, ...]:
        return tuple(face for face in self.found if face.score >= self.score_threshold)

    def detect_all(self, image: ImageArray) -> tuple[Face, ...]:
        return self.found


def test_the_faint_candidates_come_from_the_same_detection() -> None:
    detector = _Candidates((SURE, FAINT_SMALL, FAINT_LARGE))
    assert isinstance(detector, CandidateDetector)
    image = np.zeros((300, 400, 3), np.uint8)
    assert detect_with_faint(detector, image) == ((SURE,), (FAINT_SMALL, FAINT_LARGE))
    assert detect_with_faint(StaticModels(faces=(SURE,)).detector(Policy().detection), image) == ((SURE,), ())


def _photos(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(folder / name, quality=90)
        paths.append(folder / name)
    return paths


def test_a_pictures_faint_candidates_are_recorded_and_listed(tmp_path: Path, sqlite_url: str) -> None:
    """Two photos: one with a face and two faint candidates (one small, one large), one with nothing at all."""
    a, b = _photos(tmp_path / "photos")
    faces = {a.name: (SURE, FAINT_SMALL, FAINT_LARGE), b.name: ()}

    class PerFile(StaticModels):
        def __init__(self) -> None:
            super().__init__()
            self.next = iter([faces[a.name], faces[b.name]])

        def detector(self, spec: object) -> _Candidates:  # type: ignore[override]
            return _Candidates(next(self.next))

    models = PerFile()
    with AuditStore(sqlite_url) as store:
        plan = plan_jobs([a, b])
        run = AuditedRun.begin(store, command="anonymize", mode=plan.mode, models=models, settings={})
        with contextlib.closing(InProcess(models, Policy())) as executor, run:
            run_plan(plan.items(), executor=executor, run=run)
        rows = {row.path.name: row for row in store.list_files(run.run_id) if row.outcome is not Outcome.PENDING}
    assert rows[a.name].outcome is Outcome.ANONYMIZED and rows[a.name].faces_anonymized == 1
    assert rows[a.name].uncertain == 2
    assert rows[a.name].uncertainty == {
        "faint": [FAINT_SMALL.as_dict(), FAINT_LARGE.as_dict()],
        "faint_candidates": 2,
        "faint_by_size": {"<20": 1, "20-50": 0, ">=50": 1},
        "frames_with_faint": 0,
        "bridged_frames": 0,
        "interpolated_boxes": 0,
    }
    assert (rows[b.name].outcome, rows[b.name].uncertain) == (Outcome.NO_FACES, 0)

    listed = CliRunner().invoke(app, ["audit", "list", "--uncertain", "--json", "--db", sqlite_url])
    assert listed.exit_code == 0, listed.output
    assert [Path(row["path"]).name for row in json.loads(listed.output)] == [a.name]
    assert json.loads(listed.output)[0]["uncertainty"]["faint_candidates"] == 2
    shown = CliRunner().invoke(app, ["audit", "list", "--uncertain", "--db", sqlite_url])
    assert shown.exit_code == 0 and "a.jpg" in shown.output and "b.jpg" not in shown.output


def test_a_videos_faint_candidates_and_bridged_frames_are_counted() -> None:
    tally = FaintTally(_Candidates((SURE, FAINT_SMALL)))
    frame = np.zeros((240, 320, 3), np.uint8)
    for _ in range(3):
        assert tally(frame) == (SURE,)
    tracking = {"frames_covered": 10, "frames_with_detections": 7, "interpolated_boxes": 2}
    uncertainty = tally.uncertainty(VideoStats(frames=10, tracking=tracking))
    assert uncertainty == Uncertainty(
        faint_candidates=3,
        faint_by_size={"<20": 3, "20-50": 0, ">=50": 0},
        frames_with_faint=3,
        bridged_frames=3,
        interpolated_boxes=2,
    )
    assert uncertainty.count == 6 and uncertainty.faint == ()


def test_the_summary_says_how_many_files_are_worth_a_look(capsys: pytest.CaptureFixture[str]) -> None:
    from collections import Counter
    from datetime import UTC, datetime

    summary = RunSummary(RunStatus.COMPLETED, datetime.now(UTC), 3, 0, 1, 1, 0.5)
    print_summary("abcdef0123456789", summary, Counter({Outcome.ANONYMIZED: 3}), uncertain=2)
    out = " ".join(capsys.readouterr().out.split())
    assert "2 files have faint candidates worth a look" in out
    assert "efface audit list --run abcdef012345 --uncertain" in out
