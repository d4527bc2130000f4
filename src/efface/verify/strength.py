"""Anonymization strength against face recognition: can a recognizer still tell who an anonymized face is?

The protocol (``efface verify strength``): a folder of identities ``PERSON/*.jpg`` (two or more images
each). The first image of every person (in name order) is enrolled in the gallery, with any distractors
(people who never appear as probes); every other image is a probe. Each probe is anonymized exactly as
``efface anonymize`` would (the same detector and anonymizer) and embedded by each recognizer; a probe is
identified when its nearest gallery embedding belongs to its own person (rank-1 identification).

Two attackers: *naive* matches against the clean gallery; *informed* ("parrot") applies the same treatment
to the gallery images first, which is known to re-identify many blurred and pixelated faces. The face box a
recognizer embeds always comes from the original, clean image (the attacker knows where the face was), so
a detector that misses a treated face cannot make the result look better than it is.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from efface.arrays import ImageArray
from efface.detection.base import FaceDetector
from efface.errors import InputNotFoundError, WeakTransformError
from efface.media.images import IMAGE_SUFFIXES, CodecOptions, decode_image
from efface.recognition.recognizers import FaceRecognizer, rank1_identification
from efface.records import BBox, Face, Method, TransformSpec
from efface.transforms.core import Anonymizer, check_strength

__all__ = [
    "Attacker",
    "IdentityImage",
    "StrengthReport",
    "StrengthRow",
    "Treatment",
    "load_identities",
    "main_face",
    "measure_strength",
    "standard_treatments",
    "verdict",
]


class Attacker(StrEnum):
    """How the attacker builds the gallery."""

    NAIVE = "naive"  # clean gallery images
    INFORMED = "informed"  # gallery images treated exactly as the probes were


@dataclass(frozen=True, slots=True)
class Treatment:
    """One anonymization to test.

    Attributes:
        label: how the report names it.
        spec: the transform, or None for the clean (untreated) reference.
        is_configured: the treatment ``efface anonymize`` would apply with the given settings.
    """

    label: str
    spec: TransformSpec | None
    is_configured: bool = False

    @property
    def is_at_or_above_floor(self) -> bool:
        """Whether the legal floor admits it (treatments below it are references only, never certified)."""
        if self.spec is None:
            return False
        try:
            check_strength(self.spec)
        except WeakTransformError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class IdentityImage:
    """An image of a known person with the face box found on the clean image."""

    path: Path
    label: str
    box: BBox


@dataclass(frozen=True, slots=True)
class StrengthRow:
    """Rank-1 identification for one treatment, recognizer and attacker."""

    treatment: str
    recognizer: str
    attacker: Attacker | None
    rank1: float
    probes: int
    is_configured: bool
    is_at_or_above_floor: bool
    # Averaged per identity: a constant answer (e.g. every filled face embedding alike) scores exactly chance.
    rank1_per_identity: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "treatment": self.treatment,
            "recognizer": self.recognizer,
            "attacker": self.attacker.value if self.attacker else None,
            "rank1": self.rank1,
            "rank1_per_identity": self.rank1_per_identity,
            "probes": self.probes,
            "is_configured": self.is_configured,
            "is_at_or_above_floor": self.is_at_or_above_floor,
        }


@dataclass(frozen=True, slots=True)
class StrengthReport:
    """All rows plus the sample's size.

    Attributes:
        rows: one per treatment x recognizer x attacker (the clean reference has no attacker).
        identities: people with a gallery image and at least one probe.
        gallery_size: gallery entries including distractors.
        probes: probe images.
        skipped: images without a detectable face on the clean image (not counted).
        duration_s: wall time.
    """

    rows: tuple[StrengthRow, ...]
    identities: int
    gallery_size: int
    probes: int
    skipped: tuple[str, ...]
    duration_s: float

    @property
    def chance(self) -> float:
        return 1.0 / self.gallery_size if self.gallery_size else 0.0

    def rank1(self, treatment: str, recognizer: str, attacker: Attacker | None) -> float:
        for row in self.rows:
            if (row.treatment, row.recognizer, row.attacker) == (treatment, recognizer, attacker):
                return row.rank1
        raise KeyError((treatment, recognizer, attacker))

    def as_dict(self) -> dict[str, object]:
        return {
            "identities": self.identities,
            "gallery_size": self.gallery_size,
            "probes": self.probes,
            "chance": self.chance,
            "skipped": list(self.skipped),
            "duration_s": self.duration_s,
            "rows": [row.as_dict() for row in self.rows],
        }


def standard_treatments(configured: TransformSpec) -> list[Treatment]:
    """The reference table: clean, a below-floor blur (to show the test has teeth), the floor, efface's
    methods at their defaults, a solid fill of the same region, and the configured setting.

    Every treatment uses the configured region (mask shape and box scale), so they differ only in what is
    done inside it.
    """
    # The configured region with every other field at its default.
    defaults = TransformSpec(mask_shape=configured.mask_shape, box_scale=configured.box_scale)
    table = [
        Treatment("clean (no treatment)", None),
        Treatment(
            "blur, 2 px kernel (below the floor, reference)",
            dataclasses.replace(defaults, method=Method.BLUR, blur_kernel_fraction=0.02),
        ),
        Treatment(
            "blur, kernel 0.1 x face (the legal floor)",
            dataclasses.replace(defaults, method=Method.BLUR, blur_kernel_fraction=0.1),
        ),
        Treatment(
            f"blur, kernel {defaults.blur_kernel_fraction:g} x face (sigma = face / 4)",
            dataclasses.replace(defaults, method=Method.BLUR),
        ),
        Treatment(
            "pixelate, 10 blocks (the floor)", dataclasses.replace(defaults, method=Method.PIXELATE, pixelate_blocks=10)
        ),
        Treatment(
            f"pixelate, {defaults.pixelate_blocks} blocks", dataclasses.replace(defaults, method=Method.PIXELATE)
        ),
        Treatment("solid fill", dataclasses.replace(defaults, method=Method.FILL)),
    ]
    for index, treatment in enumerate(table):
        if treatment.spec == configured:
            table[index] = Treatment(treatment.label, treatment.spec, is_configured=True)
            return table
    table.append(Treatment("configured setting", configured, is_configured=True))
    return table


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_identities(people_dir: Path) -> dict[str, list[Path]]:
    """People with two or more images: ``PERSON/*.jpg``.

    Raises:
        InputNotFoundError: the folder is missing or holds no person with two images.
    """
    if not people_dir.is_dir():
        raise InputNotFoundError("no such folder", path=people_dir)
    people = {d.name: _images_in(d) for d in sorted(people_dir.iterdir()) if d.is_dir()}
    people = {name: images for name, images in people.items() if len(images) >= 2}
    if not people:
        raise InputNotFoundError("no person folder with two or more images (PERSON/*.jpg)", path=people_dir)
    return people


def main_face(faces: tuple[Face, ...], width: int, height: int) -> Face | None:
    """The face the picture is about: the largest, ties broken by closeness to the centre."""
    if not faces:
        return None
    cx, cy = width / 2, height / 2
    return max(faces, key=lambda f: (f.box.area, -abs(f.box.center_xy[0] - cx) - abs(f.box.center_xy[1] - cy)))


@dataclass(frozen=True, slots=True)
class _Loaded:
    item: IdentityImage
    pixels: ImageArray
    faces: tuple[Face, ...]


def measure_strength(
    people_dir: Path,
    *,
    detector: FaceDetector,
    codec: CodecOptions,
    treatments: Sequence[Treatment],
    recognizers: Sequence[FaceRecognizer],
    distractors_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> StrengthReport:
    """Measures rank-1 identification of anonymized faces.

    Args:
        people_dir: identities, ``PERSON/*.jpg``.
        detector: the detector ``efface anonymize`` would use.
        codec: its decoding limits; the anonymizer comes from each treatment.
        treatments: what to test; include a ``spec=None`` entry for the clean reference.
        recognizers: the face recognition models.
        distractors_dir: images of further people, enrolled in the gallery only.
        on_step: progress callback, called with a short description.

    Raises:
        InputError: the folder layout is wrong or an image cannot be decoded.
    """
    t0 = time.perf_counter()
    people = load_identities(people_dir)
    distractors = _images_in(distractors_dir) if distractors_dir is not None else []
    skipped: list[str] = []

    def load(path: Path, label: str) -> _Loaded | None:
        pixels = decode_image(path.read_bytes(), path=path, options=codec).pixels
        faces = detector.detect(pixels)
        face = main_face(faces, pixels.shape[1], pixels.shape[0])
        if face is None:
            skipped.append(str(path))
            return None
        return _Loaded(IdentityImage(path, label, face.box), pixels, faces)

    gallery: list[_Loaded] = []
    probes: list[_Loaded] = []
    for name, paths in people.items():
        enrolled = load(paths[0], name)
        if enrolled is None:
            continue
        person_probes = [p for p in (load(path, name) for path in paths[1:]) if p is not None]
        if person_probes:
            gallery.append(enrolled)
            probes.extend(person_probes)
    for index, path in enumerate(distractors):
        loaded = load(path, f"__distractor_{index}")
        if loaded is not None:
            gallery.append(loaded)
    if not probes:
        raise InputNotFoundError("no probe image with a detectable face", path=people_dir)
    if on_step is not None:
        on_step(f"{len(gallery)} gallery, {len(probes)} probes")

    def embed(
        recognizer: FaceRecognizer, loaded: Sequence[_Loaded], images: Sequence[ImageArray]
    ) -> npt.NDArray[np.float32]:
        return np.stack([recognizer.embed(image, item.item.box) for item, image in zip(loaded, images, strict=True)])

    def treat(spec: TransformSpec, loaded: Sequence[_Loaded], *, is_above_floor: bool) -> list[ImageArray]:
        anonymizer = Anonymizer(spec) if is_above_floor else _UncheckedAnonymizer(spec)
        # Exactly what ``anonymize`` does: every face the detector found on the image, not only the main one.
        return [anonymizer.apply(item.pixels, item.faces)[0] for item in loaded]

    gallery_labels = [item.item.label for item in gallery]
    probe_labels = [item.item.label for item in probes]
    rows: list[StrengthRow] = []
    clean_gallery = {r.name: embed(r, gallery, [g.pixels for g in gallery]) for r in recognizers}
    for treatment in treatments:
        if on_step is not None:
            on_step(treatment.label)
        floor_ok = treatment.is_at_or_above_floor
        if treatment.spec is None:
            for recognizer in recognizers:
                clean_probes = embed(recognizer, probes, [p.pixels for p in probes])
                args = (clean_gallery[recognizer.name], gallery_labels, clean_probes, probe_labels)
                rows.append(
                    StrengthRow(
                        treatment.label,
                        recognizer.name,
                        None,
                        rank1_identification(*args),
                        len(probes),
                        False,
                        False,
                        rank1_identification(*args, is_per_identity=True),
                    )
                )
            continue
        treated_probes = treat(treatment.spec, probes, is_above_floor=floor_ok)
        treated_gallery = treat(treatment.spec, gallery, is_above_floor=floor_ok)
        for recognizer in recognizers:
            probe_embeddings = embed(recognizer, probes, treated_probes)
            for attacker, gallery_embeddings in (
                (Attacker.NAIVE, clean_gallery[recognizer.name]),
                (Attacker.INFORMED, embed(recognizer, gallery, treated_gallery)),
            ):
                args = (gallery_embeddings, gallery_labels, probe_embeddings, probe_labels)
                rows.append(
                    StrengthRow(
                        treatment.label,
                        recognizer.name,
                        attacker,
                        rank1_identification(*args),
                        len(probes),
                        treatment.is_configured,
                        floor_ok,
                        rank1_identification(*args, is_per_identity=True),
                    )
                )
    return StrengthReport(
        rows=tuple(rows),
        identities=sum(1 for g in gallery if not g.item.label.startswith("__distractor_")),
        gallery_size=len(gallery),
        probes=len(probes),
        skipped=tuple(skipped),
        duration_s=time.perf_counter() - t0,
    )


class _UncheckedAnonymizer(Anonymizer):
    """A below-floor transform, built only to show that it is re-identified (the test's teeth).

    It is never used to anonymize files: the floor check stays the one gate of every ``Anonymizer``.
    """

    def __init__(self, spec: TransformSpec) -> None:
        self.spec = spec


FILL_TOLERANCE = 0.01
CHANCE_FACTOR = 2.0
_EPSILON = 1e-9  # rates are ratios of small counts; 2/100 must equal 2 x 1/100


def verdict(report: StrengthReport) -> tuple[bool, list[str]]:
    """Whether the configured setting is verified, and why not.

    Verified: for every recognizer and attacker, the configured treatment is identified no more often than a
    solid fill of the same region (within ``FILL_TOLERANCE``), that fill is at most ``CHANCE_FACTOR`` x
    chance (the region is large enough), and the setting is at or above the legal floor.

    The fill's chance test uses rank-1 averaged per identity where it was measured. Counted per probe, a
    recognizer that gives every filled face the same embedding, and so the same answer, scores the share of
    probes that happen to belong to that one person (5 of 243 on the LFW sample, 2.1x chance) although it
    identifies nobody; averaged per identity, that constant answer scores exactly chance.
    """
    reasons: list[str] = []
    configured = [row for row in report.rows if row.is_configured]
    fills = {(row.recognizer, row.attacker): row for row in report.rows if row.treatment == "solid fill"}
    if not configured:
        return False, ["the configured setting was not measured"]
    for row in configured:
        if not row.is_at_or_above_floor:
            reasons.append("the configured setting is below the legal floor")
        fill = fills.get((row.recognizer, row.attacker))
        if fill is None:
            reasons.append("no solid-fill reference was measured")
            continue
        who = f"{row.recognizer}/{row.attacker.value if row.attacker else '-'}"
        if row.rank1 > fill.rank1 + FILL_TOLERANCE:
            reasons.append(f"{who}: rank-1 {row.rank1:.3f} exceeds the fill's {fill.rank1:.3f} + {FILL_TOLERANCE}")
        fill_rate = fill.rank1 if fill.rank1_per_identity is None else fill.rank1_per_identity
        if fill_rate > CHANCE_FACTOR * report.chance + _EPSILON:
            reasons.append(
                f"{who}: even the fill is identified {fill_rate:.3f} > {CHANCE_FACTOR:g} x chance; grow the region"
            )
    return not reasons, sorted(set(reasons))
