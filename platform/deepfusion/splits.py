"""Deterministic dataset splits: exact stratified counts for images, speaker-disjoint for speech."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

from deepfusion.config import SplitRatios
from deepfusion.config.preprocess import SpeakerFolds

SPLITS: tuple[str, ...] = ("train", "val", "test")


def exact_split_counts(target_per_class: int, ratios: SplitRatios) -> dict[str, int]:
    """Per-class counts for a balanced set of ``target_per_class`` items (800 -> 560/120/120)."""
    # Half up, not Python's half-to-even: 30 items at 15% are 5, not 4.
    val = math.floor(target_per_class * ratios.val + 0.5)
    test = math.floor(target_per_class * ratios.test + 0.5)
    return {"train": target_per_class - val - test, "val": val, "test": test}


@dataclass(frozen=True)
class PlannedImage:
    """One output image: a source file, its split, and which augmented copy it is (0 = original)."""

    path: str
    label_name: str
    split: str
    copy_index: int


class NotEnoughImages(ValueError):
    pass


def plan_balanced_split(
    paths_by_class: dict[str, list[str]], target_per_class: int, ratios: SplitRatios, seed: int
) -> tuple[list[PlannedImage], dict[str, int]]:
    """Split originals per class *before* augmentation, then plan augmented copies for train.

    Validation and test take ``counts["val"]``/``counts["test"]`` distinct originals each, so
    no augmented copy of an evaluation image can reach training. Train gets the remaining
    originals; if they are fewer than ``counts["train"]`` they are topped up with augmented
    copies spread round-robin over them, and if more, a seeded subset is kept (the number
    left out is returned per class so reports can state it).
    """
    counts = exact_split_counts(target_per_class, ratios)
    plan: list[PlannedImage] = []
    unused: dict[str, int] = {}
    for label_name in sorted(paths_by_class):
        paths = sorted(paths_by_class[label_name])
        needed = counts["val"] + counts["test"] + 1
        if len(paths) < needed:
            raise NotEnoughImages(
                f"class {label_name!r} has {len(paths)} usable images; target_per_class="
                f"{target_per_class} needs {counts['val']} val + {counts['test']} test originals "
                f"and at least one for train ({needed}). Lower target_per_class."
            )
        random.Random(f"{seed}/{label_name}").shuffle(paths)
        val, test = paths[: counts["val"]], paths[counts["val"] : counts["val"] + counts["test"]]
        train = paths[counts["val"] + counts["test"] :]
        unused[label_name] = max(0, len(train) - counts["train"])
        train = train[: counts["train"]]
        plan += [PlannedImage(p, label_name, "val", 0) for p in val]
        plan += [PlannedImage(p, label_name, "test", 0) for p in test]
        plan += [PlannedImage(p, label_name, "train", 0) for p in train]
        for k in range(counts["train"] - len(train)):
            plan.append(PlannedImage(train[k % len(train)], label_name, "train", 1 + k // len(train)))
    return plan, unused


def speaker_disjoint_split(
    speaker_of: list[str], group_of: list[str], ratios: SplitRatios, seed: int
) -> dict[str, str]:
    """Assign whole speakers to splits so no speaker is in two splits.

    Speakers are assigned within each group (e.g. corpus) separately, greedily by utterance
    count towards the target ratios, so every corpus is represented in proportion.
    Returns ``{speaker: split}``.
    """
    targets = {"train": ratios.train, "val": ratios.val, "test": ratios.test}
    return _assign_speakers(_clips_per_speaker(speaker_of, group_of), targets, seed)


def stratified_split(labels: list[str], ratios: SplitRatios, seed: int) -> list[str]:
    """A split per item, drawn per label: each label's items are shuffled (seeded) and cut
    at its own val and test counts (half up), so every split has each label's share."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    split_of = [""] * len(labels)
    for label in sorted(by_label):
        items = by_label[label]
        random.Random(f"{seed}/{label}").shuffle(items)
        val = math.floor(len(items) * ratios.val + 0.5)
        test = math.floor(len(items) * ratios.test + 0.5)
        for k, i in enumerate(items):
            split_of[i] = "val" if k < val else "test" if k < val + test else "train"
    return split_of


