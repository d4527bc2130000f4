from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from efface.records import (
    AnonymizationResult,
    BBox,
    Face,
    MaskShape,
    Method,
    Outcome,
    TransformSpec,
    VideoStats,
    WriteMode,
)


@pytest.mark.parametrize(
    "xyxy",
    [(0, 0, -1, 5), (0, 5, 5, 0), (math.nan, 0, 1, 1), (0, 0, math.inf, 1)],
)
def test_bbox_rejects_invalid(xyxy: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="BBox"):
        BBox(*xyxy)


def test_bbox_geometry() -> None:
    box = BBox(10, 20, 30, 60)
    assert (box.width, box.height, box.area, box.center_xy) == (20, 40, 800, (20, 40))
    assert box.scaled(1.5).xyxy == (5, 10, 35, 70)
    assert BBox(0, 0, 0, 0).area == 0  # zero-size boxes are valid records; consumers skip them


@pytest.mark.parametrize(
    ("box", "size_wh", "expected"),
    [
        (BBox(-5, -5, 10, 10), (100, 100), (0, 0, 10, 10)),
        (BBox(90, 90, 120, 130), (100, 100), (90, 90, 100, 100)),
        (BBox(200, 200, 300, 300), (100, 100), (100, 100, 100, 100)),  # outside: empty
        (BBox(-50, -50, -10, -10), (100, 100), (0, 0, 0, 0)),
    ],
)
def test_bbox_clipped(box: BBox, size_wh: tuple[int, int], expected: tuple[float, ...]) -> None:
    assert box.clipped(*size_wh).xyxy == expected


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        (BBox(0, 0, 10, 10), BBox(0, 0, 10, 10), 1.0),
        (BBox(0, 0, 10, 10), BBox(5, 0, 15, 10), 50 / 150),
        (BBox(0, 0, 10, 10), BBox(20, 20, 30, 30), 0.0),
        (BBox(0, 0, 0, 0), BBox(0, 0, 0, 0), 0.0),
    ],
)
def test_bbox_iou(a: BBox, b: BBox, iou: float) -> None:
    assert a.iou(b) == pytest.approx(iou)


@pytest.mark.parametrize("factor", [0, -1, math.nan])
def test_bbox_scaled_rejects_bad_factor(factor: float) -> None:
    with pytest.raises(ValueError, match="scale factor"):
        BBox(0, 0, 1, 1).scaled(factor)


def test_face_validates_score_and_landmarks() -> None:
    with pytest.raises(ValueError, match=r"score must be in \[0, 1\], got 1.5"):
        Face(BBox(0, 0, 1, 1), 1.5)
    with pytest.raises(ValueError, match="0 or 5 landmarks, got 2"):
        Face(BBox(0, 0, 1, 1), 0.5, ((0, 0), (1, 1)))


def test_transform_spec_coerces_strings_and_validates() -> None:
    spec = TransformSpec(method="pixelate", mask_shape="rectangle")  # type: ignore[arg-type]
    assert spec.method is Method.PIXELATE and spec.mask_shape is MaskShape.RECTANGLE
    with pytest.raises(ValueError, match="box_scale must be in"):
        TransformSpec(box_scale=0.9)
    with pytest.raises(ValueError, match="fill_rgb"):
        TransformSpec(fill_rgb=(0, 0, 300))
    with pytest.raises(ValueError, match="smudge"):  # an unknown method name
        TransformSpec(method="smudge")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "request_id", "is_valid"),
    [
        (Path("a.jpg"), None, True),
        (None, "0123456789abcdef0123456789abcdef", True),
        (None, None, False),
        (Path("a.jpg"), "0123456789abcdef0123456789abcdef", False),
    ],
    ids=["file", "request", "neither", "both"],
)
def test_result_is_a_file_or_a_request(path: Path | None, request_id: str | None, is_valid: bool) -> None:
    def make() -> AnonymizationResult:
        return AnonymizationResult(
            path, Outcome.NO_FACES, WriteMode.RESPONSE, datetime.now(UTC), 0.0, request_id=request_id
        )

    if is_valid:
        assert (make().path, make().request_id) == (path, request_id)
    else:
        with pytest.raises(ValueError, match=r"a path .* or a request_id"):
            make()


def test_result_consistency_checks() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="error_class must be set"):
        AnonymizationResult(
            path=Path("a"), outcome=Outcome.ERROR, mode=WriteMode.IN_PLACE, started_at=now, duration_s=0
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        AnonymizationResult(
            path=Path("a"), outcome=Outcome.NO_FACES, mode=WriteMode.IN_PLACE, started_at=datetime.now(), duration_s=0
        )
    with pytest.raises(ValueError, match="cannot exceed"):
        AnonymizationResult(
            path=Path("a"),
            outcome=Outcome.ANONYMIZED,
            mode=WriteMode.IN_PLACE,
            started_at=now,
            duration_s=0,
            faces_anonymized=1,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": -1}, "counts must be >= 0, got {'frames': -1}"),
        ({"frames": 2, "detections": -3}, "counts must be >= 0, got {'detections': -3}"),
        ({"frames": 2, "frames_detected": 3}, "frames_detected (3) and frames_with_faces (0) must be <= frames (2)"),
        ({"frames": 2, "frames_with_faces": 3}, "frames_detected (0) and frames_with_faces (3) must be <= frames (2)"),
        ({"frames": 2, "regions_per_frame_min": 2, "regions_per_frame_max": 1}, "got min=2 max=1"),
        ({"frames": 2, "regions_per_frame_min": -1}, "got min=-1 max=0"),
    ],
)
def test_video_stats_refuse_impossible_counts(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        VideoStats(**kwargs)  # type: ignore[arg-type]


def test_video_stats_as_dict_keeps_the_keys_audit_rows_and_the_cli_read() -> None:
    stats = VideoStats(
        frames=4,
        frames_detected=4,
        detections=3,
        regions=5,
        frames_with_faces=3,
        regions_per_frame_max=2,
        encoder="libx264",
        crf=18,
        pixel_format="yuv420p",
        is_vfr=True,
        dropped_streams=("stream #2 (data, none): data and attachments are not copied",),
    )

    assert stats.as_dict() == {
        "frames": 4,
        "frames_detected": 4,
        "detections": 3,
        "regions": 5,
        "frames_with_faces": 3,
        "regions_per_frame": {"min": 0, "mean": 1.25, "max": 2},
        "encoder": "libx264",
        "crf": 18,
        "duration_s": None,
        "fps": None,
        "copied_streams": 0,
        "tracking": {},
    }
