"""Selective anonymization: which of a picture's faces are the data subject's, from reference photos of them.

``--keep-person REF`` anonymizes every face but the subject's (a subject access request: Art. 15(4));
``--only-person REF`` anonymizes only the subject's (an erasure request: Art. 17). ``load_person`` turns a
person's reference photos into embeddings held in memory (never written: the audit keeps only the references'
sha256 and counts); a ``Selection`` is those people, the mode and the thresholds, and rides in the ``Policy``.
``choose_faces`` decides a picture's faces, ``TrackVotes`` a video's tracks (``recognition.matching`` holds the
fail-safe rules).

A face too small (its box's shorter side under ``MIN_RECOGNIZED_PX``), too turned (its nose far off the line
between its eyes, when the detector gives landmarks) or that a recognizer cannot embed is *unrecognized*: it is
anonymized in both modes, as nobody can say it is not the subject nor that it is.

The recognizers (dlib's ResNet and FaceNet) are loaded once per process, on first use (``shared_recognizers``),
and used under a lock: OpenCV's and dlib's networks are not to be run from two threads at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from efface.arrays import ImageArray
from efface.detection.base import FaceDetector
from efface.errors import ConfigurationError, InputError, ModelError
from efface.media.images import CodecOptions, decode_image
from efface.recognition.matching import (
    TRACK_SHARE,
    MatchMode,
    Thresholds,
    is_subject,
    reference_similarity,
    track_is_subject,
)
from efface.recognition.recognizers import RECOGNIZER_NAMES, FaceRecognizer, load_recognizers
from efface.records import Face

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MIN_RECOGNIZED_PX",
    "Chosen",
    "IdentityCounts",
    "Person",
    "Selection",
    "TrackVotes",
    "Verdict",
    "choose_faces",
    "load_person",
    "references_sha256",
    "shared_recognizers",
]

# A face whose box's shorter side is under this many pixels is too small to tell who it is.
MIN_RECOGNIZED_PX = 40
# A face whose nose is off the middle of its eyes by more than this share of the eye distance is too turned.
MAX_TURN = 0.45
# In a video, a track's face is embedded on a detected frame at most once per this many frames.
EMBED_EVERY_FRAMES = 5
# A reference photo's face must be at least this many times taller than any other face in it.
REFERENCE_DOMINANCE = 2.0

# Chosen by ``efface verify identity shared/data/faces-identity/people --distractors .../distractors`` (100 LFW
# people, 100 distractors, 443 faces) for a leak rate of 0.001 per recognizer, rounded the strict way (keep and
# other up, close down); measured there on people not used to choose them: 2 third parties kept of 26,807
# (0.00007), the subject kept on 0.831 of 243 faces, none missed under only-person (see the README).
DEFAULT_THRESHOLDS = Thresholds(
    keep={"dlib": 0.9269, "facenet": 0.5669},
    close={"dlib": 0.9001, "facenet": 0.3696},
    other={"dlib": 0.8427, "facenet": 0.1352},
)


class Verdict(StrEnum):
    """Who a face (or a video track) is."""

    SUBJECT = "subject"  # one of the reference people
    OTHER = "other"  # recognized, and not one of them
    UNRECOGNIZED = "unrecognized"  # too small, too turned, or not embedded: anonymized in both modes


@dataclass(frozen=True, slots=True, eq=False)
class Person:
    """One person's reference faces, embedded; in memory only.

    Attributes:
        embeddings: per recognizer, float32 (R, D), one unit row per reference photo.
        sha256: each reference photo's sha256, in the order given.
    """

    embeddings: Mapping[str, npt.NDArray[np.float32]] = field(repr=False)
    sha256: tuple[str, ...]

    @property
    def references(self) -> int:
        return len(self.sha256)

    def similarities(self, embedded: Mapping[str, npt.NDArray[np.float32] | None]) -> dict[str, float | None]:
        """Per recognizer, the face's similarity to the nearest of this person's references (None: not embedded)."""
        return {
            name: None if vector is None else reference_similarity(vector, self.embeddings[name])
            for name, vector in embedded.items()
        }


def references_sha256(people: Sequence[Person]) -> str:
    """One sha256 for a set of people's reference photos: of each person's sorted photo hashes, the people sorted
    (the order the options were given in does not change it)."""
    canonical = sorted(sorted(person.sha256) for person in people)
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True, slots=True, eq=False)
class Selection:
    """Whose faces are anonymized: everyone's but these people's (``KEEP``), or only theirs (``ONLY``).

    Attributes:
        mode: keep the people visible, or anonymize only them.
        people: their references (at least one person).
        thresholds: per recognizer (``DEFAULT_THRESHOLDS``, chosen by ``verify identity``).
        min_face_px: faces smaller are unrecognized.
        track_share: the share of a video track's recognized frames that must be sure of the subject to keep it.
    """

    mode: MatchMode
    people: tuple[Person, ...]
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    min_face_px: int = MIN_RECOGNIZED_PX
    track_share: float = TRACK_SHARE

    def __post_init__(self) -> None:
        if not self.people:
            raise ConfigurationError("selective anonymization needs at least one person's reference photos")
        names = set(self.thresholds.keep)
        for person in self.people:
            if set(person.embeddings) != names:
                raise ConfigurationError(
                    f"expected references embedded by {sorted(names)}, got {sorted(person.embeddings)}"
                )

    @property
    def recognizers(self) -> tuple[str, ...]:
        return tuple(sorted(self.thresholds.keep))

    def audited(self) -> dict[str, object]:
        """What the audit log records of it: no embedding and no photo, only counts, hashes and settings."""
        return {
            "mode": self.mode.value,
            "people": len(self.people),
            "references": sum(person.references for person in self.people),
            "references_sha256": references_sha256(self.people),
            "recognizers": list(self.recognizers),
            "thresholds": self.thresholds.as_dict(),
            "min_face_px": self.min_face_px,
            "max_turn": MAX_TURN,
            "track_share": self.track_share,
            "embed_every_frames": EMBED_EVERY_FRAMES,
        }

    def is_anonymized(self, verdict: Verdict) -> bool:
        """Whether a face (or track) with this verdict is anonymized."""
        if verdict is Verdict.UNRECOGNIZED:
            return True
        return (verdict is Verdict.SUBJECT) is (self.mode is MatchMode.ONLY)

    def verdict(self, embedded: Mapping[str, npt.NDArray[np.float32] | None]) -> Verdict:
        """One face's verdict, from its embeddings (None where a recognizer could not embed it)."""
        if any(vector is None for vector in embedded.values()):
            return Verdict.UNRECOGNIZED
        found = any(
            is_subject(person.similarities(embedded), mode=self.mode, thresholds=self.thresholds)
            for person in self.people
        )
        return Verdict.SUBJECT if found else Verdict.OTHER

    def track_verdict(self, frames: Sequence[Mapping[str, npt.NDArray[np.float32] | None]]) -> Verdict:
        """A video track's verdict, from its face's embeddings on some of its frames (decided once for the track)."""
        recognized = [frame for frame in frames if all(vector is not None for vector in frame.values())]
        if not recognized:
            return Verdict.UNRECOGNIZED
        found = any(
            track_is_subject(
                [person.similarities(frame) for frame in frames],
                mode=self.mode,
                thresholds=self.thresholds,
                share=self.track_share,
            )
            for person in self.people
        )
        return Verdict.SUBJECT if found else Verdict.OTHER


