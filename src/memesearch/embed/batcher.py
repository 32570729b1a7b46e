"""Asyncio micro-batcher: gathers concurrent embedding requests into one forward pass."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import TracebackType

import numpy as np

from memesearch.embed.model import Embedder
from memesearch.errors import ModelNotReady


class Priority(IntEnum):
    """Lower runs first: a waiting query never queues behind indexing work."""

    QUERY = 0
    INDEX = 1


class Kind(StrEnum):
    """What a request embeds; one forward pass handles one kind."""

    IMAGE = "image"
    TEXT = "text"


BatchObserver = Callable[[Kind, Priority, int, float], None]


@dataclass(slots=True)
class _Request:
    kind: Kind
    priority: Priority
    payload: np.ndarray | list[str]
    future: asyncio.Future[np.ndarray]
    seq: int
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return len(self.payload)


class MicroBatcher:
    """Runs one forward pass at a time on a dedicated thread, batching what arrives meanwhile."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        observer: BatchObserver | None = None,
    ) -> None:
        self.embedder = embedder
        self._max_batch = max_batch_size
        self._max_wait = max_wait_ms / 1000.0
        self._observer = observer
        self._queues: dict[tuple[Priority, Kind], deque[_Request]] = {
            key: deque() for key in itertools.product(Priority, Kind)
        }
        self._seq = itertools.count()
        self._arrived = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[_Request] = []

    async def __aenter__(self) -> MicroBatcher:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the loop; requests still waiting fail with ModelNotReady."""
        inflight = list(self._inflight)  # cancelling the loop clears it
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        stopping = ModelNotReady("the model is shutting down")
        for request in inflight:
            _fail(request.future, stopping)
        for queue in self._queues.values():
            while queue:
                _fail(queue.popleft().future, stopping)
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True)

    @property
    def pending(self) -> int:
        """Items waiting for a forward pass."""
        return sum(req.size for queue in self._queues.values() for req in queue)

    def stalled_for(self) -> float:
        """Seconds the oldest unanswered request has waited (queued or in a forward pass)."""
        waiting = [queue[0].enqueued for queue in self._queues.values() if queue]
        waiting += [request.enqueued for request in self._inflight]
        return max(0.0, time.monotonic() - min(waiting)) if waiting else 0.0

    async def embed_texts(
        self, texts: Sequence[str], *, priority: Priority = Priority.QUERY
    ) -> np.ndarray:
        """Embed strings; concurrent callers share forward passes."""
        return await self._submit(Kind.TEXT, list(texts), priority)

    async def embed_images(
        self, pixels: np.ndarray, *, priority: Priority = Priority.INDEX
    ) -> np.ndarray:
        """Embed preprocessed uint8 images [n, h, w, 3]."""
        return await self._submit(Kind.IMAGE, pixels, priority)

    async def _submit(
        self, kind: Kind, payload: np.ndarray | list[str], priority: Priority
    ) -> np.ndarray:
        if self._task is None:
            raise ModelNotReady("the model is not running")
        if len(payload) == 0:
            return np.zeros((0, self.embedder.info.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(payload), self._max_batch):
            future: asyncio.Future[np.ndarray] = loop.create_future()
            chunk = payload[start : start + self._max_batch]
            self._queues[priority, kind].append(
                _Request(kind, priority, chunk, future, next(self._seq))
            )
            futures.append(future)
        self._arrived.set()
        return np.concatenate(await asyncio.gather(*futures))

    async def _run(self) -> None:
        while True:
            key = self._next_key()
            if key is None:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if key[0] is Priority.QUERY:
                await self._linger(key)
            batch = self._take(key)
            if batch:
                await self._execute(key, batch)

    def _next_key(self) -> tuple[Priority, Kind] | None:
        for priority in Priority:
            heads = [
                (queue[0].seq, kind) for kind in Kind if (queue := self._queues[priority, kind])
            ]
            if heads:
                return priority, min(heads)[1]
        return None

    async def _linger(self, key: tuple[Priority, Kind]) -> None:
        """Wait up to max_wait after the oldest request for more of the same kind to arrive."""
        queue = self._queues[key]
        deadline = queue[0].enqueued + self._max_wait
        while sum(req.size for req in queue) < self._max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self, key: tuple[Priority, Kind]) -> list[_Request]:
        queue, batch, total = self._queues[key], [], 0
        while queue and total + queue[0].size <= self._max_batch:
            request = queue.popleft()
            if not request.future.done():  # a caller that gave up costs no model time
                batch.append(request)
                total += request.size
        return batch

    async def _execute(self, key: tuple[Priority, Kind], batch: list[_Request]) -> None:
        priority, kind = key
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        self._inflight = batch
        try:
            vectors = await loop.run_in_executor(self._executor, self._forward, kind, batch)
        except Exception as exc:
            for request in batch:
                _fail(request.future, exc)
            return
        finally:
            self._inflight = []
        if self._observer is not None:
            self._observer(
                kind, priority, sum(r.size for r in batch), time.perf_counter() - started
            )
        offset = 0
        for request in batch:
            if not request.future.done():
                request.future.set_result(vectors[offset : offset + request.size])
            offset += request.size

    def _forward(self, kind: Kind, batch: list[_Request]) -> np.ndarray:
        if kind is Kind.TEXT:
            texts = [text for req in batch for text in req.payload]
            return self.embedder.embed_texts(texts)
        arrays = [np.asarray(req.payload) for req in batch]
        pixels = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        return self.embedder.embed_images(pixels)


def _fail(future: asyncio.Future[np.ndarray], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
