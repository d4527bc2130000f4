"""Typed records that flow through efface: faces, transform settings and per-file results.

Every record is frozen and slotted, and checks itself in ``__post_init__``: a bad value raises
``ValueError`` naming what was expected and what was given. Pixel coordinates are floats in the
image's own pixel grid, origin at the top-left corner, ``x`` to the right and ``y`` down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

__all__ = [
    "AnonymizationResult",
    "BBox",
    "Device",
    "Face",
    "Location",
    "MaskShape",
    "Method",
    "ObjectURL",
    "Outcome",
    "Precision",
    "Preset",
    "RunInfo",
    "RunStatus",
    "RunSummary",
    "TransformSpec",
    "Uncertainty",
    "ValidationKind",
    "ValidationRecord",
    "VideoStats",
    "WriteMode",
]


@dataclass(frozen=True, slots=True, order=True)
class ObjectURL:
    """An object in an object store, by URL (``s3://bucket/key``): where a result came from when it is not a local
    file. It is path-like (``os.fspath`` gives the URL), so the audit log stores and shows it as it stores a path,
    and ``Path`` is never used for it (``Path("s3://b/k")`` would collapse the ``//``).

    Attributes:
        scheme: the store's URL scheme (``s3``).
        bucket: the bucket (or container).
        key: the object's key, as the store spells it (spaces and any unicode kept; may be empty for a bucket root).
    """

    scheme: str
    bucket: str
    key: str

    def __post_init__(self) -> None:
        if not self.scheme or not self.bucket:
            raise ValueError(f"an object URL needs a scheme and a bucket, got {self.scheme!r} and {self.bucket!r}")

    @classmethod
    def parse(cls, url: str) -> ObjectURL:
        """``scheme://bucket/key`` split (the key as given, a trailing ``/`` kept).

        Raises:
            ValueError: not of that form.
        """
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError(f"not a URL: {url!r}")
        bucket, _, key = rest.partition("/")
        return cls(scheme.lower(), bucket, key)

    @property
    def name(self) -> str:
        """The key's last part (as ``Path.name``)."""
        return self.key.rstrip("/").rpartition("/")[2]

    @property
    def suffix(self) -> str:
        name = self.name
        dot = name.rfind(".")
        return name[dot:] if 0 < dot < len(name) - 1 else ""

    def child(self, key: str) -> ObjectURL:
        """The object ``key`` in the same bucket."""
        return ObjectURL(self.scheme, self.bucket, key)

    def __fspath__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"


# Where a file's result is: a local file, or an object in a store.
Location = Path | ObjectURL


class Method(StrEnum):
    """How a face region is made unrecognisable. ``mosaic``, the common name for pixelation, is taken as
    ``pixelate`` (and recorded so)."""

    BLUR = "blur"
    PIXELATE = "pixelate"
    FILL = "fill"

    @classmethod
    def _missing_(cls, value: object) -> Method | None:
        return cls.PIXELATE if isinstance(value, str) and value.lower() == "mosaic" else None


class Preset(StrEnum):
    """Named detection settings, trading time for recall (measured in bench/coverage.py)."""

    FAST = "fast"
    BALANCED = "balanced"
    THOROUGH = "thorough"
    # Over-redaction rather than any miss: every candidate of the balanced passes, down to the candidate floor.
    RECALL = "recall"


class MaskShape(StrEnum):
    """The shape of the anonymized region drawn around a (grown) face box."""

    ELLIPSE = "ellipse"
    RECTANGLE = "rectangle"


class WriteMode(StrEnum):
    """Where the anonymized image goes."""

    IN_PLACE = "in_place"
    OUTPUT_DIR = "output_dir"
    DRY_RUN = "dry_run"
    # The HTTP service: the anonymized image goes back in the response; nothing is stored.
    RESPONSE = "response"
    # A Ray Data stage (``efface.ray_data``): the anonymized image goes on down the user's pipeline, into the
    # dataset it writes; the source dataset is not touched.
    DATASET = "dataset"


class Outcome(StrEnum):
    """What happened to one file, as the audit log records it."""

    ANONYMIZED = "anonymized"
    NO_FACES = "no_faces"
    ERROR = "error"
    # --dry-run: faces were detected and counted, nothing was written.
    DRY_RUN = "dry_run"
    # A temporary file left behind by an interrupted run was found and deleted.
    LEFTOVER_REMOVED = "leftover_removed"
    # Already done: the file hashes to an output an earlier run recorded for it (a resumed run).
    SKIPPED = "skipped"
    # Looked at and left as it is: its content is neither a picture nor a video (text, audio, an archive, ...).
    NOT_MEDIA = "not_media"
    # About to be replaced: written before the replace, with the output's sha256, and followed by the file's
    # own row (its outcome) once replaced; one left alone is settled by the next run that meets the file.
    PENDING = "pending"

    @property
    def is_counted(self) -> bool:
        """Whether the row is one of a run's files (a picture or a video): not a leftover temporary file
        removed, nor a file that is not media, nor the intent written before a replace."""
        return self not in (Outcome.LEFTOVER_REMOVED, Outcome.NOT_MEDIA, Outcome.PENDING)

    @classmethod
    def of_processing(cls, mode: WriteMode, *, faces_anonymized: int) -> Outcome:
        """The outcome of a file processed without error: a dry run, or whether any face was anonymized."""
        if mode is WriteMode.DRY_RUN:
            return cls.DRY_RUN
        return cls.ANONYMIZED if faces_anonymized else cls.NO_FACES


class Device(StrEnum):
    """Where the detector runs."""

    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    """The arithmetic the detector runs in: the published float weights, or an int8 model quantized from them."""

    FP32 = "fp32"
    INT8 = "int8"


class RunStatus(StrEnum):
    """How a run ended, as the audit log records it."""

    RUNNING = "running"
    # Every file succeeded (anonymized, no faces, dry run), or a server stopped cleanly.
    COMPLETED = "completed"
    # The run finished but at least one file failed.
    FAILED = "failed"
    # Stopped before the end (Ctrl-C, a fatal error).
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class BBox:
    """An axis-aligned box in pixels, corners ``(x1, y1)`` top-left and ``(x2, y2)`` bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        values = (self.x1, self.y1, self.x2, self.y2)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"BBox coordinates must be finite, got {values}")
        if self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(f"BBox needs x2 >= x1 and y2 >= y1, got xyxy={values}")

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center_xy(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def scaled(self, factor: float) -> BBox:
        """Returns the box grown (or shrunk) by ``factor`` around its centre."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"scale factor must be a positive finite number, got {factor}")
        cx, cy = self.center_xy
        half_w, half_h = self.width * factor / 2.0, self.height * factor / 2.0
        return BBox(cx - half_w, cy - half_h, cx + half_w, cy + half_h)

    def clipped(self, width_px: int, height_px: int) -> BBox:
        """Returns the part of the box that lies inside an image of the given size (may be empty)."""
        x1 = min(max(self.x1, 0.0), float(width_px))
        y1 = min(max(self.y1, 0.0), float(height_px))
        x2 = min(max(self.x2, x1), float(width_px))
        y2 = min(max(self.y2, y1), float(height_px))
        return BBox(x1, y1, x2, y2)

    def intersection_area(self, other: BBox) -> float:
        w = min(self.x2, other.x2) - max(self.x1, other.x1)
        h = min(self.y2, other.y2) - max(self.y1, other.y1)
        return max(w, 0.0) * max(h, 0.0)

    def iou(self, other: BBox) -> float:
        inter = self.intersection_area(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


# Shown and stored boxes are rounded to 0.01 px and scores to 1e-4: finer than any detector is accurate.
BOX_DECIMALS = 2
SCORE_DECIMALS = 4


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face.

    Attributes:
        box: the detector's face box in pixels of the (orientation-corrected) image.
        score: detector confidence in [0, 1].
        landmarks_xy: five points (eyes, nose, mouth corners) in pixels, or empty when the detector
            gives none.
    """

    box: BBox
    score: float
    landmarks_xy: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0):
            raise ValueError(f"Face score must be in [0, 1], got {self.score}")
        if len(self.landmarks_xy) not in (0, 5):
            raise ValueError(f"Face needs 0 or 5 landmarks, got {len(self.landmarks_xy)}")

    def as_dict(self) -> dict[str, object]:
        """The face as the audit log, the CLI's JSON and the HTTP API show it: the box in pixels rounded to
        ``BOX_DECIMALS`` places and the score to ``SCORE_DECIMALS`` (one rule everywhere)."""
        return {
            "xyxy": [round(value, BOX_DECIMALS) for value in self.box.xyxy],
            "score": round(self.score, SCORE_DECIMALS),
        }


# The legal floor (the brief): never weaker than a Gaussian kernel 1/10 of the face box width.
MIN_BLUR_KERNEL_FRACTION = 0.1
# Pixelation of the same strength: a cell as wide as that kernel, i.e. at most 10 cells across the box.
MAX_PIXELATE_BLOCKS = round(1.0 / MIN_BLUR_KERNEL_FRACTION)


@dataclass(frozen=True, slots=True)
class TransformSpec:
    """Everything that decides how a detected face is anonymized.

    Attributes:
        method: blur, pixelate or fill.
        mask_shape: ellipse or rectangle.
        box_scale: the region is the detector box grown by this factor around its centre (a
            detector box is tighter than the head; >= 1).
        blur_kernel_fraction: Gaussian kernel width as a fraction of the face box width
            (sigma = kernel / 6). At least ``MIN_BLUR_KERNEL_FRACTION``.
        pixelate_blocks: number of pixel cells across the face box width. At most
            ``MAX_PIXELATE_BLOCKS``.
        fill_rgb: colour of the solid fill.
    """

    # A solid fill: measured with `efface verify strength`, even a blur with a kernel ten times the face
    # width is re-identified by an informed attacker (FaceNet rank-1 0.029 against the fill's 0.004).
    method: Method = Method.FILL
    mask_shape: MaskShape = MaskShape.ELLIPSE
    # Grown past the head's outline: at 1.6 an informed attacker identifies a filled face no more often
    # than chance allows (0.004-0.012 rank-1, chance 0.010), at 1.3 more often (0.025).
    box_scale: float = 1.6
    blur_kernel_fraction: float = 1.5
    pixelate_blocks: int = 6
    fill_rgb: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        # Enum coercion keeps configuration strings ("blur") working while the core sees enums.
        object.__setattr__(self, "method", Method(self.method))
        object.__setattr__(self, "mask_shape", MaskShape(self.mask_shape))
        if not (math.isfinite(self.box_scale) and 1.0 <= self.box_scale <= 4.0):
            raise ValueError(f"box_scale must be in [1, 4], got {self.box_scale}")
        if len(self.fill_rgb) != 3 or not all(0 <= c <= 255 for c in self.fill_rgb):
            raise ValueError(f"fill_rgb must be three values in [0, 255], got {self.fill_rgb}")
        if not math.isfinite(self.blur_kernel_fraction) or self.blur_kernel_fraction <= 0:
            raise ValueError(f"blur_kernel_fraction must be positive, got {self.blur_kernel_fraction}")
        if self.pixelate_blocks < 1:
            raise ValueError(f"pixelate_blocks must be >= 1, got {self.pixelate_blocks}")

    def as_dict(self) -> dict[str, object]:
        return {
            "method": self.method.value,
            "mask_shape": self.mask_shape.value,
            "box_scale": self.box_scale,
            "blur_kernel_fraction": self.blur_kernel_fraction,
            "pixelate_blocks": self.pixelate_blocks,
            "fill_rgb": list(self.fill_rgb),
        }


@dataclass(frozen=True, slots=True)
class VideoStats:
    """What happened to the frames of one video (counts only, never pixels).

    The media layer fills in what it decoded and wrote; the pipeline adds the face counts (zero where no
    detector ran).

    Attributes:
        frames: frames decoded, anonymized and encoded (equal by construction).
        frames_detected: frames the detector ran on (all of them unless detection skips frames).
        detections: faces the detector found, summed over frames.
        regions: face regions anonymized, summed over frames: the detections plus the boxes carried
            between frames (hold-over, backward fill).
        frames_with_faces: frames with at least one region anonymized.
        regions_per_frame_min / regions_per_frame_max: fewest and most regions on one frame.
        encoder: the video encoder used (None in a dry run).
        crf: its quality setting.
        duration_s: the video's duration: from the first frame's start to the last frame's end where
            it was encoded, as declared in a dry run.
        fps: its average frame rate.
        copied_streams: audio and subtitle streams copied without re-encoding.
        tracking: the tracker's own counts (held, backfilled, interpolated boxes, tracks).
        pixel_format: the encoded pixel format (None in a dry run).
        is_vfr: whether the encoded frame intervals vary (measured on every frame; None in a dry run).
        dropped_streams: one line per source stream left out of the output (extra video, cover art,
            data, attachments); empty in a dry run.
    """

    frames: int
    frames_detected: int = 0
    detections: int = 0
    regions: int = 0
    frames_with_faces: int = 0
    regions_per_frame_min: int = 0
    regions_per_frame_max: int = 0
    encoder: str | None = None
    crf: int | None = None
    duration_s: float | None = None
    fps: float | None = None
    copied_streams: int = 0
    tracking: dict[str, int] = field(default_factory=dict)
    pixel_format: str | None = None
    is_vfr: bool | None = None
    dropped_streams: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        counts = {
            "frames": self.frames,
            "frames_detected": self.frames_detected,
            "detections": self.detections,
            "regions": self.regions,
            "frames_with_faces": self.frames_with_faces,
            "copied_streams": self.copied_streams,
        }
        negative = {name: value for name, value in counts.items() if value < 0}
        if negative:
            raise ValueError(f"VideoStats counts must be >= 0, got {negative}")
        if self.frames_detected > self.frames or self.frames_with_faces > self.frames:
            raise ValueError(
                f"frames_detected ({self.frames_detected}) and frames_with_faces ({self.frames_with_faces})"
                f" must be <= frames ({self.frames})"
            )
        if not 0 <= self.regions_per_frame_min <= self.regions_per_frame_max:
            raise ValueError(
                "regions per frame must satisfy 0 <= min <= max, got"
                f" min={self.regions_per_frame_min} max={self.regions_per_frame_max}"
            )

    @property
    def regions_per_frame_mean(self) -> float:
        return self.regions / self.frames if self.frames else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "frames_detected": self.frames_detected,
            "detections": self.detections,
            "regions": self.regions,
            "frames_with_faces": self.frames_with_faces,
            "regions_per_frame": {
                "min": self.regions_per_frame_min,
                "mean": round(self.regions_per_frame_mean, 3),
                "max": self.regions_per_frame_max,
            },
            "encoder": self.encoder,
            "crf": self.crf,
            "duration_s": self.duration_s,
            "fps": self.fps,
            "copied_streams": self.copied_streams,
            "tracking": dict(self.tracking),
        }


# Box heights in pixels that a file's faint candidates are counted by (as coverage counts faces).
FAINT_SIZES = ("<20", "20-50", ">=50")


def faint_size(height_px: float) -> str:
    """The size a faint candidate of this box height is counted under (``FAINT_SIZES``)."""
    return FAINT_SIZES[0] if height_px < 20 else FAINT_SIZES[1] if height_px < 50 else FAINT_SIZES[2]


@dataclass(frozen=True, slots=True)
class Uncertainty:
    """What the detector was unsure of in one file, for a person to look at (boxes and counts, never pixels).

    Attributes:
        faint: a picture's faint candidates, which were not anonymized: fused detections scoring from the
            candidate floor up to (not including) the operating threshold, best first; a video's are counted only.
        faint_candidates: how many faint candidates (a video's summed over the frames of its full detection).
        faint_by_size: the faint candidates by box height (``FAINT_SIZES``).
        frames_with_faint: a video's frames with at least one faint candidate.
        bridged_frames: a video's frames anonymized with boxes the tracker carried only (no detection on them).
        interpolated_boxes: boxes a video's tracker put between two detections of a track.
    """

    faint: tuple[Face, ...] = ()
    faint_candidates: int = 0
    faint_by_size: dict[str, int] = field(default_factory=dict)
    frames_with_faint: int = 0
    bridged_frames: int = 0
    interpolated_boxes: int = 0

    @classmethod
    def of_faces(cls, faint: tuple[Face, ...]) -> Uncertainty:
        """A picture's, from its faint candidates."""
        by_size = dict.fromkeys(FAINT_SIZES, 0)
        for face in faint:
            by_size[faint_size(face.box.height)] += 1
        return cls(faint=faint, faint_candidates=len(faint), faint_by_size=by_size)

    @property
    def count(self) -> int:
        """What is worth a look: the faint candidates, and a video's bridged frames (0: nothing)."""
        return self.faint_candidates + self.bridged_frames

    def as_dict(self) -> dict[str, object]:
        """As the audit log stores it (boxes rounded as ``Face.as_dict`` rounds them)."""
        return {
            "faint": [face.as_dict() for face in self.faint],
            "faint_candidates": self.faint_candidates,
            "faint_by_size": dict(self.faint_by_size),
            "frames_with_faint": self.frames_with_faint,
            "bridged_frames": self.bridged_frames,
            "interpolated_boxes": self.interpolated_boxes,
        }


@dataclass(frozen=True, slots=True)
class AnonymizationResult:
    """What the pipeline returns for one file, the audit log stores and the API serializes.

    It never holds image content: only paths, counts, boxes, hashes and timings. For a video, ``faces`` is
    empty (boxes of every frame would swamp the audit log) and ``video`` holds the counts; faces detected
    and anonymized are then summed over frames.
    """

    path: Location | None
    outcome: Outcome
    mode: WriteMode
    started_at: datetime
    duration_s: float
    output_path: Location | None = None
    faces: tuple[Face, ...] = ()
    faces_anonymized: int = 0
    output_sha256: str | None = None
    image_format: str | None = None
    resolution_wh: tuple[int, int] | None = None
    error_class: str | None = None
    error_message: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    video: VideoStats | None = None
    # A request to the HTTP service has a request id and no path; a file has a path. Exactly one is set.
    request_id: str | None = None
    # What the detector was unsure of (None where no detector ran on it: a failure, a skipped file, a container).
    uncertainty: Uncertainty | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.request_id is None):
            raise ValueError(
                f"expected a path (a file) or a request_id (a request to the service), not both or neither; "
                f"got path={self.path}, request_id={self.request_id}"
            )
        if self.started_at.tzinfo is None:
            raise ValueError("started_at must be timezone-aware (UTC)")
        if self.duration_s < 0:
            raise ValueError(f"duration_s must be >= 0, got {self.duration_s}")
        if self.faces_anonymized > self.faces_detected:
            raise ValueError(
                f"faces_anonymized ({self.faces_anonymized}) cannot exceed faces detected ({self.faces_detected})"
            )
        if (self.outcome is Outcome.ERROR) != (self.error_class is not None):
            raise ValueError(f"error_class must be set exactly when outcome is error, got {self.outcome}")

    @property
    def faces_detected(self) -> int:
        return self.video.detections if self.video is not None else len(self.faces)

    @property
    def is_success(self) -> bool:
        return self.outcome is not Outcome.ERROR


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the audit log keeps about one run when it starts.

    Attributes:
        run_id: a unique id (uuid4 hex).
        started_at: UTC time.
        efface_version: the package version.
        command: the entry point, e.g. ``"anonymize"``.
        mode: in place, output folder or dry run.
        model_name: the detector, e.g. ``"centerface"``.
        model_sha256: sha256 of the detector weights file.
        settings: every setting that affects the result, JSON-serialisable.
        hostname: the machine that ran it.
        settings_sha256: sha256 of the detection and transform settings and the model: a later run skips a
            file this run left done only when it has the same (None: such a run's files are never skipped).
    """

    run_id: str
    started_at: datetime
    efface_version: str
    command: str
    mode: WriteMode
    model_name: str
    model_sha256: str
    settings: dict[str, object]
    hostname: str
    settings_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            raise ValueError("started_at must be timezone-aware (UTC)")
        if not self.run_id:
            raise ValueError("run_id must not be empty")


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Totals of a finished run."""

    status: RunStatus
    finished_at: datetime
    files_total: int
    files_failed: int
    faces_detected: int
    faces_anonymized: int
    duration_s: float


class ValidationKind(StrEnum):
    """What a validation measured."""

    COVERAGE = "coverage"
    STRENGTH = "strength"
    IDENTITY = "identity"  # the matcher of selective anonymization (efface verify identity)


@dataclass(frozen=True, slots=True)
class ValidationRecord:
    """A measurement a data-protection officer can show later: what was validated, when, with which
    settings, and the figures.

    Attributes:
        validation_id: a unique id (uuid4 hex).
        kind: coverage (detection against annotations) or strength (against face recognition).
        created_at: UTC time.
        efface_version: the package version.
        model_name: the detector.
        model_sha256: sha256 of its weights.
        settings: every setting that affects the result, JSON-serialisable.
        dataset: what was measured on (paths, format, subset, counts), JSON-serialisable.
        figures: the results, JSON-serialisable.
        passed: the outcome of a pass/fail criterion (e.g. ``--fail-under``), None without one.
        hostname: the machine that ran it.
    """

    validation_id: str
    kind: ValidationKind
    created_at: datetime
    efface_version: str
    model_name: str
    model_sha256: str
    settings: dict[str, object]
    dataset: dict[str, object]
    figures: dict[str, object]
    passed: bool | None
    hostname: str

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware (UTC)")
        if not self.validation_id:
            raise ValueError("validation_id must not be empty")
        object.__setattr__(self, "kind", ValidationKind(self.kind))