@dataclass(frozen=True, slots=True)
class IdentityCounts:
    """How a file's faces (a video's tracks) were decided, for the audit log.

    Attributes:
        kept: faces (tracks) left visible by identity.
        anonymized: faces (tracks) anonymized by identity (the others under ``keep``, the subject's under ``only``).
        unrecognized: faces (tracks) too small or turned to be told apart, anonymized.
        boxes_kept: in a video, the frame boxes left visible (the kept tracks' boxes on every frame).
    """

    kept: int = 0
    anonymized: int = 0
    unrecognized: int = 0
    boxes_kept: int | None = None

    def as_dict(self) -> dict[str, int]:
        counts = {"kept": self.kept, "anonymized": self.anonymized, "unrecognized": self.unrecognized}
        if self.boxes_kept is not None:
            counts["boxes_kept"] = self.boxes_kept
        return counts


@functools.cache
def _recognizers(names: tuple[str, ...]) -> tuple[FaceRecognizer, ...]:
    return tuple(load_recognizers(names))


_lock = threading.Lock()


def shared_recognizers(names: Sequence[str] = RECOGNIZER_NAMES) -> tuple[FaceRecognizer, ...]:
    """This process's recognizers, loaded on first use.

    Raises:
        ConfigurationError: a recognizer's package is not installed (``pip install 'efface[verify]'``).
        ModelError: a model file cannot be loaded.
    """
    with _lock:
        return _recognizers(tuple(names))


