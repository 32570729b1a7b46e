"""Coalescer: concurrent calls become batched calls, without making a lone call wait.

Continuous batching: calls arriving while a batch runs queue up and go together in the next
one, so under load batches grow by themselves. A call arriving while none runs waits for company
at most 1/20 of what a batch has been taking (a burst of searches over a big exact index then
shares one scan, for ≤ 5 % more latency; a millisecond scan waits nothing to speak of), or
`max_wait_ms` if that is longer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
PATIENCE = 0.05  # a lone call waits for company at most this fraction of a batch's duration
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs `run_batch(items)` on a worker thread for the calls queued since the last batch."""

    def __init__(
        self, run_batch: Callable[[list[T]], list[R]], *, max_batch: int, max_wait_ms: float = 0
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._batch_seconds = 0.0  # moving average of how long a batch takes
        self.batches = 0

    async def submit(self, item: T) -> R:
        """Queue `item` for the next batch and wait for its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if len(self._queue) >= self._max_batch:
            self._full.set()
        if self._drainer is None:
            # The drain is its own task: a caller that goes away cannot strand the others.
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            wait = max(self._max_wait, self._batch_seconds * PATIENCE)
            if wait > 0 and len(self._queue) < self._max_batch:
                try:
                    await asyncio.wait_for(self._full.wait(), wait)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)  # calls made in the same loop turn join this batch
            while self._queue:
                batch = [entry for entry in self._queue[: self._max_batch] if not entry[1].done()]
                del self._queue[: self._max_batch]
                self._full.clear()
                if batch:
                    await self._run(batch)
        finally:
            self._drainer = None

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        started = time.perf_counter()
        try:
            results = await asyncio.to_thread(self._run_batch, [item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        self._batch_seconds = (
            elapsed if self.batches == 1 else 0.8 * self._batch_seconds + 0.2 * elapsed
        )
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
