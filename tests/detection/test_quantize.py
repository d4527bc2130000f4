"""The int8 CenterFace model: built from the fp32 weights on pictures that ship with scikit-image, it finds the
faces fp32 finds, and the same inputs always build the same bytes."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from efface.detection.centerface import CenterFaceDetector, centerface_model_path
from efface.detection.quantize import calibration_feeds, quantize_centerface
from efface.detection.weights import cached_int8_path
from efface.records import Face, Precision

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _group_photo() -> np.ndarray:
    """The bundled sample's group photo (five faces, 48-384 px), from examples/make_sample.py."""
    spec = importlib.util.spec_from_file_location("make_sample", EXAMPLES / "make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return np.asarray(module.group_photo())


@pytest.fixture(scope="module")
def detectors(int8_cache: Path) -> tuple[CenterFaceDetector, CenterFaceDetector]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EFFACE_CACHE_DIR", str(int8_cache))
        int8 = CenterFaceDetector(precision=Precision.INT8)
    return CenterFaceDetector(), int8


def _matched(fp32: tuple[Face, ...], int8: tuple[Face, ...]) -> list[float]:
    """For each fp32 face, the best box IoU of an int8 face."""
    return [max((face.box.iou(other.box) for other in int8), default=0.0) for face in fp32]


def test_calibration_feeds_are_the_default_presets_inputs_and_always_the_same() -> None:
    shapes = [tensor.shape for tensor in calibration_feeds()]
    # The astronaut whole at 1 and 0.5; each of 15 composed pictures whole at 1 and 0.5, then its focus tiles.
    assert shapes[:2] == [(1, 3, 512, 512), (1, 3, 256, 256)]
    whole = [shape for shape in shapes[2:] if shape[0] == 1 and shape[2:] != (320, 320)]
    tiles = [shape for shape in shapes[2:] if shape[2:] == (320, 320)]
    assert whole.count((1, 3, 768, 1024)) == 15 and whole.count((1, 3, 384, 512)) == 15
    assert len(whole) == 30 and tiles and all(1 <= shape[0] <= 6 for shape in tiles)
    for first, again in zip(calibration_feeds(), calibration_feeds(), strict=True):
        np.testing.assert_array_equal(first, again)
        assert float(first.min()) >= 0 and float(first.max()) <= 255


@pytest.mark.slow
def test_int8_finds_the_astronauts_face_where_fp32_does(
    detectors: tuple[CenterFaceDetector, CenterFaceDetector], astronaut: np.ndarray
) -> None:
    fp32, int8 = detectors
    found = int8.detect(astronaut)
    assert len(found) == 1 and found[0].score > 0.8
    assert min(_matched(fp32.detect(astronaut), found)) >= 0.8
    assert int8.name == "centerface-int8" and fp32.name == "centerface"
    assert int8.weights_sha256 != fp32.weights_sha256 and len(int8.weights_sha256) == 64


@pytest.mark.slow
def test_int8_finds_every_face_of_the_bundled_sample(detectors: tuple[CenterFaceDetector, CenterFaceDetector]) -> None:
    fp32, int8 = detectors
    photo = _group_photo()
    reference, found = fp32.detect(photo), int8.detect(photo)
    assert len(reference) == 5 and len(found) == 5
    assert min(_matched(reference, found)) >= 0.8


@pytest.mark.slow
def test_the_build_is_deterministic(int8_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFACE_CACHE_DIR", str(int8_cache))
    cached = cached_int8_path(centerface_model_path()).read_bytes()
    rebuilt = quantize_centerface(centerface_model_path())
    assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(cached).hexdigest()


def test_unreadable_fp32_weights_are_a_model_error(tmp_path: Path) -> None:
    from efface.errors import ModelError

    broken = tmp_path / "centerface.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot read ONNX model"):
        quantize_centerface(broken)
