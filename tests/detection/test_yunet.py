"""YuNet: pure decoding on hand-made output tensors, then the real model (when ../shared has it) on a real face."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from efface.detection.base import FaceDetector
from efface.detection.centerface import CenterFaceDetector, centerface_model_path
from efface.detection.yunet import YUNET_OUTPUT_NAMES, YuNetDetector, decode_yunet
from efface.errors import ConfigurationError, ModelError
from efface.records import BBox

YUNET_MODEL = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "yunet_n_dynamic.onnx"
INPUT_HW = (64, 96)
CHANNELS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
# Landmark offsets in cells, the same for every test prior: (0, 0), (1, 1), (-1, 2), (0.5, 0.5), (2, -1).
KPS_CELLS = [0.0, 0.0, 1.0, 1.0, -1.0, 2.0, 0.5, 0.5, 2.0, -1.0]
# Box offsets in cells: centre (+0.5, -0.25) from the prior, width e^ln2 = 2 cells, height e^0 = 1 cell.
BBOX_CELLS = [0.5, -0.25, np.log(2.0), 0.0]


def silent_outputs(input_hw: tuple[int, int] = INPUT_HW) -> dict[str, np.ndarray]:
    """All twelve outputs for an input of ``input_hw``, every cell scoring 0."""
    height, width = input_hw
    return {
        f"{head}_{stride}": np.zeros((1, (height // stride) * (width // stride), channels), np.float32)
        for head, channels in CHANNELS.items()
        for stride in (8, 16, 32)
    }


def set_prior(
    outputs: dict[str, np.ndarray], *, stride: int, row: int, col: int, cls: float = 0.81, obj: float = 1.0
) -> None:
    cols = INPUT_HW[1] // stride
    index = row * cols + col
    outputs[f"cls_{stride}"][0, index, 0] = cls
    outputs[f"obj_{stride}"][0, index, 0] = obj
    outputs[f"bbox_{stride}"][0, index] = BBOX_CELLS
    outputs[f"kps_{stride}"][0, index] = KPS_CELLS


# Worked by hand: prior = (col * s, row * s); centre = prior + (0.5 s, -0.25 s); size = (2 s, s);
# landmark = prior + offset * s.
@pytest.mark.parametrize(
    ("stride", "row", "col", "box_xyxy", "landmarks_xy"),
    [
        (8, 3, 5, (36, 18, 52, 26), [(40, 24), (48, 32), (32, 40), (44, 28), (56, 16)]),
        (16, 1, 2, (24, 4, 56, 20), [(32, 16), (48, 32), (16, 48), (40, 24), (64, 0)]),
        (32, 1, 2, (48, 8, 112, 40), [(64, 32), (96, 64), (32, 96), (80, 48), (128, 0)]),
    ],
)
def test_decodes_one_prior_at_each_stride(
    stride: int, row: int, col: int, box_xyxy: tuple[float, ...], landmarks_xy: list[tuple[float, float]]
) -> None:
    outputs = silent_outputs()
    set_prior(outputs, stride=stride, row=row, col=col)
    raw = decode_yunet(outputs, input_hw=INPUT_HW, score_threshold=0.5)
    assert len(raw) == 1
    np.testing.assert_allclose(raw.boxes_xyxy[0], box_xyxy, atol=1e-4)
    np.testing.assert_allclose(raw.landmarks_xy[0], landmarks_xy, atol=1e-4)
    np.testing.assert_allclose(raw.scores[0], 0.9, atol=1e-6)  # sqrt(0.81 * 1.0)


@pytest.mark.parametrize(
    ("cls", "obj", "score"),
    [(0.81, 1.0, 0.9), (0.25, 0.25, 0.25), (1.5, 0.49, 0.7), (0.64, 1.2, 0.8)],  # clipped to [0, 1] first
)
def test_score_is_the_geometric_mean_of_clipped_cls_and_obj(cls: float, obj: float, score: float) -> None:
    outputs = silent_outputs()
    set_prior(outputs, stride=16, row=0, col=0, cls=cls, obj=obj)
    raw = decode_yunet(outputs, input_hw=INPUT_HW, score_threshold=0.1)
    np.testing.assert_allclose(raw.scores, [score], atol=1e-6)


def test_priors_from_every_stride_come_out_together() -> None:
    outputs = silent_outputs()
    for stride in (8, 16, 32):
        set_prior(outputs, stride=stride, row=1, col=2)
    raw = decode_yunet(outputs, input_hw=INPUT_HW, score_threshold=0.5)
    np.testing.assert_allclose(raw.boxes_xyxy[:, 0], [16 + 4 - 8, 32 + 8 - 16, 64 + 16 - 32], atol=1e-4)


@pytest.mark.parametrize(
    ("cls", "obj"),
    [(0.0, 0.0), (0.2, 0.2), (-3.0, 1.0), (float("nan"), 1.0)],
)
def test_nothing_at_or_above_threshold_is_empty(cls: float, obj: float) -> None:
    outputs = silent_outputs()
    set_prior(outputs, stride=8, row=0, col=0, cls=cls, obj=obj)
    raw = decode_yunet(outputs, input_hw=INPUT_HW, score_threshold=0.5)
    assert len(raw) == 0
    assert raw.boxes_xyxy.shape == (0, 4) and raw.landmarks_xy.shape == (0, 5, 2)


def test_a_huge_log_size_stays_finite() -> None:
    outputs = silent_outputs()
    set_prior(outputs, stride=32, row=0, col=0)
    outputs["bbox_32"][0, 0, 2:] = 1e4
    raw = decode_yunet(outputs, input_hw=INPUT_HW, score_threshold=0.5)
    assert np.isfinite(raw.boxes_xyxy).all()


def test_a_missing_output_is_named() -> None:
    outputs = silent_outputs()
    del outputs["kps_16"]
    with pytest.raises(ValueError, match="kps_16"):
        decode_yunet(outputs, input_hw=INPUT_HW, score_threshold=0.5)


def test_an_output_of_the_wrong_size_says_expected_and_actual() -> None:
    outputs = silent_outputs(input_hw=(64, 64))
    with pytest.raises(ValueError, match=r"cls_8.*\(1, 96, 1\).*\(1, 64, 1\)"):
        decode_yunet(outputs, input_hw=INPUT_HW, score_threshold=0.5)


@pytest.mark.parametrize("input_hw", [(0, 32), (48, 64), (64, 100)])
def test_input_size_must_be_a_multiple_of_32(input_hw: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        decode_yunet(silent_outputs(), input_hw=input_hw, score_threshold=0.5)


# --- the real model -------------------------------------------------------------------------------------------

needs_model = pytest.mark.skipif(not YUNET_MODEL.is_file(), reason=f"YuNet model not found at {YUNET_MODEL}")


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    if not YUNET_MODEL.is_file():
        pytest.skip(f"YuNet model not found at {YUNET_MODEL}")
    return YuNetDetector(YUNET_MODEL)


@pytest.mark.slow
def test_finds_the_astronauts_face_where_centerface_does(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    assert isinstance(detector, FaceDetector)
    assert detector.name == "yunet" and len(detector.weights_sha256) == 64
    (face,) = detector.detect(astronaut)
    (reference,) = CenterFaceDetector().detect(astronaut)
    assert face.score > 0.8
    assert face.box.iou(reference.box) > 0.5
    assert all(face.box.x1 < x < face.box.x2 and face.box.y1 < y < face.box.y2 for x, y in face.landmarks_xy)
    (left_eye_x, left_eye_y), (right_eye_x, _), (_, nose_y), (_, mouth_y), _ = face.landmarks_xy
    assert left_eye_x < right_eye_x and left_eye_y < nose_y < mouth_y


@pytest.mark.slow
@pytest.mark.parametrize("crop", [np.s_[:, :], np.s_[17:400, 45:333]])
def test_agrees_with_opencvs_reference_decoder(detector: YuNetDetector, astronaut: np.ndarray, crop: tuple) -> None:
    """OpenCV's FaceDetectorYN runs the same file with its own pre- and post-processing."""
    if not hasattr(cv2, "FaceDetectorYN"):
        pytest.skip(f"OpenCV {cv2.__version__} has no FaceDetectorYN")
    image = np.ascontiguousarray(astronaut[crop])
    height, width = image.shape[:2]
    try:
        reference = cv2.FaceDetectorYN.create(str(YUNET_MODEL), "", (width, height), 0.5, 0.3, 5000)
        _, rows = reference.detect(np.ascontiguousarray(image[:, :, ::-1]))
    except cv2.error as exc:
        pytest.skip(f"OpenCV {cv2.__version__} cannot run this YuNet file: {exc}")
    (expected,) = rows
    (face,) = detector.detect(image)
    x, y, w, h = expected[:4]
    np.testing.assert_allclose(face.box.xyxy, (x, y, x + w, y + h), atol=0.01)
    np.testing.assert_allclose(face.landmarks_xy, expected[4:14].reshape(5, 2), atol=0.01)
    assert face.score == pytest.approx(float(expected[14]), abs=1e-4)


