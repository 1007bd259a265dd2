"""Length-grouped batches: every row once, similar lengths together, a new order each epoch."""

from __future__ import annotations

import numpy as np

from deepfusion.training.batching import length_grouped


def token_batches(lengths: list[int], size: int):
    rows = np.empty(len(lengths), dtype=object)
    rows[:] = [np.ones(n, dtype=np.int32) for n in lengths]
    ids = np.arange(len(lengths))
    for start in range(0, len(lengths), size):
        yield {"sample_id": ids[start:start + size], "input_ids": rows[start:start + size]}


def test_each_row_once_in_batches_of_similar_length_in_a_seeded_order():
    lengths = list(np.random.default_rng(0).integers(1, 90, size=330))
    batches = list(length_grouped(token_batches(lengths, 32 * 4), 32, np.random.default_rng(1)))
    seen = np.concatenate([b["sample_id"] for b in batches])
    assert sorted(seen) == list(range(330))  # nothing lost, nothing twice
    assert sorted(len(b["sample_id"]) for b in batches) == [10] + [32] * 10  # 128 + 128 + 74 rows
    padded = sum(len(b["sample_id"]) * max(len(r) for r in b["input_ids"]) for b in batches)
    random_padded = sum(len(c) * max(lengths[i] for i in c) for c in np.array_split(np.arange(330), 11))
    assert padded < 0.75 * random_padded, (padded, random_padded, sum(lengths))
    for b in batches:  # rows keep their columns together
        assert [len(r) for r in b["input_ids"]] == [lengths[i] for i in b["sample_id"]]
    # not shortest-first while training: the order is shuffled, and by the seed
    firsts = [max(len(r) for r in b["input_ids"]) for b in batches]
    assert firsts != sorted(firsts)
    again = list(length_grouped(token_batches(lengths, 32 * 4), 32, np.random.default_rng(1)))
    assert all(np.array_equal(a["sample_id"], b["sample_id"]) for a, b in zip(batches, again))


def test_evaluation_order_and_batches_without_a_length_column():
    lengths = [5, 1, 3, 2, 4, 6]
    (first, second) = length_grouped(token_batches(lengths, 6), 3, None)
    assert list(first["sample_id"]) == [1, 3, 2] and list(second["sample_id"]) == [4, 0, 5]
    plain = {"sample_id": np.arange(5), "label": np.arange(5) % 2}
    cut = list(length_grouped(iter([plain]), 2, np.random.default_rng(0)))
    assert sorted(np.concatenate([c["sample_id"] for c in cut])) == [0, 1, 2, 3, 4]
