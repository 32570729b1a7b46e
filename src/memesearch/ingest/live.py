"""LiveIndexer: keeps the index current in the server's background: watcher, timer, requests."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from watchfiles import Change, awatch

from memesearch.config import Settings
from memesearch.errors import MemesearchError
from memesearch.ingest.pipeline import Indexer, IndexReport, Phase, Progress
from memesearch.ingest.scan import within

log = logging.getLogger(__name__)
# A watcher batch with more changed paths than this starts a pass over the whole library.
WATCH_BURST: Final = 1000
# A failed pass is tried again after this many seconds, doubling up to the most.
# How often the watcher makes sure it still watches the library folder (not a deleted one).
WATCH_CHECK_SECONDS: Final = 2.0
RETRY_FIRST_SECONDS: Final = 2.0
RETRY_MOST_SECONDS: Final = 300.0


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
    failing_since: float | None = None  # when the passes began to fail (unix time)
    retry_at: float | None = None  # when a failed pass is tried again (unix time)

    @property
    def pending(self) -> int:
        """Files found to need work and not yet done in this pass."""
        if not self.indexing or self.phase not in (Phase.HASH, Phase.EMBED):
            return 0
        return max(self.total - self.done, 0)


class LiveIndexer:
    """Serialises indexing passes; requests arriving during a pass fold into one more pass."""

    def __init__(
        self,
        settings: Settings,
        indexer: Indexer,
        *,
        maintain: Callable[[], Awaitable[None]],
        after_pass: Callable[[IndexReport | None], Awaitable[None]] | None = None,
    ) -> None:
        """After every pass, `after_pass` gets its report (None: it failed), then `maintain` runs
        (index upkeep)."""
        self._settings = settings
        self._indexer = indexer
        self._maintain = maintain
        self._after_pass = after_pass
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._retry: asyncio.TimerHandle | None = None  # a look at files still being written
        # What the next pass covers: paths the watcher reported, or None for the whole library.
        self._pending: set[str] | None = set()
        self._deferred: set[str] = set()  # files that were still being written, to look at again
        self._failures = 0  # passes failed in a row
        self._allow_mass_removal = False  # confirmed for the next full pass
        self._after_failure: asyncio.TimerHandle | None = None
        self.status = IndexingStatus()

    def start(self) -> None:
        """Start the pass loop, the watcher and the rescan timer; schedule the first pass."""
        if self._tasks:
            return
        cfg = self._settings.indexer
        self._tasks.append(asyncio.create_task(self._loop(), name="live-indexer"))
        if cfg.watch:
            self._tasks.append(asyncio.create_task(self._watch(), name="library-watcher"))
        if cfg.rescan_minutes > 0:
            self._tasks.append(asyncio.create_task(self._every(cfg.rescan_minutes * 60)))
        self.request_rescan()

    def request_rescan(self, *, allow_mass_removal: bool = False) -> None:
        """Ask for a pass over the whole library; requests before it starts fold into it.

        `allow_mass_removal`: the user confirms that files which vanished all at once are gone.
        """
        self._pending = None
        self._allow_mass_removal |= allow_mass_removal
        self._wake.set()

    def request_paths(self, paths: Iterable[str]) -> None:
        """Ask for a pass over these library-relative paths (files or folders, found or gone)."""
        paths = set(paths)
        if not paths:
            return
        if self._pending is not None:
            self._pending |= paths
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Whether no pass is running and none has been asked for."""
        return not self._wake.is_set() and not self.status.indexing

    async def stop(self) -> None:
        """Stop everything; a pass in progress stops between batches, its batches kept."""
        self._stop.set()
        self._schedule_retry(None)
        if self._after_failure is not None:
            self._after_failure.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _watch(self) -> None:
        """Rescan shortly after anything relevant changes under the library folder.

        The watch is on the folder that was there when it started: one deleted and made anew
        (a restore, `rm -rf; mkdir; cp`) or mounted later is noticed within WATCH_CHECK_SECONDS
        and watched again, with a full rescan for what happened meanwhile.
        """
        settings = self._settings
        root = settings.library.path
        missing = False
        while not self._stop.is_set():
            watched = _identity(root)
            if watched is None:
                missing = True
                await asyncio.sleep(WATCH_CHECK_SECONDS)  # nothing to watch (yet)
                continue
            if missing:
                log.warning("library folder %s is back: watching it again", root)
                self.request_rescan()
                missing = False
            try:
                async for changes in awatch(
                    root,
                    watch_filter=self._relevant,
                    debounce=settings.indexer.debounce_ms,
                    step=50,
                    stop_event=self._stop,
                    ignore_permission_denied=True,
                    rust_timeout=int(WATCH_CHECK_SECONDS * 1000),
                    yield_on_timeout=True,  # a quiet folder is still checked for replacement
                ):
                    if _identity(root) != watched:
                        log.warning("library folder %s was removed or replaced", root)
                        self.request_rescan()
                        break
                    if len(changes) > WATCH_BURST:
                        # A burst this big may have overflowed the kernel's event queue, and
                        # lost events are only found by a walk; it costs about as much anyway.
                        self.request_rescan()
                    elif changes:
                        self.request_paths(
                            Path(path).relative_to(root).as_posix() for _, path in changes
                        )
            except (OSError, RuntimeError) as exc:  # the folder vanished, or inotify ran out
                if _identity(root) != watched:
                    continue  # gone or replaced: the next round waits for it and re-arms
                log.warning("cannot watch %s (%s); relying on rescans", root, exc)
                await asyncio.sleep(30)
                self.request_rescan()  # whatever changed while nothing was watching

    def _relevant(self, change: Change, path: str) -> bool:
        lib = self._settings.library
        if any(path.startswith(str(own)) for own in self._settings.own_paths):
            return False  # our own thumbnails, uploads and database files
        relative = Path(path).relative_to(lib.path) if path.startswith(str(lib.path)) else None
        if relative is None or any(part.startswith(".") for part in relative.parts):
            return lib.include_hidden and relative is not None
        suffix = relative.suffix.lower()
        if suffix in lib.extensions or not suffix or change is Change.deleted:
            return True  # an image, or maybe a folder (one moved away may hold indexed files)
        return os.path.isdir(path)  # a folder named like "2024.memes"

    async def _every(self, seconds: float) -> None:
        """Full rescans on a timer, for changes no watcher reports (network mounts)."""
        while True:
            await asyncio.sleep(seconds)
            self.request_rescan()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            scope, self._pending = self._pending, set()
            await self._pass(scope)

    async def _pass(self, scope: set[str] | None) -> None:
        self.status = replace(self.status, indexing=True, phase=Phase.SCAN, done=0, total=0)
        error: str | None = None
        report: IndexReport | None = None
        try:
            allow, self._allow_mass_removal = self._allow_mass_removal and scope is None, False
            report = await self._indexer.run(
                progress=self._progress, paths=scope, allow_mass_removal=allow
            )
        except MemesearchError as exc:
            error = str(exc)
            log.error("indexing pass failed: %s", exc)
        except Exception as exc:  # a bug or the disk must not kill the server's indexing loop
            error = describe_failure(exc)
            log.exception("indexing pass failed: %s", error)
        if report is None:  # not lost: the next pass, whatever asks for it, covers the scope
            if scope is None:
                self._pending = None
            elif self._pending is not None:
                self._pending |= scope
        now = time.time()
        retry_in = self._after(failed=report is None)
        self.status = replace(
            self.status,
            indexing=False,
            phase="idle",
            runs=self.status.runs + 1,
            last_report=report or self.status.last_report,
            last_error=error,
            finished_at=now,
            failing_since=None if report else (self.status.failing_since or now),
            retry_at=None if retry_in is None else now + retry_in,
        )
        if self._after_pass is not None:
            try:  # a failed pass may still have stored some batches
                await self._after_pass(report)
            except Exception:
                log.exception("after-pass hook failed")
        try:  # a kind switch, a retrain or a due save of the index
            await self._maintain()
        except Exception:
            log.exception("index upkeep failed")
        if report is not None:
            # Files still being written: look again once they should have settled. A pass
            # settles the deferrals in its scope (every one, for a full pass), so one retry,
            # after the latest pass that deferred any, covers all still open; none is needed
            # once none are (a watched copy that finished).
            if report.scope is None:
                self._deferred = set(report.deferred)
            else:
                still = {path for path in self._deferred if not within(path, scope or ())}
                self._deferred = still | set(report.deferred)
            settle = self._settings.indexer.settle_seconds
            self._schedule_retry(settle + 1 if self._deferred else None)

    def _after(self, *, failed: bool) -> float | None:
        """After a failed pass, schedule the same pass again with backoff; its delay, or None."""
        if self._after_failure is not None:
            self._after_failure.cancel()
            self._after_failure = None
        if not failed:
            self._failures = 0
            return None
        self._failures += 1
        delay: float = min(RETRY_FIRST_SECONDS * 2.0 ** (self._failures - 1), RETRY_MOST_SECONDS)

        def again() -> None:  # the failed pass's scope waits in `_pending`
            self._after_failure = None
            self._wake.set()

        self._after_failure = asyncio.get_running_loop().call_later(delay, again)
        return delay

    def _schedule_retry(self, delay: float | None) -> None:
        """Replace the pending retry with one in `delay` seconds, or none."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(delay, lambda: self.request_paths(self._deferred))

    def _progress(self, event: Progress) -> None:
        self.status = replace(self.status, phase=event.phase, done=event.done, total=event.total)


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder is at this path (device, inode); None when there is none."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def describe_failure(error: BaseException) -> str:
    """What went wrong, in words: the cause inside task groups and database wrappers."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]  # "unhandled errors in a TaskGroup" says nothing
    cause = getattr(error, "orig", None)  # SQLAlchemy wraps the driver's error
    if isinstance(cause, BaseException):
        return f"database error: {cause}"
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        if error.errno == errno.ENOSPC:
            return f"disk full{where}: {error.strerror}"
        return f"{error.strerror or error}{where}"
    return f"unexpected error: {error.__class__.__name__}: {error}"
