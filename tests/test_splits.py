"""Deterministic splits: exact stratified counts before augmentation; speaker-disjoint speech."""

from __future__ import annotations

from collections import Counter

import pytest

from deepfusion.config import SplitRatios
from deepfusion.config.preprocess import SpeakerFolds
from deepfusion.splits import (
    NotEnoughImages,
    exact_split_counts,
    plan_balanced_split,
    speaker_disjoint_split,
    speaker_fold_split,
    speaker_folds,
)


def test_seed_counts_800_give_560_120_120():
    assert exact_split_counts(800, SplitRatios()) == {"train": 560, "val": 120, "test": 120}


def seed_sized_classes():
    # The seed's Table 1 sizes, as file names.
    sizes = {"clothes_dump": 698, "textile_dye": 537, "textile_billboard": 474}
    return {c: [f"{c}/{i}.jpg" for i in range(n)] for c, n in sizes.items()}


def test_balanced_plan_has_exact_counts_and_no_leakage():
    plan, unused = plan_balanced_split(seed_sized_classes(), 800, SplitRatios(), seed=0)
    counts = Counter((p.label_name, p.split) for p in plan)
    for label_name in ("clothes_dump", "textile_dye", "textile_billboard"):
        assert [counts[label_name, s] for s in ("train", "val", "test")] == [560, 120, 120]
    evaluation = {p.path for p in plan if p.split in ("val", "test")}
    training = {p.path for p in plan if p.split == "train"}
    assert not evaluation & training  # no augmented copy of an eval image reaches train
    assert all(p.copy_index == 0 for p in plan if p.split != "train")
    # 474 originals - 240 held out = 234 train originals, topped up by 326 augmented copies.
    billboard = [p for p in plan if p.label_name == "textile_billboard" and p.split == "train"]
    assert sum(p.copy_index == 0 for p in billboard) == 234
    assert sum(p.copy_index > 0 for p in billboard) == 326
    assert unused == {"clothes_dump": 0, "textile_dye": 0, "textile_billboard": 0}


def test_plan_is_deterministic_and_seeded():
    a, _ = plan_balanced_split(seed_sized_classes(), 800, SplitRatios(), seed=0)
    b, _ = plan_balanced_split(seed_sized_classes(), 800, SplitRatios(), seed=0)
    c, _ = plan_balanced_split(seed_sized_classes(), 800, SplitRatios(), seed=1)
    assert a == b
    assert {p.path for p in a if p.split == "val"} != {p.path for p in c if p.split == "val"}


def test_surplus_originals_are_reported_not_hidden():
    _, unused = plan_balanced_split({"a": [str(i) for i in range(50)]}, 20, SplitRatios(), seed=0)
    assert unused == {"a": 50 - 20}


def test_too_few_images_names_the_class():
    with pytest.raises(NotEnoughImages, match="'tiny' has 5 usable images"):
        plan_balanced_split({"tiny": ["a", "b", "c", "d", "e"]}, 800, SplitRatios(), seed=0)


def test_speaker_split_is_disjoint_and_close_to_ratios():
    speakers = [f"s{i % 20}" for i in range(400)]
    split_of = speaker_disjoint_split(speakers, ["corpus"] * 400, SplitRatios(), seed=0)
    assert set(split_of) == set(speakers)  # each speaker has exactly one split
    share = Counter(split_of[s] for s in speakers)
    assert share["train"] == 280 and share["val"] == 60 and share["test"] == 60


def _corpora():
    """Two corpora as in ../shared/data/speech: 24 speakers of 4 clips and 2 of 70."""
    speakers = [f"ravdess_{i % 24:02d}" for i in range(96)] + ["tess_OAF"] * 70 + ["tess_YAF"] * 70
    groups = ["RAVDESS"] * 96 + ["TESS"] * 140
    return speakers, groups


def test_speaker_folds_put_every_speaker_in_one_fold_and_spread_each_corpus():
    speakers, groups = _corpora()
    fold_of = speaker_folds(speakers, groups, count=5, seed=0)
    assert set(fold_of) == set(speakers) and set(fold_of.values()) == set(range(5))
    ravdess_per_fold = Counter(fold_of[s] for s, g in zip(speakers, groups) if g == "RAVDESS")
    assert sorted(ravdess_per_fold.values()) == [16, 20, 20, 20, 20]  # 24 speakers over 5 folds
    assert len({fold_of["tess_OAF"], fold_of["tess_YAF"]}) == 2  # never both in one fold
    assert speaker_folds(speakers, groups, count=5, seed=0) == fold_of
    assert speaker_folds(speakers, groups, count=5, seed=1) != fold_of


def test_each_clip_is_tested_in_exactly_one_fold_and_no_fold_leaks_a_speaker():
    speakers, groups = _corpora()
    tested = Counter()
    for k in range(5):
        split_of = speaker_fold_split(speakers, groups, SpeakerFolds(count=5, test=k), SplitRatios(), seed=0)
        assert set(split_of) == set(speakers)  # one split per speaker: no leak within the fold
        tested.update(i for i, s in enumerate(speakers) if split_of[s] == "test")
        rest = Counter(split_of[s] for s in speakers if split_of[s] != "test")
        assert rest["val"] > 0 and rest["train"] > 4 * rest["val"]  # train:val 70:15 by whole speakers
    assert sorted(tested) == list(range(len(speakers))) and set(tested.values()) == {1}


def test_a_test_fold_outside_the_folds_is_refused():
    with pytest.raises(ValueError, match="test fold 5 does not exist: folds are 0..4"):
        SpeakerFolds(count=5, test=5)
