"""The model deployments' batching: while a batch computes, requests queue, and the next
batch takes all of them; errors and cancellations stay with their own requests."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deepfusion.serving.batching import Batcher


class GatedModel:
    """Doubles its inputs; the first batch blocks until ``release`` is set."""

    def __init__(self, fail_on=None):
        self.batches: list[list[int]] = []
        self.started, self.release = threading.Event(), threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.started.set()
            assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot take {self.fail_on}")
        return [2 * i for i in items]


async def _first_then(batcher, model, later: list[int]):
    """One request starts a batch; ``later`` arrive while it computes; then it finishes."""
    first = asyncio.create_task(batcher(0))
    await asyncio.to_thread(model.started.wait, 10)
    rest = [asyncio.create_task(batcher(i)) for i in later]
    while batcher.queued < len(later):  # each task runs up to its enqueue at its first turn
        await asyncio.sleep(0)
    assert len(model.batches) == 1  # all of them queued behind the running batch
    model.release.set()
    return first, rest


def test_requests_that_queue_during_a_batch_form_the_next_batch_and_get_their_own_answers():
    model = GatedModel()
    batcher = Batcher(model, max_batch_size=4)

    async def scenario():
        first, rest = await _first_then(batcher, model, list(range(1, 8)))
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert first == 0 and rest == [2 * i for i in range(1, 8)]
    # 7 queued while [0] computed: the next batches take them all, max_batch_size at a time
    assert model.batches == [[0], [1, 2, 3, 4], [5, 6, 7]]
    assert batcher.batch_sizes == {1: 1, 4: 1, 3: 1}


def test_a_failing_batch_fails_its_own_requests_and_the_next_batch_still_runs():
    model = GatedModel(fail_on=2)
    batcher = Batcher(model, max_batch_size=2)

    async def scenario():
        first, rest = await _first_then(batcher, model, [1, 2, 3])
        return await asyncio.gather(first, *rest, return_exceptions=True)

    answers = asyncio.run(scenario())
    assert answers[0] == 0 and answers[3] == 6
    assert all(isinstance(a, ValueError) and "cannot take 2" in str(a) for a in answers[1:3])
    assert model.batches == [[0], [1, 2], [3]]


def test_a_request_cancelled_while_queued_is_left_out_of_its_batch():
    model = GatedModel()
    batcher = Batcher(model, max_batch_size=8)

    async def scenario():
        first, rest = await _first_then(batcher, model, [1, 2, 3])
        rest[1].cancel()  # the client went away while its request waited
        return await first, await asyncio.gather(*rest, return_exceptions=True)

    first, rest = asyncio.run(scenario())
    assert first == 0 and rest[0] == 2 and isinstance(rest[1], asyncio.CancelledError) and rest[2] == 6
    assert model.batches == [[0], [1, 3]]


def test_a_wait_collects_a_batch_from_requests_that_arrive_within_it_and_ends_at_its_deadline():
    seen = []

    def model(items):
        seen.append(list(items))
        return items

    async def scenario():
        # a lone request waits for company: here until the batch is full (the wait is far longer)
        batcher = Batcher(model, max_batch_size=3, wait_s=60)
        calls = []
        for i in range(3):
            assert seen == []  # nothing computed while the batch is not full
            calls.append(asyncio.create_task(batcher(i)))
            await asyncio.sleep(0)  # the request arrives while the batch is forming
        full = await asyncio.gather(*calls)
        # ... and, alone, until its wait ends
        alone = await Batcher(model, max_batch_size=8, wait_s=0.01)(7)
        return full, alone

    assert asyncio.run(scenario()) == ([0, 1, 2], 7) and seen == [[0, 1, 2], [7]]


def test_a_model_that_returns_the_wrong_number_of_results_is_an_error_for_each_request():
    async def scenario():
        batcher = Batcher(lambda items: items[:-1], max_batch_size=4)
        return await asyncio.gather(batcher(1), return_exceptions=True)

    (answer,) = asyncio.run(scenario())
    assert isinstance(answer, RuntimeError) and "0 results for a batch of 1" in str(answer)


@pytest.mark.parametrize("size, wait", [(0, 0.0), (4, -1.0)])
def test_nonsense_sizes_are_refused(size, wait):
    with pytest.raises(ValueError):
        Batcher(lambda items: items, max_batch_size=size, wait_s=wait)
