"""What several commands share: the exit codes, the ``Annotated`` option types, and building settings and
the audit store with setup errors mapped to exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape

from efface.cli._render import print_error
from efface.config import Settings, default_database_url, load_settings
from efface.detection.presets import preset_spec
from efface.errors import EffaceError
from efface.records import (
    MAX_PIXELATE_BLOCKS,
    MIN_BLUR_KERNEL_FRACTION,
    Device,
    MaskShape,
    Method,
    Precision,
    Preset,
)

if TYPE_CHECKING:
    from efface.audit import AuditStore

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
    "FillColorOption",
    "MaskOption",
    "MethodOption",
    "PixelateBlocksOption",
    "PrecisionOption",
    "PresetOption",
    "ThresholdOption",
    "fail_setup",
    "fill_color",
    "load",
    "open_store",
    "or_exit",
    "setting_default",
    "with_default",
]

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
T = TypeVar("T")


def with_default(text: str, shown: object) -> str:
    """Help text ending in ``[default: SHOWN]``, escaped: Rich, which renders the help, would take the
    brackets for markup and drop them."""
    return f"{text} {escape(f'[default: {shown}]')}"


def setting_default(name: str) -> str:
    """The default of a setting as the help shows it (an enum by its value); declared on ``Settings`` alone."""
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        raise ValueError(f"setting {name!r} has a computed default; describe it in words")
    default = field.default
    return str(default.value if isinstance(default, Enum) else default)


def _preset_thresholds() -> str:
    return ", ".join(f"{preset.value} {preset_spec(preset).score_threshold:g}" for preset in Preset)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", metavar="FILE", help="TOML config file (default: $EFFACE_CONFIG or the user config folder)."
    ),
]


def _method(text: str) -> Method:
    try:
        return Method(text.lower())
    except ValueError:
        raise typer.BadParameter(f"expected blur, pixelate (or mosaic) or fill, got {text!r}") from None


def fill_color(text: str) -> tuple[int, int, int]:
    """A colour as #RRGGBB, RRGGBB or R,G,B (0-255 each).

    Raises:
        typer.BadParameter: anything else (a usage error, exit 2).
    """
    value = text.strip()
    try:
        if "," in value:
            parts = tuple(int(part) for part in value.split(","))
        else:
            digits = value.removeprefix("#")
            if len(digits) != 6:
                raise ValueError(value)
            parts = tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 <= part <= 255 for part in parts):
        raise typer.BadParameter(f"expected a colour as #RRGGBB or R,G,B (0-255 each), got {text!r}")
    return (parts[0], parts[1], parts[2])


MethodOption = Annotated[
    Method | None,
    typer.Option(
        parser=_method,
        metavar="blur|pixelate|fill",
        help=with_default("How faces are anonymized (mosaic: pixelate).", setting_default("method")),
    ),
]
FillColorOption = Annotated[
    str | None,
    typer.Option(
        "--fill-color",
        metavar="#RRGGBB|R,G,B",
        help=with_default("The colour of --method fill.", "#000000"),
    ),
]
ThresholdOption = Annotated[
    float | None,
    typer.Option(
        min=0.01,
        max=0.99,
        help=with_default("Detector score threshold.", f"the preset's, chosen on data: {_preset_thresholds()}"),
    ),
]
PresetOption = Annotated[
    Preset | None,
    typer.Option(help=with_default("Detection preset: time against recall.", setting_default("preset"))),
]
DetectorOption = Annotated[
    list[str] | None,
    typer.Option("--detector", metavar="yunet:PATH", help="Fuse a further ONNX detector: yunet:PATH (repeatable)."),
]
MaskOption = Annotated[
    MaskShape | None, typer.Option(help=with_default("Shape of the region.", setting_default("mask_shape")))
]
BoxScaleOption = Annotated[
    float | None,
    typer.Option(help=with_default("Grow each face box by this factor (>= 1).", setting_default("box_scale"))),
]
BlurKernelOption = Annotated[
    float | None,
    typer.Option(
        help=with_default(
            f"Blur kernel width as a fraction of the face width (floor {MIN_BLUR_KERNEL_FRACTION:g}).",
            setting_default("blur_kernel_fraction"),
        )
    ),
]
PixelateBlocksOption = Annotated[
    int | None,
    typer.Option(
        help=with_default(
            f"Pixel cells across the face width (at most {MAX_PIXELATE_BLOCKS}).", setting_default("pixelate_blocks")
        )
    ),
]
DeviceOption = Annotated[
    Device | None,
    typer.Option(
        help=with_default(
            "Where the detector runs: cpu, or cuda (an NVIDIA GPU, with onnxruntime-gpu).", setting_default("device")
        )
    ),
]
PrecisionOption = Annotated[
    Precision | None,
    typer.Option(
        help=with_default(
            "The detector's arithmetic: fp32 (the published weights), or int8 (faster on CPUs with VNNI; built on "
            "first use into the model cache, see `efface models prepare`).",
            setting_default("precision"),
        )
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help=with_default(
            f"Audit database URL: sqlite:///PATH or postgresql://USER@HOST/DB {escape('[env: EFFACE_DB_URL]')}",
            default_database_url(),
        ),
    ),
]


def fail_setup(exc: EffaceError) -> typer.Exit:
    """Prints a setup error and gives the exit (code 2) to raise."""
    print_error(exc)
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
    # Imported here, not at the top: ``efface --help`` and the commands that need no database skip SQLAlchemy.
    from efface.audit import AuditStore

    return or_exit(lambda: AuditStore(settings.db_url))
