"""What several commands share: the exit codes, the ``Annotated`` option types, and building settings and
the audit store with setup errors mapped to exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from efface.audit import AuditStore
from efface.cli._render import stderr
from efface.config import Settings, load_settings
from efface.errors import EffaceError
from efface.records import Device, MaskShape, Method, Preset

__all__ = [
    "EXIT_FILES_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "BlurKernelOption",
    "BoxScaleOption",
    "ConfigOption",
    "DbOption",
    "DetectorOption",
    "DeviceOption",
    "MaskOption",
    "MethodOption",
    "PixelateBlocksOption",
    "PresetOption",
    "ThresholdOption",
    "fail_setup",
    "load",
    "open_store",
    "or_exit",
]

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: $EFFACE_CONFIG or the user config folder)."),
]
MethodOption = Annotated[Method | None, typer.Option(help="How faces are anonymized. [default: fill]")]
ThresholdOption = Annotated[
    float | None,
    typer.Option(min=0.01, max=0.99, help="Detector score threshold. [default: the preset's, chosen on data]"),
]
PresetOption = Annotated[Preset | None, typer.Option(help="Detection preset: time against recall. [default: balanced]")]
DetectorOption = Annotated[
    list[str] | None,
    typer.Option("--detector", help="Fuse a further ONNX detector: yunet:PATH (repeatable)."),
]
MaskOption = Annotated[MaskShape | None, typer.Option(help="Shape of the region. [default: ellipse]")]
BoxScaleOption = Annotated[float | None, typer.Option(help="Grow each face box by this factor (>= 1). [default: 1.6]")]
BlurKernelOption = Annotated[
    float | None,
    typer.Option(help="Blur kernel width as a fraction of the face width (floor 0.1). [default: 1.5]"),
]
PixelateBlocksOption = Annotated[
    int | None, typer.Option(help="Pixel cells across the face width (at most 10). [default: 6]")
]
DeviceOption = Annotated[
    Device | None,
    typer.Option(help="Where the detector runs: cpu, or cuda (an NVIDIA GPU, with onnxruntime-gpu). [default: cpu]"),
]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Audit database URL: sqlite:///PATH or postgresql+psycopg://... [env: EFFACE_DB_URL]"),
]


def fail_setup(exc: EffaceError) -> typer.Exit:
    """Prints a setup error and gives the exit (code 2) to raise."""
    stderr.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def or_exit(call: Callable[[], T]) -> T:
    """``call()``, with an efface error turned into a setup failure (exit code 2)."""
    try:
        return call()
    except EffaceError as exc:
        raise fail_setup(exc) from exc


def load(config: Path | None, **overrides: object) -> Settings:
    """The settings: defaults, the config file, the environment, then the options given (None: not given)."""
    return or_exit(lambda: load_settings(config_path=config, **overrides))


def open_store(settings: Settings) -> AuditStore:
    """The audit store of the settings' database."""
    return or_exit(lambda: AuditStore(settings.db_url))
