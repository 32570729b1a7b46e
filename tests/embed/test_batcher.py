"""MicroBatcher behaviour, with a recording fake embedder (the only fake in the suite)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from memesearch.embed.batcher import MicroBatcher, Priority
from memesearch.embed.model import ModelInfo
from memesearch.errors import ModelNotReady
from memesearch.images.decode import PreprocessSpec

DIM = 4


class RecordingEmbedder:
    """Deterministic vectors; records every forward pass; can be held to simulate a slow model."""

    def __init__(self) -> None:
        self.info = ModelInfo(spec="fake", model_id="fake", dim=DIM)
        self.preprocess = PreprocessSpec(size=(2, 2))
        self.device = "cpu"
        self.calls: list[tuple[str, list[str | int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_with: Exception | None = None

    def _wait(self) -> None:
        self.entered.set()
        self.gate.wait(timeout=10)
        if self.fail_with is not None:
            raise self.fail_with

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self._wait()
        self.calls.append(("text", list(texts)))
        return np.array([[len(t), 1, 0, 0] for t in texts], dtype=np.float32)

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        self._wait()
        self.calls.append(("image", [int(p[0, 0, 0]) for p in pixels]))
        return np.array([[0, 0, p[0, 0, 0], 1] for p in pixels], dtype=np.float32)


def images(*values: int) -> np.ndarray:
    return np.stack([np.full((2, 2, 3), v, dtype=np.uint8) for v in values])


async def test_concurrent_queries_share_one_forward_pass() -> None:
    fake = RecordingEmbedder()
    async with MicroBatcher(fake, max_batch_size=64, max_wait_ms=50) as batcher:
        texts = [f"q{'x' * i}" for i in range(10)]
        results = await asyncio.gather(*(batcher.embed_texts([t]) for t in texts))
    assert len(fake.calls) == 1
    assert sorted(fake.calls[0][1]) == sorted(texts)
    for text, result in zip(texts, results, strict=True):
        assert result.shape == (1, DIM)
        assert result[0, 0] == len(text)  # each caller gets its own row back


async def test_requests_larger_than_max_batch_are_split_and_reassembled() -> None:
    fake = RecordingEmbedder()
    async with MicroBatcher(fake, max_batch_size=4, max_wait_ms=0) as batcher:
        result = await batcher.embed_images(images(*range(10)))
    assert [len(values) for _, values in fake.calls] == [4, 4, 2]
    assert result[:, 2].tolist() == list(range(10))


async def test_queries_jump_ahead_of_queued_index_work() -> None:
    fake = RecordingEmbedder()
    fake.gate.clear()
    async with MicroBatcher(fake, max_batch_size=2, max_wait_ms=0) as batcher:
        first = asyncio.ensure_future(batcher.embed_images(images(1, 2)))
        await asyncio.to_thread(fake.entered.wait, 5)  # model busy with the first index batch
        backlog = asyncio.ensure_future(batcher.embed_images(images(3, 4, 5, 6)))
        await asyncio.sleep(0)
        query = asyncio.ensure_future(batcher.embed_texts(["urgent"]))
        await asyncio.sleep(0.01)
        assert batcher.pending == 5
        fake.gate.set()
        await asyncio.gather(first, backlog, query)
    kinds = [kind for kind, _ in fake.calls]
    assert kinds == ["image", "text", "image", "image"]


async def test_a_failed_forward_fails_every_caller_in_the_batch_and_recovers() -> None:
    fake = RecordingEmbedder()
    fake.fail_with = RuntimeError("CUDA out of memory")
    async with MicroBatcher(fake, max_batch_size=8, max_wait_ms=20) as batcher:
        outcomes = await asyncio.gather(
            batcher.embed_texts(["a"]), batcher.embed_texts(["b"]), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        fake.fail_with = None
        assert (await batcher.embed_texts(["ok"])).shape == (1, DIM)


async def test_index_priority_images_are_not_delayed_by_the_linger_window() -> None:
    fake = RecordingEmbedder()
    async with MicroBatcher(fake, max_batch_size=8, max_wait_ms=10_000) as batcher:
        result = await asyncio.wait_for(
            batcher.embed_images(images(9), priority=Priority.INDEX), timeout=5
        )
    assert result.shape == (1, DIM)


async def test_stop_fails_waiting_requests_and_refuses_new_ones() -> None:
    fake = RecordingEmbedder()
    fake.gate.clear()
    batcher = MicroBatcher(fake, max_batch_size=1, max_wait_ms=0)
    batcher.start()
    running = asyncio.ensure_future(batcher.embed_texts(["first"]))
    await asyncio.to_thread(fake.entered.wait, 5)
    waiting = asyncio.ensure_future(batcher.embed_texts(["second"]))
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(batcher.stop())
    await asyncio.sleep(0.01)
    fake.gate.set()  # the forward pass finishes only after its callers were told
    await stopping
    for request in (running, waiting):
        with pytest.raises(ModelNotReady):
            await request
    with pytest.raises(ModelNotReady):
        await batcher.embed_texts(["late"])


async def test_empty_request_needs_no_forward_pass() -> None:
    fake = RecordingEmbedder()
    async with MicroBatcher(fake, max_batch_size=8, max_wait_ms=0) as batcher:
        result = await batcher.embed_texts([])
    assert result.shape == (0, DIM)
    assert fake.calls == []


async def test_stalled_for_counts_from_the_oldest_unanswered_request() -> None:
    fake = RecordingEmbedder()
    fake.gate.clear()  # the model hangs
    async with MicroBatcher(fake, max_batch_size=4, max_wait_ms=0) as batcher:
        assert batcher.stalled_for() == 0.0
        first = asyncio.ensure_future(batcher.embed_texts(["a"]))
        await asyncio.to_thread(fake.entered.wait, 5)  # in a forward pass now
        second = asyncio.ensure_future(batcher.embed_texts(["b"]))
        await asyncio.sleep(0.05)
        assert batcher.stalled_for() >= 0.05  # measured from the one in the forward pass
        fake.gate.set()
        await asyncio.gather(first, second)
        assert batcher.stalled_for() == 0.0
