"""The int8 CenterFace model: a static QDQ quantization of the published fp32 weights, built on this machine.

The only module that imports ``onnxruntime.quantization`` and ``onnx.version_converter``; it is loaded only when
an int8 model is built (``weights.int8_weights``). The recipe:

1. the fp32 graph with symbolic input dims (``centerface.dynamic_model_bytes``) and named nodes, converted
   from opset 9 to 13 (from 13 on, ``DequantizeLinear`` takes an axis, which per-channel weights need);
2. ``quantize_static``: QDQ format, per-channel int8 weights, uint8 activations (the operand VNNI multiplies
   by int8; int8 activations ran the sample's 1600x900 group photo no faster than fp32, 0.28 s against 0.18 s
   with uint8 on one thread, at the same heatmap correlation with fp32, 0.995), min/max calibration, with
   the first convolution and the output heads left in fp32 (on WIDER hard, quantizing them too lost 0.003 more
   recall under 20 px and 0.005 more covered faces, and was no faster);
3. calibration on pictures generated here from the public-domain images inside scikit-image, never on
   evaluation data: the astronaut portrait itself, and other scikit-image pictures as backgrounds with the
   astronaut's face pasted onto them at 12-200 px tall. Each is fed as the default preset's passes feed a
   photo (``presets.BALANCED``): whole at scales 1 and 0.5, and 160 px tiles around the small faces at 2x,
   through the detector's own preprocessing (``centerface.input_tensor``).

Everything is deterministic: the same fp32 file and onnxruntime version give the same bytes.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from efface.arrays import ImageArray
from efface.detection.centerface import dynamic_model_bytes, input_tensor
from efface.errors import ConfigurationError, ModelError

__all__ = ["RECIPE_VERSION", "calibration_feeds", "quantize_centerface"]

logger = logging.getLogger(__name__)

# Part of the cache key (``weights.py``): raise it whenever anything below changes what is built.
RECIPE_VERSION = 2
_OPSET = 13
# The astronaut's face with her hair and chin in ``skimage.data.astronaut()`` (512x512), x1 y1 x2 y2.
_FACE_XYXY = (165, 40, 285, 200)
# Pasted face heights, from under the 20 px where recall is hardest to close-ups.
_FACE_HEIGHTS_PX = (12, 15, 19, 24, 30, 38, 48, 64, 90, 130, 200)
_FACES_PER_CANVAS = 6
# Backgrounds: every colour or grey picture of scikit-image that holds no face (grey ones are made RGB).
_BACKGROUNDS = (
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "page",
    "clock",
    "colorwheel",
)
# WIDER FACE photos are 1024 px wide; the default preset runs them whole at 1 and 0.5, and its focus pass runs
# 128 + 2 x 16 px tiles at 2x around candidates up to 48 px tall.
_CANVAS_HW = (768, 1024)
_WHOLE_SCALES = (1.0, 0.5)
_TILE_PX = 160
_TILE_SCALE = 2.0
_TILE_MAX_FACE_PX = 48


def _picture(name: str) -> ImageArray:
    """A picture of ``skimage.data`` as RGB uint8 (grey ones repeated, an alpha channel dropped).

    Raises:
        ConfigurationError: scikit-image is not installed (the ``int8`` extra).
    """
    try:
        from skimage import data  # the int8 extra: only building the model needs its pictures
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "building the int8 model calibrates it on the public-domain pictures inside scikit-image, which is not "
            "installed: pip install 'efface[int8]' (or run --precision fp32)"
        ) from exc
    pixels = np.asarray(getattr(data, name)())
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3], dtype=np.uint8)


def _canvas(index: int, background: str, face: ImageArray) -> tuple[ImageArray, list[tuple[int, int, int]]]:
    """A background resized to the canvas with faces pasted at seeded places; returns it and each face's
    (x, y, height) in canvas pixels."""
    height, width = _CANVAS_HW
    canvas = cv2.resize(_picture(background), (width, height), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(index)
    placed = []
    for slot in range(_FACES_PER_CANVAS):
        face_h = _FACE_HEIGHTS_PX[(index + slot * 2) % len(_FACE_HEIGHTS_PX)]
        face_w = max(1, round(face_h * face.shape[1] / face.shape[0]))
        x = int(rng.integers(0, width - face_w))
        y = int(rng.integers(0, height - face_h))
        interpolation = cv2.INTER_AREA if face_h < face.shape[0] else cv2.INTER_LINEAR
        canvas[y : y + face_h, x : x + face_w] = cv2.resize(face, (face_w, face_h), interpolation=interpolation)
        placed.append((x + face_w // 2, y + face_h // 2, face_h))
    return np.ascontiguousarray(canvas), placed


def _tiles(canvas: ImageArray, faces: list[tuple[int, int, int]]) -> list[ImageArray]:
    """The focus pass's tiles around the small faces, kept inside the canvas."""
    height, width = canvas.shape[:2]
    tiles = []
    for centre_x, centre_y, face_h in faces:
        if face_h > _TILE_MAX_FACE_PX:
            continue
        x0 = min(max(0, centre_x - _TILE_PX // 2), width - _TILE_PX)
        y0 = min(max(0, centre_y - _TILE_PX // 2), height - _TILE_PX)
        tiles.append(np.ascontiguousarray(canvas[y0 : y0 + _TILE_PX, x0 : x0 + _TILE_PX]))
    return tiles


def calibration_feeds() -> Iterator[npt.NDArray[np.float32]]:
    """The calibration inputs, in order: network input tensors (N, 3, H, W) float32, as detection makes them.

    16 pictures (the astronaut and 15 composed ones), each whole at the scales of the default preset's full
    passes, and each composed one's small faces as a batch of focus tiles at 2x.
    """
    astronaut = _picture("astronaut")
    x1, y1, x2, y2 = _FACE_XYXY
    face = np.ascontiguousarray(astronaut[y1:y2, x1:x2])
    for scale in _WHOLE_SCALES:
        yield input_tensor([astronaut], input_scale=scale)
    for index, background in enumerate(_BACKGROUNDS):
        canvas, faces = _canvas(index, background, face)
        for scale in _WHOLE_SCALES:
            yield input_tensor([canvas], input_scale=scale)
        tiles = _tiles(canvas, faces)
        if tiles:
            yield input_tensor(tiles, input_scale=_TILE_SCALE)


class _CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` (matched by its ``get_next``) over our feeds."""

    def __init__(self, input_name: str) -> None:
        self._input_name = input_name
        self._feeds = calibration_feeds()

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        tensor = next(self._feeds, None)
        return None if tensor is None else {self._input_name: tensor}


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # quantize_static logs its advice on the root logger (an optional pre-processing step; per-channel axes that
    # a batch norm's 1-D scale has not): about a fixed recipe, so nothing a user could act on. Records below
    # ERROR sent to the root logger itself are dropped for the call; efface's own loggers are named ones.
    quiet = _BelowError()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _edge_nodes(graph: onnx.GraphProto) -> list[str]:
    """The nodes left in fp32: the first convolution (it reads the image) and the output heads (those that
    write a graph output, and the convolution before the heatmap's sigmoid), where the faint scores of small
    faces are decided."""
    outputs = {value.name for value in graph.output}
    inputs = {value.name for value in graph.input}
    producer = {name: node for node in graph.node for name in node.output}
    kept = [node for node in graph.node if inputs & set(node.input) and node.op_type == "Conv"]
    for node in graph.node:
        if outputs & set(node.output):
            kept.append(node)
            if node.op_type == "Sigmoid":
                kept.append(producer[node.input[0]])
    return sorted({node.name for node in kept})


def quantize_centerface(fp32_path: Path) -> bytes:
    """Builds the int8 CenterFace model from the fp32 weights (tens of seconds on two cores).

    Args:
        fp32_path: the published ``centerface.onnx``.

    Returns:
        The serialized int8 ONNX model, input dims symbolic (batch, height, width).

    Raises:
        ModelError: the weights cannot be read, converted or quantized.
        ConfigurationError: scikit-image, whose pictures calibrate it, is not installed.
    """
    model = onnx.load_from_string(dynamic_model_bytes(fp32_path))
    graph = model.graph
    # The published nodes are unnamed; stable names make the build reproducible and the nodes addressable.
    for index, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
    # Batch-norm step counters the graph carries but never reads (onnxruntime warns about each).
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    kept_fp32 = _edge_nodes(graph)
    try:
        model = version_converter.convert_version(model, _OPSET)
        input_name = model.graph.input[0].name
        with tempfile.TemporaryDirectory(prefix="efface-quantize-") as scratch:
            output = Path(scratch) / "centerface-int8.onnx"
            with _quiet_root_logger():
                quantize_static(
                    model,
                    output,
                    _CalibrationReader(input_name),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=kept_fp32,
                )
            return output.read_bytes()
    except ConfigurationError:  # the int8 extra is not installed: said as it is
        raise
    except Exception as exc:  # onnx and onnxruntime raise their own, untyped exception classes
        raise ModelError(f"cannot quantize CenterFace ({fp32_path}) to int8: {exc}") from exc
