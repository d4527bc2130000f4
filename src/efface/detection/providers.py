"""Which onnxruntime execution providers run a detector on each ``Device``.

Kept apart from ``_onnx`` so that it can be read without importing onnxruntime.
"""

from __future__ import annotations

from efface.records import Device

__all__ = ["providers_for"]

# In order of preference: onnxruntime places each operator on the first provider that has it, so CUDA
# keeps the CPU for the few operators it lacks.
_PROVIDERS: dict[Device, tuple[str, ...]] = {
    Device.CPU: ("CPUExecutionProvider",),
    Device.CUDA: ("CUDAExecutionProvider", "CPUExecutionProvider"),
}


def providers_for(device: Device) -> tuple[str, ...]:
    """The onnxruntime execution providers for ``device``, in order of preference.

    Args:
        device: where the detector runs (a ``Device`` or its value, e.g. ``"cuda"``).

    Raises:
        ValueError: ``device`` names no device.
    """
    return _PROVIDERS[Device(device)]