def is_recognizable(face: Face, *, min_face_px: int) -> bool:
    """Whether a face is large enough and frontal enough to tell who it is."""
    if min(face.box.width, face.box.height) < min_face_px:
        return False
    if len(face.landmarks_xy) == 5:
        (lx, ly), (rx, ry), (nx, ny) = face.landmarks_xy[:3]
        eyes = math.hypot(rx - lx, ry - ly)
        if eyes < 1.0:
            return False
        # the nose's distance from the perpendicular bisector of the eyes, over the eye distance
        mid_x, mid_y = (lx + rx) / 2, (ly + ry) / 2
        offset = abs((nx - mid_x) * (rx - lx) + (ny - mid_y) * (ry - ly)) / eyes
        return offset / eyes <= MAX_TURN
    return True


def embed_face(pixels: ImageArray, face: Face, *, selection: Selection) -> dict[str, npt.NDArray[np.float32] | None]:
    """A face's embedding by every recognizer of ``selection`` (all None when it is not recognizable, each None
    where that recognizer fails on it)."""
    recognizers = shared_recognizers(selection.recognizers)
    if not is_recognizable(face, min_face_px=selection.min_face_px):
        return dict.fromkeys(selection.recognizers)
    embedded: dict[str, npt.NDArray[np.float32] | None] = {}
    with _lock:
        for recognizer in recognizers:
            try:
                embedded[recognizer.name] = recognizer.embed(pixels, face.box)
            except (ValueError, ModelError):
                embedded[recognizer.name] = None
    return embedded


@dataclass(frozen=True, slots=True)
class Chosen:
    """A picture's faces, decided: those to anonymize, and the counts."""

    anonymized: tuple[Face, ...]
    counts: IdentityCounts


def choose_faces(pixels: ImageArray, faces: Sequence[Face], *, selection: Selection) -> Chosen:
    """Which of a picture's faces to anonymize under ``selection``.

    Raises:
        ConfigurationError: the recognizers are not installed.
        ModelError: they cannot be loaded.
    """
    anonymized: list[Face] = []
    verdicts: list[Verdict] = []
    for face in faces:
        verdict = selection.verdict(embed_face(pixels, face, selection=selection))
        verdicts.append(verdict)
        if selection.is_anonymized(verdict):
            anonymized.append(face)
    return Chosen(tuple(anonymized), _counts(verdicts, selection))


def _counts(verdicts: Sequence[Verdict], selection: Selection, *, boxes_kept: int | None = None) -> IdentityCounts:
    unrecognized = sum(v is Verdict.UNRECOGNIZED for v in verdicts)
    anonymized = sum(selection.is_anonymized(v) for v in verdicts) - unrecognized
    return IdentityCounts(
        kept=len(verdicts) - anonymized - unrecognized,
        anonymized=anonymized,
        unrecognized=unrecognized,
        boxes_kept=boxes_kept,
    )


