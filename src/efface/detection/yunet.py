"""YuNet (ShiqiYu/libfacedetection.train, Apache-2.0) on onnxruntime, from a user-supplied ONNX file.

efface ships no YuNet weights: the detector is built from a path the user gives, and nothing here reads
a file before ``YuNetDetector`` is constructed.

The network is anchor-free. For each stride ``s`` in (8, 16, 32) it predicts, per grid cell in row-major
order, a class probability ``cls_s`` (N, 1), an objectness ``obj_s`` (N, 1), a box ``bbox_s`` (N, 4: centre
offset in cells, log size in cells) and five landmarks ``kps_s`` (N, 10: x, y offsets in cells), each
output shaped (1, N, C) with N = (H / s) * (W / s). ``decode_yunet`` turns them into boxes; it follows
OpenCV's ``FaceDetectorYN::postProcess`` (modules/objdetect/src/face_detect.cpp) and the training head's
``_bbox_decode`` / ``_kps_decode`` (mmdet/models/dense_heads/yunet_head.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from efface.arrays import ImageArray
from efface.detection._onnx import check_detector_settings, create_session, file_sha256, run_options_for
from efface.detection.postprocess import (
    RawDetections,
    check_image,
    detect_tiled,
    nms,
    padded_size,
    to_faces,
    to_original_pixels,
)
from efface.errors import ModelError
from efface.records import Face

__all__ = ["YUNET_OUTPUT_NAMES", "YUNET_STRIDES", "YuNetDetector", "decode_yunet"]

MODEL_NAME = "yunet"

# Input pixels per grid cell of each output level; the network input must be a multiple of the largest.
YUNET_STRIDES = (8, 16, 32)
# Channels per grid cell of each output head.
_HEAD_CHANNELS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
YUNET_OUTPUT_NAMES = tuple(f"{head}_{stride}" for head in _HEAD_CHANNELS for stride in YUNET_STRIDES)
# A log box size above this (e^12 cells, millions of pixels) is garbage; clamping keeps exp() finite.
_MAX_LOG_SIZE_CELLS = 12.0


def _head(
    outputs: Mapping[str, npt.NDArray[np.floating]], head: str, stride: int, cells: int
) -> npt.NDArray[np.float32]:
    """Returns one output as a float32 (cells, channels) array, checking its shape."""
    name = f"{head}_{stride}"
    if name not in outputs:
        raise ValueError(f"YuNet output {name!r} missing; expected {list(YUNET_OUTPUT_NAMES)}, got {sorted(outputs)}")
    array = np.asarray(outputs[name], dtype=np.float32)
    expected = (1, cells, _HEAD_CHANNELS[head])
    if array.shape != expected:
        raise ValueError(f"YuNet output {name!r} should have shape {expected}, got {array.shape}")
    return array.reshape(expected[1:])


def decode_yunet(
    outputs: Mapping[str, npt.NDArray[np.floating]], *, input_hw: tuple[int, int], score_threshold: float
) -> RawDetections:
    """Decodes YuNet's twelve outputs for one image into boxes in network-input pixels.

    For the cell in row ``r``, column ``c`` of stride ``s`` (its prior at ``(c * s, r * s)``):
    score = sqrt(clip(cls, 0, 1) * clip(obj, 0, 1)); box centre = prior + bbox[:2] * s;
    box size = exp(bbox[2:]) * s; landmark k = prior + kps[2k : 2k + 2] * s.

    Args:
        outputs: ``cls_8`` ... ``kps_32`` as the model returns them, each float (1, N, C) with cells in
            row-major order.
        input_hw: height and width of the (padded) network input, multiples of 32.
        score_threshold: cells scoring below this are dropped.

    Returns:
        Unsuppressed detections, stride 8 first; boxes may extend past the input. Landmarks are, in
        image terms, left eye, right eye, nose tip, left and right mouth corner.

    Raises:
        ValueError: ``input_hw`` is not a multiple of 32, or an output is missing or has the wrong shape.
    """
    height, width = input_hw
    if height < 1 or width < 1 or height % YUNET_STRIDES[-1] or width % YUNET_STRIDES[-1]:
        raise ValueError(f"input_hw must be positive multiples of {YUNET_STRIDES[-1]}, got {input_hw}")
    boxes, scores, landmarks = [], [], []
    for stride in YUNET_STRIDES:
        rows, cols = height // stride, width // stride
        cls, obj, bbox, kps = (_head(outputs, head, stride, rows * cols) for head in _HEAD_CHANNELS)
        level_scores = np.sqrt(np.clip(cls[:, 0], 0.0, 1.0) * np.clip(obj[:, 0], 0.0, 1.0))
        (kept,) = np.nonzero(level_scores >= score_threshold)
        if len(kept) == 0:
            continue
        priors_xy = np.stack([kept % cols, kept // cols], axis=1).astype(np.float32) * stride
        centres_xy = priors_xy + bbox[kept, :2] * stride
        sizes_wh = np.exp(np.minimum(bbox[kept, 2:], _MAX_LOG_SIZE_CELLS)) * stride
        boxes.append(np.concatenate([centres_xy - sizes_wh / 2.0, centres_xy + sizes_wh / 2.0], axis=1))
        scores.append(level_scores[kept])
        landmarks.append(priors_xy[:, None, :] + kps[kept].reshape(-1, 5, 2) * stride)
    if not scores:
        return RawDetections.empty()
    return RawDetections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(landmarks))


class YuNetDetector:
    """YuNet face detector, from an ONNX file with a dynamic input size (e.g. ``yunet_n_dynamic.onnx``).

    Args:
        model_path: the ONNX file.
        score_threshold: faces scoring below this are dropped.
        nms_iou: overlap above which the lower-scoring of two boxes is suppressed.
        providers: onnxruntime execution providers, in order of preference.
        input_scale: the image is resized by this factor before detection (1.0: full resolution).
        threads: threads one inference may use (None: every core); 1 when several files run at once.

    Raises:
        ConfigurationError: a threshold or scale is out of range, or a provider is not available.
        ModelError: the file is missing or unreadable, or is not a dynamic-input YuNet model.
    """

    name = MODEL_NAME

    def __init__(
        self,
        model_path: Path,
        *,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        input_scale: float = 1.0,
        threads: int | None = None,
    ) -> None:
        check_detector_settings(score_threshold=score_threshold, nms_iou=nms_iou, input_scale=input_scale)
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError("YuNet model file not found", path=self.model_path)
        try:
            self.weights_sha256 = file_sha256(self.model_path)
            self._session = create_session(self.model_path, providers, intra_op_threads=threads)
        except OSError as exc:
            raise ModelError(f"cannot read the YuNet model: {exc.strerror}", path=self.model_path) from exc
        except ModelError as exc:
            raise ModelError(exc.message, path=self.model_path) from exc
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_scale = input_scale
        self._input_name = self._check_signature()

    def _check_signature(self) -> str:
        """Returns the input name, after checking that the graph looks like a dynamic-input YuNet."""
        inputs = self._session.get_inputs()
        output_names = sorted(output.name for output in self._session.get_outputs())
        if output_names != sorted(YUNET_OUTPUT_NAMES):
            raise ModelError(
                f"not a YuNet model: expected outputs {list(YUNET_OUTPUT_NAMES)}, got {output_names}",
                path=self.model_path,
            )
        shape = inputs[0].shape if len(inputs) == 1 else []
        if len(shape) != 4 or shape[1] != 3:
            described = [(value.name, value.shape) for value in inputs]
            raise ModelError(f"not a YuNet model: expected one 1x3xHxW input, got {described}", path=self.model_path)
        if isinstance(shape[2], int) or isinstance(shape[3], int):
            raise ModelError(
                f"YuNet model has a fixed input size {shape[2]}x{shape[3]}; a dynamic-input export is needed",
                path=self.model_path,
            )
        return inputs[0].name

    def detect(self, image: ImageArray) -> tuple[Face, ...]:
        """Detects faces in an RGB uint8 image of shape (H, W, 3), highest score first."""
        check_image(image)
        return to_faces(self.detect_raw(image, input_scale=self.input_scale))

    def detect_batch_raw(self, images: list[ImageArray], *, input_scale: float) -> list[RawDetections]:
        """``detect_raw`` for each image (YuNet is fast enough that batching gains little)."""
        return [self.detect_raw(image, input_scale=input_scale) for image in images]

    def detect_raw(self, image: ImageArray, *, input_scale: float) -> RawDetections:
        """Runs the network at ``input_scale`` and returns suppressed detections in original pixels.

        A scaled input over ``postprocess.MAX_WORKING_PIXELS`` runs as overlapping tiles, one at a time.

        Args:
            image: uint8 (H, W, 3), RGB.
            input_scale: the image is resized by this factor before detection.

        Raises:
            ModelError: inference failed or the outputs do not have YuNet's shapes.
        """
        return detect_tiled(
            image,
            input_scale=input_scale,
            nms_iou=self.nms_iou,
            detect_whole=lambda part: self._detect_whole(part, input_scale=input_scale),
        )

    def _detect_whole(self, image: ImageArray, *, input_scale: float) -> RawDetections:
        height, width = image.shape[:2]
        resized_h = max(1, round(height * input_scale))
        resized_w = max(1, round(width * input_scale))
        scaled: npt.NDArray[np.number] = image
        if (resized_h, resized_w) != (height, width):
            interpolation = cv2.INTER_AREA if input_scale < 1 else cv2.INTER_LINEAR
            scaled = cv2.resize(image, (resized_w, resized_h), interpolation=interpolation)
        padded_h, padded_w = padded_size(resized_h, resized_w, multiple=YUNET_STRIDES[-1])
        # Zero padding at the bottom and right, as OpenCV's FaceDetectorYN pads; the model takes BGR, 0-255.
        tensor = np.zeros((1, 3, padded_h, padded_w), dtype=np.float32)
        tensor[0, :, :resized_h, :resized_w] = scaled[:, :, ::-1].transpose(2, 0, 1)
        try:
            values = self._session.run(
                list(YUNET_OUTPUT_NAMES), {self._input_name: tensor}, run_options_for(input_pixels=padded_h * padded_w)
            )
        except Exception as exc:  # onnxruntime's own exception classes
            raise ModelError(f"YuNet inference failed: {exc}", path=self.model_path) from exc
        try:
            raw = decode_yunet(
                dict(zip(YUNET_OUTPUT_NAMES, values, strict=True)),
                input_hw=(padded_h, padded_w),
                score_threshold=self.score_threshold,
            )
        except ValueError as exc:
            raise ModelError(f"unexpected YuNet outputs: {exc}", path=self.model_path) from exc
        raw = raw.take(nms(raw.boxes_xyxy, raw.scores, iou_threshold=self.nms_iou))
        factor = resized_w / width  # == resized_h / height up to rounding
        return to_original_pixels(raw, resize_factor=factor, width_px=width, height_px=height)