def stratified_speaker_split(speaker_of: list[str], label_of: list[str], ratios: SplitRatios,
                             seed: int) -> dict[str, str]:
    """Whole speakers to splits (no speaker in two), keeping each label's share per split
    as near the ratios as speakers allow: speakers, largest first (ties in seeded order),
    go to the split whose per-label shortfall they fill best, else the one furthest
    below its share. Returns ``{speaker: split}``."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for speaker, label in zip(speaker_of, label_of):
        counts[speaker][label] += 1
    label_totals: dict[str, int] = defaultdict(int)
    for label in label_of:
        label_totals[label] += 1
    share = {"train": ratios.train, "val": ratios.val, "test": ratios.test}
    filled = {s: defaultdict(int) for s in SPLITS}
    speakers = sorted(counts)
    random.Random(f"{seed}/speakers").shuffle(speakers)
    speakers.sort(key=lambda s: -sum(counts[s].values()))  # stable: the shuffle breaks ties
    assignment: dict[str, str] = {}

    def gain(speaker: str, split: str) -> tuple[float, float, bool]:
        fills = sum(min(n, max(0.0, share[split] * label_totals[label] - filled[split][label]))
                    for label, n in counts[speaker].items())
        room = share[split] * len(label_of) - sum(filled[split].values())
        return fills, room, split == "train"

    for speaker in speakers:
        split = max(SPLITS, key=lambda s: gain(speaker, s))  # noqa: B023 - used at once, in this iteration
        assignment[speaker] = split
        for label, n in counts[speaker].items():
            filled[split][label] += n
    return assignment


def speaker_fold_split(
    speaker_of: list[str], group_of: list[str], folds: SpeakerFolds, ratios: SplitRatios, seed: int
) -> dict[str, str]:
    """Speaker-grouped k-fold cross-validation, one fold's view: ``{speaker: split}``.

    Speakers fall into ``folds.count`` folds (:func:`speaker_folds`); fold ``folds.test`` is
    the test split. The other folds' speakers are split train/val in ``ratios``' train:val
    proportion, again by whole speakers, so early stopping never sees a test speaker.
    """
    fold_of = speaker_folds(speaker_of, group_of, folds.count, seed)
    rest = [(s, g) for s, g in zip(speaker_of, group_of) if fold_of[s] != folds.test]
    split_of = _assign_speakers(_clips_per_speaker([s for s, _ in rest], [g for _, g in rest]),
                                {"train": ratios.train, "val": ratios.val}, seed)
    return {**split_of, **{s: "test" for s, fold in fold_of.items() if fold == folds.test}}


def speaker_folds(speaker_of: list[str], group_of: list[str], count: int, seed: int) -> dict[str, int]:
    """``{speaker: fold}`` for ``count`` folds, every speaker in exactly one.

    Each group (corpus) is spread over the folds on its own, so every fold holds its share
    of every corpus where speakers allow; a speaker goes to the fold with the fewest of
    its group's clips, ties to the fold with the fewest clips in all, then the lowest.
    """
    per_group = _clips_per_speaker(speaker_of, group_of)
    total = [0] * count
    fold_of: dict[str, int] = {}
    for group in sorted(per_group):
        in_group = [0] * count
        speakers = sorted(per_group[group])
        random.Random(f"{seed}/{group}").shuffle(speakers)
        for speaker in speakers:
            fold = min(range(count), key=lambda f: (in_group[f], total[f], f))
            fold_of[speaker] = fold
            in_group[fold] += per_group[group][speaker]
            total[fold] += per_group[group][speaker]
    return fold_of


def _clips_per_speaker(speaker_of: list[str], group_of: list[str]) -> dict[str, dict[str, int]]:
    per_group: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for speaker, group in zip(speaker_of, group_of):
        per_group[group][speaker] += 1
    return per_group


def _assign_speakers(per_group: dict[str, dict[str, int]], target: dict[str, float], seed: int) -> dict[str, str]:
    """Within each group, the split furthest below its share takes the next speaker (seeded order)."""
    splits = tuple(target)
    assignment: dict[str, str] = {}
    for group in sorted(per_group):
        speakers = sorted(per_group[group])
        random.Random(f"{seed}/{group}").shuffle(speakers)
        total = sum(per_group[group].values())
        share = sum(target.values())
        filled = {s: 0 for s in splits}
        for speaker in speakers:
            # Ties go to train.
            deficit = {s: target[s] / share * total - filled[s] for s in splits}
            split = max(splits, key=lambda s: (deficit[s], s == "train"))
            assignment[speaker] = split
            filled[split] += per_group[group][speaker]
    return assignment