@pytest.mark.slow
def test_finds_the_face_in_a_non_multiple_of_32_crop_at_original_coordinates(
    detector: YuNetDetector, astronaut: np.ndarray
) -> None:
    crop = np.ascontiguousarray(astronaut[17:400, 45:333])  # 383x288: padded, then mapped back
    (face,) = detector.detect(crop)
    (full,) = detector.detect(astronaut)
    np.testing.assert_allclose(np.asarray(face.box.xyxy) + np.array([45, 17, 45, 17]), full.box.xyxy, atol=4.0)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1, 3), (31, 45, 3), (97, 33, 3)])
def test_tiny_and_odd_sizes_do_not_crash(detector: YuNetDetector, shape: tuple[int, int, int]) -> None:
    assert detector.detect(np.zeros(shape, np.uint8)) == ()


@pytest.mark.slow
def test_downscaled_pass_maps_back_to_original_pixels(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    (face,) = YuNetDetector(YUNET_MODEL, input_scale=0.5).detect(astronaut)
    (full,) = detector.detect(astronaut)
    assert face.box.iou(full.box) > 0.8
    raw = detector.detect_raw(astronaut, input_scale=0.5)
    assert raw.boxes_xyxy.shape == (1, 4) and BBox(*raw.boxes_xyxy[0].tolist()).iou(full.box) > 0.8


def test_rejects_non_rgb_input(detector: YuNetDetector) -> None:
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_a_missing_model_file_is_a_model_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-yunet.onnx"
    with pytest.raises(ModelError, match="not found") as caught:
        YuNetDetector(missing)
    assert caught.value.path == missing and str(missing) in str(caught.value)


def test_a_broken_model_file_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="cannot load") as caught:
        YuNetDetector(broken)
    assert caught.value.path == broken


def test_a_model_with_other_outputs_is_a_one_line_model_error() -> None:
    with pytest.raises(ModelError, match=r"not a YuNet model: expected outputs") as caught:
        YuNetDetector(centerface_model_path())
    assert "\n" not in str(caught.value)
    assert all(name in str(caught.value) for name in YUNET_OUTPUT_NAMES)


@needs_model
def test_unknown_provider_lists_the_available_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"available: .*CPUExecutionProvider"):
        YuNetDetector(YUNET_MODEL, providers=("NoSuchExecutionProvider",))


@pytest.mark.parametrize(
    ("threshold", "iou", "scale"), [(0.0, 0.3, 1.0), (1.0, 0.3, 1.0), (0.5, 0.0, 1.0), (0.5, 1.5, 1.0), (0.5, 0.3, 0)]
)
def test_rejects_bad_settings_before_touching_the_file(threshold: float, iou: float, scale: float) -> None:
    with pytest.raises(ConfigurationError):
        YuNetDetector(Path("/no/such/yunet.onnx"), score_threshold=threshold, nms_iou=iou, input_scale=scale)
