"""Telling the data subject apart from everyone else, fail-safe: the decisions of selective anonymization
(``--keep-person``: everyone but the subject anonymized; ``--only-person``: only the subject), from the cosine
similarities that face recognizers give a face against the reference photos of the person.

A third party kept by mistake is a leak; a subject anonymized by mistake is an inconvenience. So under
``keep``, a face is the subject only when every recognizer is sure (its similarity at or above its keep
threshold); a face a recognizer could not embed (too small, too turned) is not. Under ``only``, a face is the
subject when any recognizer finds it close (at or above its close threshold). In a video the decision is per
track: a whole track is kept only when enough of its recognized frames are sure and none is sure it is
someone else, so nobody is kept on some frames and anonymized on others.

Thresholds are chosen on labelled people (``choose_thresholds``): each recognizer's at the quantile of its
third-party similarities that the wanted leak rate leaves, measured apart on people not used to choose them
(``measure_matching``). Pure numpy; the recognizers themselves live in ``recognition.recognizers``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "MatchMode",
    "MatchRates",
    "Thresholds",
    "choose_thresholds",
    "is_subject",
    "measure_matching",
    "reference_similarity",
    "track_is_subject",
]

# A track is the subject's (keep) when at least this share of its recognized frames is sure of it.
TRACK_SHARE = 0.6


class MatchMode(StrEnum):
    """What the subject's faces are."""

    KEEP = "keep"  # kept visible; everyone else anonymized
    ONLY = "only"  # the only ones anonymized


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Per recognizer, the cosine similarity to the references at which a face is the subject.

    Attributes:
        keep: sure enough to keep a face visible (every recognizer must be).
        close: close enough to anonymize it under ``only`` (one recognizer is enough); at most ``keep``.
        other: below this a recognizer is sure the face is someone else (a track with such a frame is not kept).
    """

    keep: Mapping[str, float]
    close: Mapping[str, float]
    other: Mapping[str, float]

    def __post_init__(self) -> None:
        if set(self.keep) != set(self.close) or set(self.keep) != set(self.other) or not self.keep:
            raise ValueError(f"expected thresholds for the same recognizers, got {sorted(self.keep)}")
        for name in self.keep:
            values = (self.other[name], self.close[name], self.keep[name])
            if (
                not all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in values)
                or not values[0] <= values[1] <= values[2]
            ):
                raise ValueError(f"{name}: expected -1 <= other <= close <= keep <= 1, got {values}")

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {"keep": dict(self.keep), "close": dict(self.close), "other": dict(self.other)}


def reference_similarity(embedding: npt.ArrayLike, references: npt.ArrayLike) -> float:
    """The cosine similarity of a face's embedding to the nearest of the person's reference embeddings.

    Args:
        embedding: float (D,), any norm.
        references: float (R, D), R >= 1.

    Raises:
        ValueError: no reference, shapes that disagree, or a zero or non-finite vector.
    """
    face = np.asarray(embedding, dtype=np.float64)
    refs = np.asarray(references, dtype=np.float64)
    if refs.ndim != 2 or refs.shape[0] == 0 or face.shape != (refs.shape[1],):
        raise ValueError(f"expected an embedding (D,) and references (R>=1, D), got {face.shape} and {refs.shape}")
    norms = np.linalg.norm(refs, axis=1)
    norm = float(np.linalg.norm(face))
    if not (math.isfinite(norm) and norm > 0 and np.all(np.isfinite(norms)) and np.all(norms > 0)):
        raise ValueError("expected finite, non-zero embeddings")
    return float(np.max((refs / norms[:, None]) @ (face / norm)))


def is_subject(similarities: Mapping[str, float | None], *, mode: MatchMode, thresholds: Thresholds) -> bool:
    """Whether one face is the subject (None for a recognizer that could not embed it).

    Raises:
        ValueError: a similarity for a recognizer the thresholds do not know, or one missing.
    """
    if set(similarities) != set(thresholds.keep):
        raise ValueError(f"expected similarities of {sorted(thresholds.keep)}, got {sorted(similarities)}")
    if mode is MatchMode.KEEP:
        return all(s is not None and s >= thresholds.keep[name] for name, s in similarities.items())
    return any(s is not None and s >= thresholds.close[name] for name, s in similarities.items())


def track_is_subject(
    frames: Sequence[Mapping[str, float | None]], *, mode: MatchMode, thresholds: Thresholds, share: float = TRACK_SHARE
) -> bool:
    """Whether a video track is the subject's, decided once for all its frames.

    ``keep``: at least ``share`` of the frames where every recognizer embedded the face are sure of it, and no
    frame has a recognizer sure it is someone else (below ``other``). ``only``: any frame close enough.
    """
    if mode is MatchMode.ONLY:
        return any(is_subject(frame, mode=mode, thresholds=thresholds) for frame in frames)
    recognized = [frame for frame in frames if all(s is not None for s in frame.values())]
    if not recognized:
        return False
    contradicted = any(s is not None and s < thresholds.other[name] for frame in frames for name, s in frame.items())
    sure = sum(is_subject(frame, mode=mode, thresholds=thresholds) for frame in recognized)
    return not contradicted and sure >= share * len(recognized)


@dataclass(frozen=True, slots=True)
class MatchRates:
    """How a matcher did on labelled people.

    Attributes:
        leak_rate: third-party faces kept under ``keep`` (a leak), over third-party faces compared.
        subject_kept_rate: the subject's own faces kept under ``keep``, over theirs compared.
        only_missed_rate: the subject's own faces not anonymized under ``only``, over theirs compared.
        only_others_rate: third-party faces anonymized too under ``only`` (found close), over those compared.
        third_party_faces / subject_faces: the comparisons counted.
    """

    leak_rate: float
    subject_kept_rate: float
    only_missed_rate: float
    third_party_faces: int
    subject_faces: int
    only_others_rate: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "leak_rate": self.leak_rate,
            "subject_kept_rate": self.subject_kept_rate,
            "only_missed_rate": self.only_missed_rate,
            "only_others_rate": self.only_others_rate,
            "third_party_faces": self.third_party_faces,
            "subject_faces": self.subject_faces,
        }


_Pair = tuple[tuple[int, ...], int]  # (the reference faces, the face compared with them)


def _pairs(labels: Sequence[str], people: set[str], *, references: int = 1) -> tuple[list[_Pair], list[_Pair]]:
    """(references, probe) pairs: each person's first ``references`` faces are their references, every other face
    a probe (their own, or a third party's). A person with fewer faces than that is not a subject (their faces are
    still third parties to the others)."""
    if references < 1:
        raise ValueError(f"expected at least one reference face per person, got {references}")
    chosen: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        if label in people and len(chosen.setdefault(label, [])) < references:
            chosen[label].append(index)
    subject: list[_Pair] = []
    third: list[_Pair] = []
    for person, indices in chosen.items():
        if len(indices) < references:
            continue
        refs = tuple(indices)
        for index, label in enumerate(labels):
            if index not in refs:
                (subject if label == person else third).append((refs, index))
    return subject, third


def _cosines(embeddings: npt.NDArray[np.floating], pairs: list[_Pair]) -> npt.NDArray[np.float64]:
    """Each probe's similarity to the nearest of its references (as ``reference_similarity``)."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return np.array([float(np.max(unit[list(refs)] @ unit[probe])) for refs, probe in pairs], dtype=np.float64)


