"""Tests for the face recognizers and the rank-1 identification rate.

The real-model tests use LFW faces in ``shared/data/faces-identity`` (research-only: read in place, never copied).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from efface.errors import ConfigurationError
from efface.recognition.recognizers import (
    DlibRecognizer,
    FaceNetRecognizer,
    FaceRecognizer,
    load_recognizers,
    locate_model_file,
    rank1_identification,
)
from efface.records import BBox

FACES_IDENTITY = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces-identity"
PEOPLE_COUNT = 8
IMAGES_PER_PERSON = 4
CLEAN_RANK1_FLOOR = 0.8
BLURRED_RANK1_CEILING = 0.4


def _onehot(*indices: int, dimensions: int = 4) -> np.ndarray:
    return np.eye(dimensions, dtype=np.float32)[list(indices)]


@pytest.mark.parametrize(
    ("gallery", "gallery_labels", "probes", "probe_labels", "expected"),
    [
        pytest.param(_onehot(0, 1), ["a", "b"], _onehot(0, 1), ["a", "b"], 1.0, id="all-right"),
        pytest.param(_onehot(0, 1), ["a", "b"], _onehot(1, 0), ["a", "b"], 0.0, id="all-swapped"),
        pytest.param(_onehot(0, 1), ["a", "b"], _onehot(0, 0, 1, 1), ["a", "a", "b", "a"], 0.75, id="three-of-four"),
        pytest.param(
            _onehot(0, 1, 2), ["a", "b", "nobody"], _onehot(0, 2), ["a", "b"], 0.5, id="distractor-wins-a-probe"
        ),
        pytest.param(_onehot(0, 1, 2, 3), ["x", "a", "y", "b"], _onehot(1, 3), ["a", "b"], 1.0, id="distractors-lose"),
        pytest.param(
            np.array([[2.0, 0.0], [0.0, 0.1]]),
            ["a", "b"],
            np.array([[0.1, 1.0]]),
            ["b"],
            1.0,
            id="cosine-not-dot-product",
        ),
        pytest.param(
            np.array([[1.0, 0.0], [1.0, 0.0]]), ["a", "b"], np.array([[1.0, 0.0]]), ["a"], 1.0, id="tie-first-row"
        ),
        pytest.param(_onehot(0), ["a"], _onehot(0), ["z"], 0.0, id="probe-label-not-in-gallery"),
    ],
)
def test_rank1_identification(
    gallery: np.ndarray, gallery_labels: list[str], probes: np.ndarray, probe_labels: list[str], expected: float
) -> None:
    assert rank1_identification(gallery, gallery_labels, probes, probe_labels) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("gallery", "gallery_labels", "probes", "probe_labels", "message"),
    [
        pytest.param(_onehot(0), ["a"], np.zeros((0, 4)), [], "probes of shape", id="empty-probes"),
        pytest.param(np.zeros((0, 4)), [], _onehot(0), ["a"], "gallery of shape", id="empty-gallery"),
        pytest.param(_onehot(0), ["a"], np.ones((1, 3)), ["a"], "D=4", id="dimension-mismatch"),
        pytest.param(_onehot(0, 1), ["a"], _onehot(0), ["a"], "2 gallery labels", id="gallery-labels-short"),
        pytest.param(_onehot(0), ["a"], _onehot(0, 1), ["a"], "2 probe labels", id="probe-labels-short"),
        pytest.param(np.zeros((1, 4)), ["a"], _onehot(0), ["a"], "non-zero gallery", id="zero-gallery-vector"),
        pytest.param(_onehot(0), ["a"], np.full((1, 4), np.nan), ["a"], "finite non-zero probe", id="nan-probe"),
    ],
)
def test_rank1_identification_rejects(
    gallery: np.ndarray, gallery_labels: list[str], probes: np.ndarray, probe_labels: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        rank1_identification(gallery, gallery_labels, probes, probe_labels)


def test_locate_model_file_missing_distribution_says_how_to_install() -> None:
    with pytest.raises(ConfigurationError, match=r"efface-no-such-distribution.*pip install 'efface\[verify\]'"):
        locate_model_file("efface-no-such-distribution", "model.pb")


def test_locate_model_file_missing_file_in_installed_distribution() -> None:
    with pytest.raises(ConfigurationError, match=r"has no no_such_dir/model\.pb"):
        locate_model_file("efface", "no_such_dir/model.pb")


def test_load_recognizers_rejects_unknown_name() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown face recognizer\(s\) \['arcface'\]"):
        load_recognizers(["arcface"])


def test_facenet_rejects_negative_margin() -> None:
    with pytest.raises(ValueError, match=r"margin_fraction >= 0, got -0\.1"):
        FaceNetRecognizer(margin_fraction=-0.1)


# --- real models ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recognizers() -> dict[str, FaceRecognizer]:
    return {recognizer.name: recognizer for recognizer in load_recognizers()}


@dataclass(frozen=True)
class LabelledFace:
    person: str
    image: np.ndarray
    box: BBox
    is_gallery: bool


@pytest.fixture(scope="module")
def lfw_faces() -> list[LabelledFace]:
    people_dir = FACES_IDENTITY / "people"
    if not people_dir.is_dir():
        pytest.skip(f"needs the LFW identity sample at {FACES_IDENTITY} (research-only, not in the repository)")
    from efface.detection.centerface import CenterFaceDetector

    detector = CenterFaceDetector()
    people = [person for person in sorted(people_dir.iterdir()) if len(list(person.glob("*.jpg"))) >= 3]
    faces = []
    for person in people[:PEOPLE_COUNT]:
        for index, path in enumerate(sorted(person.glob("*.jpg"))[:IMAGES_PER_PERSON]):
            with Image.open(path) as decoded:
                image = np.asarray(decoded.convert("RGB"))
            detections = detector.detect(image)
            assert detections, f"CenterFace found no face in {path}"
            box = max(detections, key=lambda face: face.box.area).box
            faces.append(LabelledFace(person.name, image, box, is_gallery=index == 0))
    assert len({face.person for face in faces}) == PEOPLE_COUNT
    return faces


def _blur_box(image: np.ndarray, box: BBox) -> np.ndarray:
    """A strong Gaussian blur (sigma = box width / 4) of the box region."""
    x1, y1, x2, y2 = (round(v) for v in (box.x1, box.y1, box.x2, box.y2))
    blurred = image.copy()
    blurred[y1:y2, x1:x2] = cv2.GaussianBlur(image[y1:y2, x1:x2], (0, 0), sigmaX=box.width / 4)
    return blurred


def _rank1(recognizer: FaceRecognizer, faces: list[LabelledFace], *, is_blurred: bool) -> float:
    def embed(face: LabelledFace) -> np.ndarray:
        image = _blur_box(face.image, face.box) if is_blurred else face.image
        return recognizer.embed(image, face.box)

    gallery = [face for face in faces if face.is_gallery]
    probes = [face for face in faces if not face.is_gallery]
    return rank1_identification(
        np.stack([embed(face) for face in gallery]),
        [face.person for face in gallery],
        np.stack([embed(face) for face in probes]),
        [face.person for face in probes],
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dlib", "facenet"])
def test_recognizer_identifies_clean_faces_and_not_blurred_ones(
    recognizers: dict[str, FaceRecognizer], lfw_faces: list[LabelledFace], name: str
) -> None:
    recognizer = recognizers[name]
    clean = _rank1(recognizer, lfw_faces, is_blurred=False)
    blurred = _rank1(recognizer, lfw_faces, is_blurred=True)
    assert clean >= CLEAN_RANK1_FLOOR, f"{name} rank-1 on clean faces"
    assert blurred <= BLURRED_RANK1_CEILING, f"{name} rank-1 on blurred faces (clean {clean:.2f})"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dimensions"), [("dlib", 128), ("facenet", 512)])
def test_embedding_is_unit_float32_of_model_dimension(
    recognizers: dict[str, FaceRecognizer], lfw_faces: list[LabelledFace], name: str, dimensions: int
) -> None:
    recognizer = recognizers[name]
    face = lfw_faces[0]
    embedding = recognizer.embed(face.image, face.box)
    assert isinstance(recognizer, FaceRecognizer)
    assert recognizer.dimensions == dimensions
    assert embedding.shape == (dimensions,)
    assert embedding.dtype == np.float32
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dlib", "facenet"])
def test_embed_batch_matches_embed(
    recognizers: dict[str, FaceRecognizer], lfw_faces: list[LabelledFace], name: str
) -> None:
    recognizer = recognizers[name]
    assert isinstance(recognizer, FaceNetRecognizer | DlibRecognizer)
    pairs = [(face.image, face.box) for face in lfw_faces[:3]]
    batch = recognizer.embed_batch(pairs)
    single = np.stack([recognizer.embed(image, box) for image, box in pairs])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert recognizer.embed_batch([]).shape == (0, recognizer.dimensions)


@pytest.mark.slow
def test_facenet_crop_is_160px_rgb_and_clipped_at_the_border(recognizers: dict[str, FaceRecognizer]) -> None:
    recognizer = recognizers["facenet"]
    assert isinstance(recognizer, FaceNetRecognizer)
    image = np.zeros((100, 80, 3), dtype=np.uint8)
    image[..., 0] = 200  # red, to catch a silent RGB/BGR swap
    crop = recognizer.crop(image, BBox(-10.0, -10.0, 40.0, 50.0))
    assert crop.shape == (160, 160, 3)
    assert (crop[..., 0] == 200).all() and (crop[..., 2] == 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dlib", "facenet"])
@pytest.mark.parametrize(
    "box",
    [
        pytest.param(BBox(200.0, 200.0, 260.0, 260.0), id="outside-right-bottom"),
        pytest.param(BBox(-50.0, -50.0, -1.0, -1.0), id="outside-left-top"),
        pytest.param(BBox(10.0, 10.0, 10.0, 40.0), id="zero-width"),
        pytest.param(BBox(10.2, 10.2, 10.6, 10.6), id="sub-pixel"),
    ],
)
def test_degenerate_box_raises_value_error(recognizers: dict[str, FaceRecognizer], name: str, box: BBox) -> None:
    image = np.zeros((120, 100, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="expected a face box overlapping the 100x120 image"):
        recognizers[name].embed(image, box)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dlib", "facenet"])
def test_non_rgb_image_raises_value_error(recognizers: dict[str, FaceRecognizer], name: str) -> None:
    with pytest.raises(ValueError, match=r"expected an RGB uint8 image of shape \(H, W, 3\), got shape=\(20, 20\)"):
        recognizers[name].embed(np.zeros((20, 20), dtype=np.uint8), BBox(0.0, 0.0, 10.0, 10.0))


def test_per_identity_rank1_scores_a_constant_answer_at_chance() -> None:
    # Every probe embeds alike and lands on person "a": micro rank-1 credits a's 3 probes of 5,
    # macro rank-1 is 1 of 3 identities, exactly chance.
    gallery = np.eye(3, dtype=np.float32)
    probes = np.tile(np.array([[1.0, 0.1, 0.0]], np.float32), (5, 1))
    labels = ["a", "a", "a", "b", "c"]
    assert rank1_identification(gallery, ["a", "b", "c"], probes, labels) == pytest.approx(0.6)
    assert rank1_identification(gallery, ["a", "b", "c"], probes, labels, is_per_identity=True) == pytest.approx(1 / 3)
