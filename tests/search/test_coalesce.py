"""Coalescer: concurrent submissions share one batched call; errors reach every caller."""

from __future__ import annotations

import asyncio

import pytest

from memesearch.search.coalesce import Coalescer


async def test_concurrent_submissions_run_as_one_batch() -> None:
    calls: list[list[int]] = []

    def square_all(items: list[int]) -> list[int]:
        calls.append(items)
        return [i * i for i in items]

    coalescer: Coalescer[int, int] = Coalescer(square_all, max_batch=64, max_wait_ms=50)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(16)))
    assert results == [i * i for i in range(16)]
    assert len(calls) == 1 and sorted(calls[0]) == list(range(16))


async def test_a_full_batch_runs_at_once_and_the_rest_follow() -> None:
    calls: list[list[int]] = []

    def echo(items: list[int]) -> list[int]:
        calls.append(items)
        return items

    coalescer: Coalescer[int, int] = Coalescer(echo, max_batch=4, max_wait_ms=10_000)
    results = await asyncio.wait_for(asyncio.gather(*(coalescer.submit(i) for i in range(8))), 5)
    assert results == list(range(8))
    assert [len(c) for c in calls] == [4, 4]


async def test_errors_reach_every_caller_and_a_cancelled_caller_strands_nobody() -> None:
    def boom(items: list[int]) -> list[int]:
        raise RuntimeError("index exploded")

    coalescer: Coalescer[int, int] = Coalescer(boom, max_batch=8, max_wait_ms=20)
    outcomes = await asyncio.gather(
        coalescer.submit(1), coalescer.submit(2), return_exceptions=True
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)

    ok: Coalescer[int, int] = Coalescer(lambda items: items, max_batch=8, max_wait_ms=20)
    first = asyncio.ensure_future(ok.submit(1))
    second = asyncio.ensure_future(ok.submit(2))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 2
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_calls_arriving_during_a_batch_share_the_next_one() -> None:
    """Continuous batching: a lone call goes at once; calls queued behind a scan go together."""
    import threading

    release = threading.Event()
    calls: list[list[int]] = []

    def slow_echo(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            release.wait(5)
        return items

    coalescer: Coalescer[int, int] = Coalescer(slow_echo, max_batch=64)
    first = asyncio.ensure_future(coalescer.submit(0))
    while not calls:  # the lone call started without waiting for company
        await asyncio.sleep(0.001)
    followers = [asyncio.ensure_future(coalescer.submit(i)) for i in range(1, 11)]
    await asyncio.sleep(0.05)
    assert calls == [[0]]  # still running: the ten wait for it
    release.set()
    assert await first == 0
    assert await asyncio.gather(*followers) == list(range(1, 11))
    assert calls == [[0], list(range(1, 11))]
    assert coalescer.batches == 2
