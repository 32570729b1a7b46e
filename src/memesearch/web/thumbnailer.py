"""ThumbnailBackfill: thumbnails that went missing are made when they are asked for."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from memesearch.errors import ImageDecodeError
from memesearch.images.decode import DecodeLimits, FileVanishedError
from memesearch.images.thumbnails import (
    Backfilled,
    ThumbnailSpec,
    ThumbnailWriteError,
    make_thumbnail,
)

log = logging.getLogger(__name__)


class ThumbnailBackfill:
    """Makes missing thumbnails when they are asked for: one decode per hash, a few at a time."""

    def __init__(
        self,
        thumbnails: ThumbnailSpec,
        limits: DecodeLimits,
        *,
        max_decodes: int,
        memory: int = 100_000,
        retry_writes_after: float = 30.0,
    ) -> None:
        self.thumbnails = thumbnails
        self.limits = limits
        self.decodes = 0  # originals read (and decoded unless changed) to make a thumbnail
        self._slots = asyncio.Semaphore(max_decodes)  # a big PNG decodes to hundreds of MB
        self._running: dict[str, asyncio.Task[bool]] = {}
        # Hashes to serve as their original without trying again (too small to thumbnail, or
        # undecodable), oldest first; bounded, and forgotten on restart.
        self._originals: dict[str, None] = {}
        self._memory = memory
        # A thumbnail that cannot be stored (disk full) is no reason to give its image up: no
        # decodes meanwhile (every grid would pay for them), then try again.
        self._retry_writes_after = retry_writes_after
        self._writes_blocked_until = 0.0

    async def ensure(self, original: Path, digest: str) -> bool:
        """Whether the thumbnail of `digest` is on disk, made from `original` now if missing."""
        if digest in self._originals or time.monotonic() < self._writes_blocked_until:
            return False
        task = self._running.get(digest)
        if task is None:
            # Its own task: a client that goes away does not cancel what others wait for.
            task = asyncio.create_task(self._backfill(original, digest))
            self._running[digest] = task
            task.add_done_callback(lambda _: self._running.pop(digest, None))
        return await asyncio.shield(task)

    async def _backfill(self, original: Path, digest: str) -> bool:
        target = self.thumbnails.path_for(digest)
        async with self._slots:
            if await asyncio.to_thread(target.is_file):
                return True  # written while this request waited, by the indexer or another one
            self.decodes += 1
            try:
                outcome = await asyncio.to_thread(
                    make_thumbnail, original, digest, self.thumbnails, self.limits
                )
            except FileVanishedError:
                return False
            except ThumbnailWriteError as exc:
                log.warning("%s; serving originals for now, trying again later", exc)
                self._writes_blocked_until = time.monotonic() + self._retry_writes_after
                return False
            except ImageDecodeError as exc:
                log.warning("no thumbnail for %s, serving the original: %s", original, exc)
                self._remember(digest)
                return False
        if outcome is Backfilled.ORIGINAL:
            self._remember(digest)
        elif outcome is Backfilled.CHANGED:
            log.debug("%s changed since it was indexed: no thumbnail until it is again", original)
        return outcome is Backfilled.WRITTEN

    def _remember(self, digest: str) -> None:
        self._originals[digest] = None
        if len(self._originals) > self._memory:
            del self._originals[next(iter(self._originals))]
