"""Async helpers of the decode pipeline: holding decoded batches while the model loads."""

from __future__ import annotations

import asyncio

from memesearch.ingest.pool import hold_until


async def test_hold_until_takes_items_until_ready_and_leaves_the_rest_queued() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for item in (1, 2, 3):
        queue.put_nowait(item)
    holding = asyncio.ensure_future(hold_until(ready, queue, limit=10))
    await asyncio.sleep(0.01)
    assert not holding.done()  # the queue is empty and the model not ready: it waits
    ready.set_result(None)
    assert list(await holding) == [1, 2, 3]
    queue.put_nowait(4)
    assert queue.get_nowait() == 4  # the cancelled get took nothing


async def test_hold_until_stops_at_the_limit_and_at_the_end() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for item in (1, 2, 3, None, 5):
        queue.put_nowait(item)
    assert list(await hold_until(ready, queue, limit=2)) == [1, 2]
    assert list(await hold_until(ready, queue, limit=10)) == [3, None]
    assert queue.get_nowait() == 5
