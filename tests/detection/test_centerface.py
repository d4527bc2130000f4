"""The real CenterFace model on a real face."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from efface.detection.centerface import CENTERFACE_SHA256, CenterFaceDetector, centerface_model_path
from efface.errors import ConfigurationError, ModelError


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector()


def test_the_model_ships_inside_efface_with_its_licence_and_is_the_published_one() -> None:
    path = centerface_model_path()
    assert path.name == "centerface.onnx" and path.parent.name == "detection" and "efface" in path.parts
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CENTERFACE_SHA256
    notice = (path.parent / "CENTERFACE-LICENSE").read_text()
    assert "MIT License" in notice and "Permission is hereby granted" in notice and CENTERFACE_SHA256 in notice


def test_finds_the_astronauts_face(detector: CenterFaceDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    # Her face lies around x 180-270, y 55-180 in the 512x512 picture.
    assert face.box.iou(type(face.box)(180, 55, 270, 180)) > 0.7
    left_eye, right_eye = face.landmarks_xy[0], face.landmarks_xy[1]
    assert face.box.x1 < left_eye[0] < right_eye[0] < face.box.x2
    assert detector.weights_sha256 and len(detector.weights_sha256) == 64


@pytest.mark.parametrize("shape", [(1, 1, 3), (31, 45, 3), (97, 33, 3)])
def test_tiny_and_odd_sizes_do_not_crash(detector: CenterFaceDetector, shape: tuple[int, int, int]) -> None:
    assert detector.detect(np.zeros(shape, np.uint8)) == ()


def test_finds_the_face_in_a_non_multiple_of_32_crop_at_original_coordinates(
    detector: CenterFaceDetector, astronaut: np.ndarray
) -> None:
    crop = np.ascontiguousarray(astronaut[17:400, 45:333])  # 383x288: padded, then mapped back
    (face,) = detector.detect(crop)
    (full,) = detector.detect(astronaut)
    np.testing.assert_allclose(np.asarray(face.box.xyxy) + np.array([45, 17, 45, 17]), full.box.xyxy, atol=4.0)


def test_downscaled_pass_maps_back_to_original_pixels(astronaut: np.ndarray) -> None:
    half = CenterFaceDetector(input_scale=0.5)
    (face,) = half.detect(astronaut)
    (full,) = CenterFaceDetector().detect(astronaut)
    assert face.box.iou(full.box) > 0.8


def test_rejects_non_rgb_input(detector: CenterFaceDetector) -> None:
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_unknown_provider_lists_the_available_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"available: .*CPUExecutionProvider"):
        CenterFaceDetector(providers=("NoSuchExecutionProvider",))


@pytest.mark.parametrize(("threshold", "iou"), [(0.0, 0.3), (1.0, 0.3), (0.5, 0.0), (0.5, 1.5)])
def test_rejects_bad_thresholds(threshold: float, iou: float) -> None:
    with pytest.raises(ConfigurationError):
        CenterFaceDetector(score_threshold=threshold, nms_iou=iou)


def test_a_broken_model_file_is_a_model_error(tmp_path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="cannot read ONNX model"):
        CenterFaceDetector(broken)
