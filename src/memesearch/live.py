"""LiveIndexer: runs indexing passes in the background of the server, one at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from memesearch.errors import MemesearchError
from memesearch.indexer import IndexReport, Phase, Progress
from memesearch.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexingStatus:
    """What the background indexer is doing, for /api/status and the UI."""

    indexing: bool = False
    phase: str = "idle"
    done: int = 0
    total: int = 0
    runs: int = 0
    last_report: IndexReport | None = None
    last_error: str | None = None
    finished_at: float | None = None

    @property
    def pending(self) -> int:
        """Files found to need work and not yet done in this pass."""
        if not self.indexing or self.phase not in (Phase.HASH, Phase.EMBED):
            return 0
        return max(self.total - self.done, 0)


class LiveIndexer:
    """Serialises indexing passes; requests arriving during a pass fold into one more pass."""

    def __init__(
        self, services: Services, *, on_report: Callable[[IndexReport], None] | None = None
    ) -> None:
        self._services = services
        self._on_report = on_report
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.status = IndexingStatus()

    def start(self) -> None:
        """Start the loop and schedule the first pass."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="live-indexer")
        self.request_rescan()

    def request_rescan(self) -> None:
        """Ask for a pass; several requests before it starts cause only one."""
        self._wake.set()

    async def wait_idle(self) -> IndexingStatus:
        """Wait until no pass is running or requested (tests and `--once` style callers)."""
        while self._wake.is_set() or self.status.indexing:
            await asyncio.sleep(0.02)
        return self.status

    async def stop(self) -> None:
        """Cancel the loop; a pass in progress stops between batches, its batches kept."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._pass()

    async def _pass(self) -> None:
        self.status = replace(self.status, indexing=True, phase=Phase.SCAN, done=0, total=0)
        error: str | None = None
        report: IndexReport | None = None
        try:
            indexer = await self._services.indexer()
            report = await indexer.run(progress=self._progress)
        except MemesearchError as exc:
            error = str(exc)
            log.error("indexing pass failed: %s", exc)
        except Exception as exc:  # a bug must not kill the server's indexing loop
            error = f"unexpected error: {exc.__class__.__name__}: {exc}"
            log.exception("indexing pass crashed")
        self.status = replace(
            self.status,
            indexing=False,
            phase="idle",
            runs=self.status.runs + 1,
            last_report=report or self.status.last_report,
            last_error=error,
            finished_at=time.time(),
        )
        if report is not None and self._on_report is not None:
            self._on_report(report)

    def _progress(self, event: Progress) -> None:
        self.status = replace(self.status, phase=event.phase, done=event.done, total=event.total)
