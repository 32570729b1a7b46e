"""Parallel decode and hash jobs: a spawn-started process pool that never imports torch."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from memesearch.errors import ImageDecodeError
from memesearch.images.decode import DecodeLimits, FileVanishedError, PreprocessSpec, hash_file
from memesearch.images.prepare import PreparedImage, prepare_file
from memesearch.images.thumbnails import ThumbnailSpec

_PARENT_POLL_SECONDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class JobFailure:
    """Why a file could not be hashed or decoded; `vanished` means it is simply gone."""

    reason: str
    vanished: bool = False


def prepare_job(
    path: str, spec: PreprocessSpec, limits: DecodeLimits, thumbnails: ThumbnailSpec | None
) -> PreparedImage | JobFailure:
    """Runs in a worker process: decode, preprocess and thumbnail one file; never raises."""
    try:
        return prepare_file(path, spec, limits, thumbnails)
    except FileVanishedError as exc:
        return JobFailure(str(exc), vanished=True)
    except ImageDecodeError as exc:
        return JobFailure(str(exc))
    except MemoryError:
        return JobFailure("not enough memory to decode this image")


def hash_job(path: str) -> str | JobFailure:
    """Content hash of one file, or why it could not be read."""
    try:
        return hash_file(path)
    except FileNotFoundError:
        return JobFailure("file disappeared before it could be read", vanished=True)
    except (OSError, ImageDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return JobFailure(f"cannot read file: {reason}")


def die_with_parent(parent: int) -> None:
    """Runs first in each worker: exit once the process that started it is gone.

    A worker waits on its job queue, whose writing end it holds itself, so it never sees the
    queue close: without this, a SIGKILLed or crashed indexer leaves its workers running forever.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


T = TypeVar("T")
R = TypeVar("R")


class DecodePool:
    """Worker processes for decoding, started once per indexing run and shut down after."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    async def __aenter__(self) -> DecodePool:
        # spawn: the parent may hold CUDA and OpenMP state that must not be forked.
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def prepare(
        self,
        path: Path,
        spec: PreprocessSpec,
        limits: DecodeLimits,
        thumbnails: ThumbnailSpec | None,
    ) -> Awaitable[PreparedImage | JobFailure]:
        """Decode one file in a worker process."""
        if self._executor is None:
            raise RuntimeError("DecodePool used outside its context")
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(
            self._executor, prepare_job, os.fspath(path), spec, limits, thumbnails
        )


async def bounded_map(
    func: Callable[[T], Awaitable[R]], items: Iterable[T], *, limit: int
) -> AsyncIterator[tuple[T, R]]:
    """Run `func` over `items` with at most `limit` in flight; yield results as they finish."""
    pending: dict[asyncio.Future[R], T] = {}
    iterator = iter(items)
    try:
        while True:
            for item in itertools.islice(iterator, limit - len(pending)):
                pending[asyncio.ensure_future(func(item))] = item
            if not pending:
                return
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()
    finally:
        for future in pending:
            future.cancel()


async def hold_until(
    ready: asyncio.Future[Any], queue: asyncio.Queue[T | None], *, limit: int
) -> deque[T | None]:
    """Take up to `limit` items off `queue` until `ready` is done or the end (None) comes."""
    held: deque[T | None] = deque()
    while not ready.done() and len(held) < limit and (not held or held[-1] is not None):
        taking = asyncio.ensure_future(queue.get())
        try:
            done, _ = await asyncio.wait((taking, ready), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            taking.cancel()
            raise
        if taking not in done:
            taking.cancel()  # a get cancelled before it ran leaves its item in the queue
            break
        held.append(taking.result())
    return held
