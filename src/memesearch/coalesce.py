"""Coalescer: concurrent calls arriving within a short window become one batched call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs `run_batch(items)` on a worker thread for everything submitted within `max_wait`."""

    def __init__(
        self, run_batch: Callable[[list[T]], list[R]], *, max_batch: int, max_wait_ms: float
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._pending: list[tuple[T, asyncio.Future[R]]] | None = None
        self._full = asyncio.Event()
        self._flushes: set[asyncio.Task[None]] = set()
        self.batches = 0

    async def submit(self, item: T) -> R:
        """Add `item` to the open batch (opening one if none) and wait for its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if self._pending is None:
            self._pending = []
            self._full = asyncio.Event()
            # The flush is its own task: a caller that goes away cannot strand the others.
            task = asyncio.create_task(self._flush_later(self._pending, self._full))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._full.set()
            self._pending = None
        return await future

    async def _flush_later(
        self, batch: list[tuple[T, asyncio.Future[R]]], full: asyncio.Event
    ) -> None:
        if self._max_wait > 0:
            try:
                await asyncio.wait_for(full.wait(), self._max_wait)
            except TimeoutError:
                pass
        if self._pending is batch:
            self._pending = None
        self.batches += 1
        try:
            results = await asyncio.to_thread(self._run_batch, [item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
