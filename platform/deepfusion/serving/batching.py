"""Batching for the model deployments: while the model computes one batch, requests queue;
as soon as it is free, the next batch takes every request waiting (up to
``max_batch_size``), after waiting ``wait_s`` for more only when it is not full.

Why not ``@serve.batch``: since it learned concurrent batches (``max_concurrent_batches``), its loop
forms the next batch *before* the running one finishes and parks it behind the
``max_concurrent_batches`` semaphore. With ``batch_wait_timeout_s=0`` every request becomes
a batch of one, so a busy replica computes one request at a time; with a wait, batches
hold what arrived within that wait, not what queued during the compute. Measured on the
demo app at 8 concurrent clients: every MIMAMO Net batch had size 1. Here the next batch
is formed only when the model is free to take it, which is what batching under load needs.

The model runs in a worker thread (``asyncio.to_thread``): the replica's event loop keeps
accepting requests meanwhile. A failing batch fails each of its requests with the error;
the next batch is unaffected. A request cancelled while queued is dropped from its batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any


class Batcher:
    """``await batcher(item)`` -> ``compute([... item ...])[i]``, batched across callers.

    ``compute`` takes a list of items and returns one result per item, in order. One batch
    computes at a time (one model, one thread). Must be called from one event loop (a
    replica's); the loop that first calls it runs the batching task.
    """

    def __init__(self, compute: Callable[[list], Sequence], max_batch_size: int, wait_s: float = 0.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be 0 or more, not {wait_s}")
        self.compute, self.max_batch_size, self.wait_s = compute, max_batch_size, wait_s
        self.batch_sizes: dict[int, int] = {}  # size -> batches of that size, since start
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for a batch (not those in the batch computing now)."""
        return 0 if self._queue is None else self._queue.qsize()

    async def __call__(self, item: Any) -> Any:
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._serve_batches(self._queue))
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _next_batch(self, queue: asyncio.Queue) -> list[tuple[Any, asyncio.Future]]:
        batch = [await queue.get()]
        if self.wait_s > 0 and queue.empty():
            deadline = asyncio.get_running_loop().time() + self.wait_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
        while len(batch) < self.max_batch_size and not queue.empty():
            batch.append(queue.get_nowait())
        return [(item, future) for item, future in batch if not future.done()]

    async def _serve_batches(self, queue: asyncio.Queue) -> None:
        while True:
            batch = await self._next_batch(queue)
            if not batch:
                continue
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            try:
                results = await asyncio.to_thread(self.compute, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the model returned {len(results)} results for a batch of {len(batch)}")
            except Exception as err:  # noqa: BLE001 - each caller gets the error, the loop goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