class TrackVotes:
    """A video's tracks, embedded on some of their detected frames as the frames go by, then decided whole.

    ``add`` each final frame (upright pixels, its faces, their tracks, which were detected there); ``anonymized``
    then says which tracks to anonymize. A face of no track (-1) is always anonymized.
    """

    def __init__(self, selection: Selection) -> None:
        self._selection = selection
        self._frames: dict[int, list[dict[str, npt.NDArray[np.float32] | None]]] = {}
        self._last: dict[int, int] = {}

    def add(
        self,
        index: int,
        pixels: ImageArray,
        faces: Sequence[Face],
        track_ids: Sequence[int],
        is_detected: Sequence[bool],
    ) -> None:
        for face, track, detected in zip(faces, track_ids, is_detected, strict=True):
            if track < 0:
                continue
            self._frames.setdefault(track, [])
            last = self._last.get(track)
            if detected and (last is None or index - last >= EMBED_EVERY_FRAMES):
                self._frames[track].append(embed_face(pixels, face, selection=self._selection))
                self._last[track] = index

    def decided(self) -> dict[int, Verdict]:
        """Every track's verdict (a track never embedded, e.g. only carried, is unrecognized)."""
        return {track: self._selection.track_verdict(frames) for track, frames in self._frames.items()}

    def anonymized(self) -> frozenset[int]:
        """The tracks to anonymize."""
        return frozenset(track for track, verdict in self.decided().items() if self._selection.is_anonymized(verdict))

    def counts(self, *, boxes_kept: int) -> IdentityCounts:
        return _counts(list(self.decided().values()), self._selection, boxes_kept=boxes_kept)


def _reference_face(faces: Sequence[Face], *, path: Path, min_face_px: int) -> Face:
    """The one face a reference photo shows, refused when it has none, or two of like size (which one is the
    person's cannot be told), or one too small to recognize."""
    if not faces:
        raise InputError("no face found in this reference photo", path=path)
    ranked = sorted(faces, key=lambda face: face.box.height, reverse=True)
    if len(ranked) > 1 and ranked[0].box.height < REFERENCE_DOMINANCE * ranked[1].box.height:
        raise InputError(
            f"{len(ranked)} faces of like size in this reference photo: crop it to the person's face", path=path
        )
    face = ranked[0]
    if min(face.box.width, face.box.height) < min_face_px:
        raise InputError(
            f"the face in this reference photo is {face.box.width:.0f}x{face.box.height:.0f} px, too small to "
            f"recognize (at least {min_face_px} px a side)",
            path=path,
        )
    return face


def _reference_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError("no reference photo in this folder", path=path)
        return files
    if not path.is_file():
        raise InputError("no such reference photo or folder", path=path)
    return [path]


def load_person(
    sources: Path | Sequence[tuple[str, bytes]],
    *,
    detector: FaceDetector,
    codec: CodecOptions,
    names: Sequence[str] = RECOGNIZER_NAMES,
    min_face_px: int = MIN_RECOGNIZED_PX,
) -> Person:
    """One person from reference photos: an image file, a folder of them, or (name, bytes) pairs held in memory.

    Each photo must show the person's face as its one face (or by far its largest), large enough to recognize;
    every recognizer must embed it. Nothing is written: the photos are read, embedded and let go.

    Raises:
        InputError: a photo that cannot be read or decoded, with no face, with faces of like size, or too small.
        ConfigurationError: the recognizers are not installed.
        ModelError: they cannot be loaded.
    """
    if isinstance(sources, Path):
        items: list[tuple[Path, bytes]] = []
        for file in _reference_files(sources):
            try:
                items.append((file, file.read_bytes()))
            except OSError as exc:
                raise InputError(f"cannot read this reference photo: {exc.strerror or exc}", path=file) from exc
    else:
        items = [(Path(name), content) for name, content in sources]
        if not items:
            raise InputError("no reference photo given")
    recognizers = shared_recognizers(names)
    vectors: dict[str, list[npt.NDArray[np.float32]]] = {recognizer.name: [] for recognizer in recognizers}
    hashes: list[str] = []
    for path, content in items:
        pixels = decode_image(content, path=path, options=codec).pixels
        face = _reference_face(detector.detect(pixels), path=path, min_face_px=min_face_px)
        with _lock:
            for recognizer in recognizers:
                try:
                    vectors[recognizer.name].append(recognizer.embed(pixels, face.box))
                except (ValueError, ModelError) as exc:
                    raise InputError(
                        f"the {recognizer.name} recognizer cannot embed this face: {exc}", path=path
                    ) from exc
        hashes.append(hashlib.sha256(content).hexdigest())
    return Person({name: np.stack(rows) for name, rows in vectors.items()}, tuple(hashes))
