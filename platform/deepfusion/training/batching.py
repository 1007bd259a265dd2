"""Length-grouped batches: rows of similar length share a batch, so little of it is padding.

Text and audio batches pad to their longest row. Drawn at random, a MELD batch of 32
utterances pads to about twice its mean token length, and the encoder pays for every pad
token. As Hugging Face's ``group_by_length`` does, each run of ``group`` batches' rows
(already shuffled by Ray Data's buffer) is sorted by length, cut into batches, and the
batches are yielded in a random order: every row is still seen once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# The column whose row lengths set a batch's padded size, most expensive first.
LENGTH_COLUMNS = ("audio", "input_ids")


def row_lengths(batch: dict[str, np.ndarray]) -> np.ndarray | None:
    """Each row's length in the first of ``LENGTH_COLUMNS`` the batch has; None: none."""
    for column in LENGTH_COLUMNS:
        if column in batch:
            return np.array([0 if row is None else len(row) for row in batch[column]])
    return None


def length_grouped(batches: Iterator[dict[str, np.ndarray]], batch_size: int,
                   rng: np.random.Generator | None) -> Iterator[dict[str, np.ndarray]]:
    """Cut each (large) batch of ``batches`` into ``batch_size`` batches of similar length.

    ``rng``: yield them in a random order (training); None: shortest first (evaluation,
    where order does not matter). A batch without a length column is cut as it comes.
    """
    for group in batches:
        size = len(next(iter(group.values())))
        lengths = row_lengths(group)
        order = np.arange(size) if lengths is None else np.argsort(lengths, kind="stable")
        chunks = [order[i:i + batch_size] for i in range(0, size, batch_size)]
        if rng is not None:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        for rows in chunks:
            yield {column: values[rows] for column, values in group.items()}
