"""Deterministic splits: exact stratified counts before augmentation; speaker-disjoint speech."""

from __future__ import annotations

from collections import Counter

import pytest

from deepfusion.config import SplitRatios
from deepfusion.splits import NotEnoughImages, exact_split_counts, plan_balanced_split, speaker_disjoint_split


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
