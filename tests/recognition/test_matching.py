"""The fail-safe decisions of selective anonymization, on similarities made up to sit either side of the lines."""

from __future__ import annotations

import numpy as np
import pytest

from efface.recognition.matching import (
    MatchMode,
    Thresholds,
    choose_thresholds,
    is_subject,
    measure_matching,
    reference_similarity,
    track_is_subject,
)

LINES = Thresholds(
    keep={"dlib": 0.93, "facenet": 0.58}, close={"dlib": 0.9, "facenet": 0.45}, other={"dlib": 0.8, "facenet": 0.2}
)


@pytest.mark.parametrize(
    ("dlib", "facenet", "kept", "anonymized_as_subject"),
    [
        (0.95, 0.70, True, True),  # both sure
        (0.95, 0.50, False, True),  # one recognizer not sure: a third party would leak, so not kept
        (0.91, 0.40, False, True),  # close for dlib: anonymized under --only-person
        (0.85, 0.30, False, False),  # nobody close
        (None, 0.90, False, True),  # too small or turned for dlib: not kept; close for facenet
        (None, None, False, False),
    ],
)
def test_a_face_is_kept_only_when_every_recognizer_is_sure(
    dlib: float | None, facenet: float | None, kept: bool, anonymized_as_subject: bool
) -> None:
    similarities = {"dlib": dlib, "facenet": facenet}
    assert is_subject(similarities, mode=MatchMode.KEEP, thresholds=LINES) is kept
    assert is_subject(similarities, mode=MatchMode.ONLY, thresholds=LINES) is anonymized_as_subject


def test_a_track_is_kept_whole_or_not_at_all() -> None:
    sure, unsure, unseen = (
        {"dlib": 0.95, "facenet": 0.7},
        {"dlib": 0.92, "facenet": 0.5},
        {"dlib": None, "facenet": None},
    )
    other = {"dlib": 0.7, "facenet": 0.6}  # dlib is sure it is someone else
    assert track_is_subject([sure, sure, unsure, unseen], mode=MatchMode.KEEP, thresholds=LINES)  # 2 of 3 sure
    assert not track_is_subject([sure, unsure, unsure], mode=MatchMode.KEEP, thresholds=LINES)
    assert not track_is_subject([sure, sure, sure, other], mode=MatchMode.KEEP, thresholds=LINES)  # contradicted
    assert not track_is_subject([unseen, unseen], mode=MatchMode.KEEP, thresholds=LINES)  # never recognized
    assert track_is_subject([unseen, {"dlib": 0.91, "facenet": None}], mode=MatchMode.ONLY, thresholds=LINES)


def test_thresholds_must_be_ordered_and_for_the_same_recognizers() -> None:
    with pytest.raises(ValueError, match="other <= close <= keep"):
        Thresholds(keep={"dlib": 0.5}, close={"dlib": 0.6}, other={"dlib": 0.1})
    with pytest.raises(ValueError, match="same recognizers"):
        Thresholds(keep={"dlib": 0.9}, close={"facenet": 0.5}, other={"dlib": 0.1})
    with pytest.raises(ValueError, match="expected similarities"):
        is_subject({"dlib": 0.99}, mode=MatchMode.KEEP, thresholds=LINES)


def test_the_similarity_is_to_the_nearest_reference() -> None:
    references = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert reference_similarity([0.0, 5.0], references) == pytest.approx(1.0)
    assert reference_similarity([1.0, 1.0], references) == pytest.approx(2**-0.5)
    with pytest.raises(ValueError, match="non-zero"):
        reference_similarity([0.0, 0.0], references)
    with pytest.raises(ValueError, match="references"):
        reference_similarity([1.0, 0.0], np.zeros((0, 2)))


def test_thresholds_chosen_on_people_hold_their_leak_rate_on_others() -> None:
    """Made-up embeddings: each person a direction, faces scattered about it; thresholds chosen on half the
    people keep the leak under what was asked on the other half, and keep most of the subjects' faces."""
    rng = np.random.default_rng(5)
    labels, vectors = [], {"a": [], "b": []}
    for person in range(60):
        centre = {name: rng.normal(size=32) for name in vectors}
        for _ in range(4):
            labels.append(f"p{person}")
            for name in vectors:
                vectors[name].append(centre[name] + rng.normal(scale=0.35, size=32) * np.linalg.norm(centre[name]) / 5)
    embeddings = {name: np.array(v) for name, v in vectors.items()}
    chosen, measured = {f"p{i}" for i in range(0, 60, 2)}, {f"p{i}" for i in range(1, 60, 2)}
    thresholds = choose_thresholds(embeddings, labels, chosen, leak_rate=0.001)
    rates = measure_matching(embeddings, labels, measured, thresholds=thresholds)
    assert rates.third_party_faces == 30 * (240 - 4) and rates.subject_faces == 30 * 3
    assert rates.leak_rate <= 0.001
    assert rates.subject_kept_rate > 0.8 and rates.only_missed_rate < 0.2


def test_several_references_per_person_compare_each_face_with_the_nearest_of_them() -> None:
    """Three made-up faces of p (one far from the other two) and one of q: with p's first two faces as references
    a probe near either is the subject, and q's face is compared with both (its best similarity counts)."""
    from efface.recognition.matching import _pairs

    labels = ["p", "p", "p", "q"]
    angles = [0.0, 90.0, 85.0, 45.0]  # p's third face is near p's second reference, not its first
    vectors = np.array([[np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))] for a in angles])
    subject, third = _pairs(labels, {"p"}, references=2)
    assert subject == [((0, 1), 2)] and third == [((0, 1), 3)]
    assert _pairs(labels, {"q"}, references=2) == ([], [])  # q has too few faces to be a subject
    thresholds = Thresholds(keep={"a": 0.99}, close={"a": 0.9}, other={"a": 0.5})
    one = measure_matching({"a": vectors}, labels, {"p"}, thresholds=thresholds)
    two = measure_matching({"a": vectors}, labels, {"p"}, thresholds=thresholds, references=2)
    assert one.subject_kept_rate == 0.0 and one.subject_faces == 2  # near neither probe: both missed
    assert two.subject_kept_rate == 1.0 and two.subject_faces == 1 and two.third_party_faces == 1
    with pytest.raises(ValueError, match="at least one reference"):
        _pairs(labels, {"p"}, references=0)
