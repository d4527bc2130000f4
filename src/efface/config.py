"""Settings: defaults, ``EFFACE_*`` environment variables and a TOML config file.

Precedence, highest first: values given in code (the CLI's options), environment variables
(``EFFACE_METHOD=pixelate``), the config file (``$EFFACE_CONFIG`` or ``<user config dir>/efface/config.toml``),
the defaults below (those of the transform are ``TransformSpec``'s). Only the edges (CLI, service) build a
``Settings``; the core takes plain records.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from efface.errors import ConfigurationError
from efface.records import Device, MaskShape, Method, Precision, Preset, TransformSpec

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "Settings",
    "default_config_path",
    "default_database_url",
    "load_settings",
]

APP_NAME = "efface"
# How faces are anonymized by default is the core record's to say (with the measurements behind it).
_TRANSFORM = TransformSpec()
DEFAULT_JPEG_QUALITY = 92
# A 30000x30000 header is a decompression bomb; 200 MP still admits the largest phone sensors.
DEFAULT_MAX_IMAGE_PIXELS = 200_000_000

_config_path_override: contextvars.ContextVar[Path | None] = contextvars.ContextVar("efface_config_path", default=None)


def default_config_path() -> Path:
    """The config file read when neither ``--config`` nor ``$EFFACE_CONFIG`` names one."""
    env_path = os.environ.get("EFFACE_CONFIG")
    if env_path:
        return Path(env_path)
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_database_url() -> str:
    """An SQLite file in the user's data folder."""
    return f"sqlite:///{Path(platformdirs.user_data_dir(APP_NAME)) / 'audit.sqlite3'}"


def _yunet_path(item: str) -> Path:
    """The file of a further detector given as ``yunet:PATH`` (the one kind there is)."""
    kind, _, path = item.partition(":")
    if kind != "yunet" or not path:
        raise ValueError(f"expected 'yunet:PATH', got {item!r}")
    return Path(path)


class Settings(BaseSettings):
    """Every user-facing setting of efface."""

    model_config = SettingsConfigDict(env_prefix="EFFACE_", extra="forbid", frozen=True)

    db_url: str = Field(default_factory=default_database_url, description="SQLAlchemy URL of the audit database")
    method: Method = _TRANSFORM.method
    mask_shape: MaskShape = _TRANSFORM.mask_shape
    box_scale: float = _TRANSFORM.box_scale
    blur_kernel_fraction: float = _TRANSFORM.blur_kernel_fraction
    pixelate_blocks: int = _TRANSFORM.pixelate_blocks
    fill_rgb: tuple[int, int, int] = _TRANSFORM.fill_rgb
    preset: Preset = Preset.BALANCED
    # None: the preset's own threshold, chosen on data.
    score_threshold: float | None = Field(None, gt=0.0, lt=1.0)
    # Further user-supplied detectors fused with CenterFace, as "yunet:PATH".
    extra_detectors: tuple[str, ...] = ()
    # Where the detector runs. ``providers`` instead names onnxruntime execution providers of one's own, in order
    # of preference (e.g. OpenVINO, which no ``Device`` stands for); None: the device's.
    device: Device = Device.CPU
    providers: tuple[str, ...] | None = None
    # CenterFace's arithmetic. int8 (a model quantized on this machine from the fp32 weights and cached, see
    # detection/weights.py) detects about 1.5x faster on this CPU, but on WIDER hard it finds 0.016 fewer faces
    # under 20 px and covers 0.006 fewer (bench/coverage.py --precisions fp32,int8): fp32 stays the default.
    precision: Precision = Precision.FP32
    # `efface anonymize`: files processed at once on this machine, one process each (no more than there are
    # files); each inference then gets cores // processes threads.
    jobs: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, le=256)
    jpeg_quality: int = Field(DEFAULT_JPEG_QUALITY, ge=1, le=100)
    keep_icc_profile: bool = True
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, gt=0)
    # Video: the encoder (None: H.264 where the container takes it), its quality on x264's CRF scale and
    # speed preset, and whether identifying container metadata is kept.
    video_codec: str | None = None
    video_crf: int = Field(18, ge=0, le=51)
    video_preset: str = "faster"
    keep_video_metadata: bool = False
    # Tables (Parquet, Arrow): the columns that hold pictures, every cell of theirs one; empty: the columns typed as
    # `datasets` images and binary columns by content. Not a resume setting: with or without it, every picture
    # cell is anonymized the same way (a picture outside the named columns fails the table).
    image_columns: tuple[str, ...] = ()
    # Faces carried between frames: detection opportunities a face may be missed and still be covered,
    # frames before a first detection that are covered too, detection on every Nth frame only, and a light
    # pass (one half-size pass, for large faces) on the frames in between.
    track_hold_frames: int = Field(8, ge=0, le=250)
    track_lookback_frames: int = Field(8, ge=0, le=250)
    detect_every: int = Field(3, ge=1, le=30)
    light_passes: bool = True

    @field_validator("db_url")
    @classmethod
    def _db_url_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("db_url must not be empty")
        return value

    @field_validator("extra_detectors")
    @classmethod
    def _known_detectors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            _yunet_path(item)
        return value

    @property
    def yunet_paths(self) -> tuple[Path, ...]:
        """The model files of ``extra_detectors``."""
        return tuple(_yunet_path(item) for item in self.extra_detectors)

    @model_validator(mode="after")
    def _device_or_providers(self) -> Settings:
        if self.providers is not None and "device" in self.model_fields_set:
            raise ValueError(
                f"set device or providers, not both (device {self.device.value!r}, providers {self.providers})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _config_path_override.get() or default_config_path()
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

    def transform_spec(self) -> TransformSpec:
        """The anonymization settings as the core's record."""
        return TransformSpec(
            method=self.method,
            mask_shape=self.mask_shape,
            box_scale=self.box_scale,
            blur_kernel_fraction=self.blur_kernel_fraction,
            pixelate_blocks=self.pixelate_blocks,
            fill_rgb=self.fill_rgb,
        )


def load_settings(*, config_path: Path | None = None, **overrides: Any) -> Settings:
    """Builds the settings, translating validation errors into one-line ``ConfigurationError``s.

    Args:
        config_path: a TOML file to read instead of the default one; it must exist.
        **overrides: values that win over the environment and the file (``None`` values are ignored).

    Raises:
        ConfigurationError: a value is invalid or the named config file is missing or malformed.
    """
    if config_path is not None and not config_path.is_file():
        raise ConfigurationError(f"config file not found: {config_path}")
    token = _config_path_override.set(config_path)
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across fields: its message names them, the input is every setting
            raise ConfigurationError(f"invalid settings: {first['msg']}") from exc
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigurationError(f"invalid setting {where}: {first['msg']} (got {first.get('input')!r})") from exc
    except (OSError, ValueError) as exc:  # a malformed TOML file surfaces as a ValueError subclass
        raise ConfigurationError(f"cannot read config file: {exc}") from exc
    finally:
        _config_path_override.reset(token)
