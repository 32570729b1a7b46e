"""ModelRuntime: loads the model once, on first use, and owns the batcher in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from memesearch.config import ModelSettings
from memesearch.embed.batcher import BatchObserver, MicroBatcher
from memesearch.embed.model import Embedder, ModelInfo, load_embedder


class ModelRuntime:
    """Lazy holder of embedder + batcher; a run with nothing to embed never loads weights."""

    def __init__(
        self,
        settings: ModelSettings,
        info: ModelInfo,
        *,
        observer: BatchObserver | None = None,
        loader: Callable[[ModelSettings, ModelInfo], Embedder] = load_embedder,
    ) -> None:
        self.settings = settings
        self.info = info
        self._observer = observer
        self._loader = loader
        self._lock = asyncio.Lock()
        self._batcher: MicroBatcher | None = None

    @property
    def embedder(self) -> Embedder | None:
        """The loaded embedder, or None before first use."""
        return None if self._batcher is None else self._batcher.embedder

    async def batcher(self) -> MicroBatcher:
        """The running batcher, loading the model (off the event loop) the first time."""
        async with self._lock:
            if self._batcher is None:
                embedder = await asyncio.to_thread(self._loader, self.settings, self.info)
                batcher = MicroBatcher(
                    embedder,
                    max_batch_size=self.settings.batch_size,
                    max_wait_ms=self.settings.max_wait_ms,
                    observer=self._observer,
                )
                batcher.start()
                self._batcher = batcher
            return self._batcher

    async def __aenter__(self) -> ModelRuntime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the batcher; the model is released with it."""
        if self._batcher is not None:
            await self._batcher.stop()
            self._batcher = None
