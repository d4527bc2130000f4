"""Measures the matcher of selective anonymization (``recognition.matching``) on a folder of people, as
``efface verify identity`` does: how often a third party would be kept visible (the leak rate) and how often
the data subject is, at thresholds chosen for a leak rate on some of the people and measured on the others.

Each picture's face (the largest, as ``verify strength`` takes it) is embedded by every recognizer; each person's
first picture is their reference, every other face a comparison. The people are split in two halves (every
other person, in name order): thresholds chosen on one half (with the distractors as further strangers) are
measured on the other, and the reverse; the rates are pooled over both. The thresholds the report gives as
those to use are chosen on every person.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from efface.detection.base import FaceDetector
from efface.errors import InputError, UnreadableFileError
from efface.media.images import CodecOptions, decode_image
from efface.recognition.matching import MatchRates, Thresholds, choose_thresholds, measure_matching
from efface.recognition.recognizers import FaceRecognizer
from efface.recognition.selection import DEFAULT_THRESHOLDS
from efface.verify.strength import load_identities, main_face

__all__ = ["IdentityReport", "measure_identity"]

_DISTRACTOR = "distractor:"


@dataclass(frozen=True, slots=True)
class IdentityReport:
    """What ``measure_identity`` found.

    Attributes:
        people: people with two faces or more that were embedded.
        faces: faces embedded (people's and distractors').
        skipped: pictures with no face found, or one a recognizer could not embed.
        target_leak_rate: the leak rate the thresholds were chosen for.
        thresholds: chosen on every person: the ones to use.
        folds: per half, the thresholds chosen on the other half and the rates they gave.
        rates: the rates pooled over both halves, each measured at thresholds not chosen on it.
        recognizers: their names.
        references: reference faces per person (each person's first ones).
        at_defaults: the rates of efface's default thresholds (``DEFAULT_THRESHOLDS``) on every person, with
            ``references`` faces each: what ``--keep-person`` with that many photos does here.
    """

    people: int
    faces: int
    skipped: int
    target_leak_rate: float
    thresholds: Thresholds
    folds: tuple[tuple[Thresholds, MatchRates], ...]
    rates: MatchRates
    recognizers: tuple[str, ...]
    references: int = 1
    at_defaults: MatchRates | None = None

    @property
    def passed(self) -> bool:
        """The pooled leak rate is at most the target."""
        return self.rates.leak_rate <= self.target_leak_rate

    def as_dict(self) -> dict[str, object]:
        return {
            "people": self.people,
            "faces": self.faces,
            "skipped": self.skipped,
            "target_leak_rate": self.target_leak_rate,
            "recognizers": list(self.recognizers),
            "thresholds": self.thresholds.as_dict(),
            "rates": self.rates.as_dict(),
            "folds": [{"thresholds": t.as_dict(), "rates": r.as_dict()} for t, r in self.folds],
            "references": self.references,
            "at_default_thresholds": self.at_defaults.as_dict() if self.at_defaults is not None else None,
        }


def measure_identity(
    people_dir: Path,
    *,
    detector: FaceDetector,
    codec: CodecOptions,
    recognizers: Sequence[FaceRecognizer],
    distractors_dir: Path | None = None,
    leak_rate: float = 0.001,
    references: int = 1,
    on_step: Callable[[str], None] | None = None,
) -> IdentityReport:
    """Embeds every face of ``people_dir`` (``PERSON/*.jpg``) and of ``distractors_dir`` and measures the matcher.

    Raises:
        InputNotFoundError: no person with two pictures.
        ValueError: fewer than two people with two embedded faces, or a leak rate outside (0, 1).
    """
    if not 0.0 < leak_rate < 1.0:
        raise ValueError(f"leak_rate must be in (0, 1), got {leak_rate}")
    items = [(person, path) for person, paths in load_identities(people_dir).items() for path in paths]
    if distractors_dir is not None:
        items += [(f"{_DISTRACTOR}{path.stem}", path) for path in sorted(distractors_dir.glob("*.jpg"))]
    labels: list[str] = []
    vectors: dict[str, list[np.ndarray]] = {recognizer.name: [] for recognizer in recognizers}
    skipped = 0
    for label, path in items:
        if on_step is not None:
            on_step(path.name)
        try:
            pixels = decode_image(path.read_bytes(), path=path, options=codec).pixels
        except OSError as exc:
            raise UnreadableFileError(f"cannot read: {exc.strerror or exc}", path=path) from exc
        except InputError:
            skipped += 1
            continue
        face = main_face(detector.detect(pixels), pixels.shape[1], pixels.shape[0])
        if face is None:
            skipped += 1
            continue
        embedded = [recognizer.embed(pixels, face.box) for recognizer in recognizers]
        labels.append(label)
        for recognizer, vector in zip(recognizers, embedded, strict=True):
            vectors[recognizer.name].append(vector)
    embeddings = {name: np.asarray(found) for name, found in vectors.items()}
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    needed = references + 1
    people = sorted(label for label, n in counts.items() if n >= needed and not label.startswith(_DISTRACTOR))
    if len(people) < 2:
        raise ValueError(f"expected two people or more with {needed} embedded faces each, got {len(people)}")
    halves = (set(people[0::2]), set(people[1::2]))
    folds = []
    for chosen, measured in (halves, halves[::-1]):
        thresholds = _chosen(embeddings, labels, chosen, leak_rate=leak_rate, references=references)
        rows = [i for i, label in enumerate(labels) if label in measured or label.startswith(_DISTRACTOR)]
        subset = {name: vectors_[rows] for name, vectors_ in embeddings.items()}
        rates = measure_matching(
            subset, [labels[i] for i in rows], measured, thresholds=thresholds, references=references
        )
        folds.append((thresholds, rates))
    return IdentityReport(
        people=len(people),
        faces=len(labels),
        skipped=skipped,
        target_leak_rate=leak_rate,
        thresholds=choose_thresholds(embeddings, labels, set(people), leak_rate=leak_rate, references=references),
        folds=tuple(folds),
        rates=_pooled([rates for _, rates in folds]),
        recognizers=tuple(recognizer.name for recognizer in recognizers),
        references=references,
        at_defaults=_at_defaults(embeddings, labels, set(people), references=references),
    )


def _at_defaults(
    embeddings: dict[str, np.ndarray], labels: list[str], people: set[str], *, references: int
) -> MatchRates | None:
    """The default thresholds' rates on every person (None when the recognizers measured are not the defaults')."""
    if set(embeddings) != set(DEFAULT_THRESHOLDS.keep):
        return None
    return measure_matching(embeddings, labels, people, thresholds=DEFAULT_THRESHOLDS, references=references)


def _chosen(
    embeddings: dict[str, np.ndarray], labels: list[str], people: set[str], *, leak_rate: float, references: int
) -> Thresholds:
    """Thresholds chosen on ``people`` and the distractors only (the other half is left out)."""
    rows = [i for i, label in enumerate(labels) if label in people or label.startswith(_DISTRACTOR)]
    subset = {name: vectors[rows] for name, vectors in embeddings.items()}
    return choose_thresholds(subset, [labels[i] for i in rows], people, leak_rate=leak_rate, references=references)


def _pooled(folds: Sequence[MatchRates]) -> MatchRates:
    third = sum(rates.third_party_faces for rates in folds)
    own = sum(rates.subject_faces for rates in folds)
    return MatchRates(
        leak_rate=sum(r.leak_rate * r.third_party_faces for r in folds) / third if third else 0.0,
        subject_kept_rate=sum(r.subject_kept_rate * r.subject_faces for r in folds) / own if own else 0.0,
        only_missed_rate=sum(r.only_missed_rate * r.subject_faces for r in folds) / own if own else 0.0,
        third_party_faces=third,
        subject_faces=own,
        only_others_rate=sum(r.only_others_rate * r.third_party_faces for r in folds) / third if third else 0.0,
    )