def choose_thresholds(
    embeddings: Mapping[str, npt.NDArray[np.floating]],
    labels: Sequence[str],
    people: set[str],
    *,
    leak_rate: float,
    references: int = 1,
) -> Thresholds:
    """Thresholds from labelled faces (the references: each person's first face): each recognizer's keep
    threshold at the ``1 - leak_rate`` quantile of its third-party similarities; its close threshold at the 1st
    percentile of the people's own similarities (so that ``only`` misses few of them: a subject left visible is
    the leak there); its other threshold at the median third-party similarity (half of all strangers score
    below it, almost none of the subject's faces).

    Args:
        embeddings: per recognizer, float (N, D) for the N faces.
        labels: each face's person (faces of no one in ``people`` serve as third parties only).
        people: the people to take references of.
        leak_rate: the share of third-party faces each recognizer alone may keep.
        references: reference faces per person (the first ones).
    """
    subject_pairs, third_pairs = _pairs(labels, people, references=references)
    if not subject_pairs or not third_pairs:
        raise ValueError("expected people with two faces or more, and third parties")
    keep, close, other = {}, {}, {}
    for name, vectors in embeddings.items():
        own, third = _cosines(np.asarray(vectors), subject_pairs), _cosines(np.asarray(vectors), third_pairs)
        keep[name] = float(np.quantile(third, 1.0 - leak_rate))
        close[name] = min(keep[name], float(np.quantile(own, 0.01)))
        other[name] = min(close[name], float(np.quantile(third, 0.5)))
    return Thresholds(keep, close, other)


def measure_matching(
    embeddings: Mapping[str, npt.NDArray[np.floating]],
    labels: Sequence[str],
    people: set[str],
    *,
    thresholds: Thresholds,
    references: int = 1,
) -> MatchRates:
    """The leak, subject-kept and only-missed rates of ``thresholds`` on these people (each person's first
    ``references`` faces their references, every other face compared with the nearest of them)."""
    subject_pairs, third_pairs = _pairs(labels, people, references=references)
    cosines = {
        name: (_cosines(np.asarray(vectors), subject_pairs), _cosines(np.asarray(vectors), third_pairs))
        for name, vectors in embeddings.items()
    }

    def decided(which: int, count: int, mode: MatchMode) -> int:
        return sum(
            is_subject({name: float(c[which][i]) for name, c in cosines.items()}, mode=mode, thresholds=thresholds)
            for i in range(count)
        )

    leaks = decided(1, len(third_pairs), MatchMode.KEEP)
    kept = decided(0, len(subject_pairs), MatchMode.KEEP)
    found = decided(0, len(subject_pairs), MatchMode.ONLY)
    others = decided(1, len(third_pairs), MatchMode.ONLY)
    return MatchRates(
        leak_rate=leaks / len(third_pairs) if third_pairs else 0.0,
        subject_kept_rate=kept / len(subject_pairs) if subject_pairs else 0.0,
        only_missed_rate=1.0 - found / len(subject_pairs) if subject_pairs else 0.0,
        third_party_faces=len(third_pairs),
        subject_faces=len(subject_pairs),
        only_others_rate=others / len(third_pairs) if third_pairs else 0.0,
    )
