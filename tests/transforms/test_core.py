from __future__ import annotations

import cv2
import numpy as np
import pytest

from efface.detection.centerface import CenterFaceDetector
from efface.errors import WeakTransformError
from efface.records import BBox, Face, MaskShape, Method, TransformSpec
from efface.transforms import Anonymizer


def _laplacian_var(image: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TransformSpec(method=Method.BLUR, blur_kernel_fraction=0.05), "below the floor"),
        (TransformSpec(method=Method.BLUR, blur_kernel_fraction=0.099), "below the floor"),
        (TransformSpec(method=Method.PIXELATE, pixelate_blocks=11), "finer than the floor"),
        (TransformSpec(method=Method.PIXELATE, pixelate_blocks=64), "finer than the floor"),
        (
            TransformSpec(method=Method.FILL, blur_kernel_fraction=0.01),
            "below the floor",
        ),  # refused whatever the method
    ],
)
def test_below_floor_strength_is_refused(spec: TransformSpec, message: str) -> None:
    with pytest.raises(WeakTransformError, match=message):
        Anonymizer(spec)


@pytest.mark.parametrize(
    "spec",
    [
        TransformSpec(method=Method.BLUR, blur_kernel_fraction=0.1),
        TransformSpec(method=Method.PIXELATE, pixelate_blocks=10),
        TransformSpec(method=Method.FILL),
    ],
)
def test_at_floor_strength_is_accepted(spec: TransformSpec) -> None:
    Anonymizer(spec)


@pytest.fixture(scope="module")
def astronaut_face(astronaut: np.ndarray) -> Face:
    (face,) = CenterFaceDetector().detect(astronaut)
    return face


def _inner(face: Face) -> tuple[slice, slice]:
    """The central 60 % of the face box: eyes, nose and mouth."""
    inner = face.box.scaled(0.6)
    return slice(int(inner.y1), int(inner.y2)), slice(int(inner.x1), int(inner.x2))


@pytest.mark.parametrize("method", [Method.BLUR, Method.FILL])
@pytest.mark.parametrize("mask_shape", list(MaskShape))
def test_real_face_detail_drops_by_90_percent(
    astronaut: np.ndarray, astronaut_face: Face, method: Method, mask_shape: MaskShape
) -> None:
    out, count = Anonymizer(TransformSpec(method=method, mask_shape=mask_shape)).apply(astronaut, (astronaut_face,))
    assert count == 1
    inner = _inner(astronaut_face)
    before, after = _laplacian_var(astronaut[inner]), _laplacian_var(out[inner])
    assert after < 0.1 * before, f"face detail only fell from {before:.0f} to {after:.0f}"


@pytest.mark.parametrize("mask_shape", list(MaskShape))
def test_pixelated_face_holds_only_a_few_cells(
    astronaut: np.ndarray, astronaut_face: Face, mask_shape: MaskShape
) -> None:
    blocks = 6
    spec = TransformSpec(method=Method.PIXELATE, pixelate_blocks=blocks, mask_shape=mask_shape)
    out, _ = Anonymizer(spec).apply(astronaut, (astronaut_face,))
    inner = _inner(astronaut_face)
    colours = np.unique(out[inner].reshape(-1, 3), axis=0)
    assert len(colours) <= (blocks + 1) ** 2
    assert len(np.unique(astronaut[inner].reshape(-1, 3), axis=0)) > 50 * len(colours)


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("mask_shape", list(MaskShape))
def test_pixels_outside_the_region_are_unchanged(
    astronaut: np.ndarray, astronaut_face: Face, method: Method, mask_shape: MaskShape
) -> None:
    anonymizer = Anonymizer(TransformSpec(method=method, mask_shape=mask_shape))
    out, _ = anonymizer.apply(astronaut, (astronaut_face,))
    region = anonymizer.region_for(astronaut_face)
    far = np.ones(astronaut.shape[:2], bool)
    far[max(0, int(region.y1) - 1) : int(region.y2) + 2, max(0, int(region.x1) - 1) : int(region.x2) + 2] = False
    assert (out[far] == astronaut[far]).all()
    assert not (out[~far] == astronaut[~far]).all()


def test_input_image_is_not_modified(astronaut: np.ndarray) -> None:
    copy = astronaut.copy()
    Anonymizer(TransformSpec()).apply(astronaut, (Face(BBox(180, 55, 270, 180), 0.9),))
    assert (astronaut == copy).all()


@pytest.mark.parametrize(
    "box",
    [
        BBox(600, 600, 700, 700),  # outside the frame
        BBox(-100, -100, -10, -10),
        BBox(10, 10, 10, 10),  # zero size
        BBox(10.2, 10.2, 10.4, 10.4),  # under a pixel
    ],
)
def test_degenerate_boxes_are_skipped_without_crash(box: BBox) -> None:
    image = np.full((100, 100, 3), 128, np.uint8)
    out, count = Anonymizer(TransformSpec()).apply(image, (Face(box, 0.9),))
    assert count == 0
    assert (out == image).all()


def test_box_on_the_edge_is_clipped_and_counted() -> None:
    image = np.random.default_rng(1).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    out, count = Anonymizer(TransformSpec(method=Method.FILL)).apply(image, (Face(BBox(80, 80, 130, 130), 0.9),))
    assert count == 1
    assert (out[99, 99] == 0).all() and (out[0, 0] == image[0, 0]).all()


def test_region_grows_with_box_scale() -> None:
    face = Face(BBox(40, 40, 60, 60), 0.9)
    image = np.full((100, 100, 3), 200, np.uint8)
    small, _ = Anonymizer(TransformSpec(method=Method.FILL, box_scale=1.0)).apply(image, (face,))
    large, _ = Anonymizer(TransformSpec(method=Method.FILL, box_scale=2.0)).apply(image, (face,))
    assert (large == 0).all(axis=2).sum() > 3.5 * (small == 0).all(axis=2).sum()


@pytest.mark.parametrize("mask_shape", list(MaskShape))
def test_region_mask_is_exactly_what_apply_changes(mask_shape: MaskShape) -> None:
    image = np.full((120, 160, 3), 77, np.uint8)
    faces = (Face(BBox(10, 10, 50, 60), 0.9), Face(BBox(140, 90, 175, 130), 0.8), Face(BBox(5, 5, 5, 5), 0.7))
    anonymizer = Anonymizer(TransformSpec(method=Method.FILL, fill_rgb=(1, 2, 3), mask_shape=mask_shape))
    out, count = anonymizer.apply(image, faces)
    changed = (out != image).any(axis=2)
    assert count == 2
    assert (anonymizer.region_mask(120, 160, faces) == changed).all()
