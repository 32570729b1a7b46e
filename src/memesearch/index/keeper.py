"""IndexKeeper: opens the live index fast, picks its kind, retrains it and saves it.

- Opening loads the saved index file when its stamp matches the store's generation; otherwise
  it rebuilds from the store (reusing a stale file's trained cells when they still fit).
- `[index] kind = "auto"` serves an exact flat index until the library reaches
  `approximate_from` vectors, then trains an inverted file in the background and swaps it in;
  it retrains when the library has grown `retrain_growth` times past what the cells were
  trained for. Searches never wait for any of this: the old index serves until the swap.
- The index is saved after rebuilds, at most every `save_interval_seconds` after changes,
  and on close.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from memesearch.config import IndexSettings
from memesearch.db.repo import Repository
from memesearch.index.ivf import MIN_VECTORS, lists_for, train_ivf, training_size
from memesearch.index.persist import IndexStamp, load_index, read_stamp, save_index
from memesearch.index.vector_index import IndexKind, VectorIndex, new_flat
from memesearch.records import VectorSpace

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KeeperStatus:
    """What the index is and what is being done to it, for /api/status."""

    kind: str
    vectors: int
    lists: int
    nprobe: int
    generation: int | None
    rebuilding: str | None  # why a background rebuild runs, None when none does
    saved_generation: int | None
    last_error: str | None


class IndexKeeper:
    """Owns the `VectorIndex` of one vector space for the life of a process."""

    def __init__(
        self,
        settings: IndexSettings,
        repo: Repository,
        space: VectorSpace,
        *,
        path: Path | None,
        use_gpu: bool = False,
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._space = space
        self._path = path if settings.persist else None
        self._use_gpu = use_gpu
        self._index: VectorIndex | None = None
        self._open_lock = asyncio.Lock()
        self._save_lock = threading.Lock()
        self._saved_generation: int | None = None
        self._store_id: str | None = None  # the database's, read on first need (in a thread)
        self._last_save = time.monotonic()
        self._rebuild: asyncio.Future[None] | None = None
        self._rebuild_reason: str | None = None
        self._stop = threading.Event()
        self._rebuild_error: str | None = None  # until a rebuild succeeds
        self._save_error: str | None = None  # until a save succeeds

    @property
    def index(self) -> VectorIndex | None:
        """The live index once opened."""
        return self._index

    @property
    def path(self) -> Path | None:
        """Where the index is saved (None when persistence is off)."""
        return self._path

    def status(self) -> KeeperStatus:
        """A snapshot for status displays."""
        index = self._index
        return KeeperStatus(
            kind=str(index.kind) if index else "unopened",
            vectors=len(index) if index else 0,
            lists=index.lists if index else 0,
            nprobe=index.nprobe if index else 0,
            generation=index.generation if index else None,
            rebuilding=self._rebuild_reason,
            saved_generation=self._saved_generation,
            last_error=self._rebuild_error or self._save_error,
        )

    async def open(self) -> VectorIndex:
        """The live index: loaded from its file when fresh, else built from the store."""
        async with self._open_lock:
            if self._index is None:
                self._index = await asyncio.to_thread(self._open)
            return self._index

    async def open_if_saved(self) -> VectorIndex | None:
        """Open the index only if a fresh saved file makes that cheap (for one-shot commands)."""
        if self._index is None:
            stamp = await asyncio.to_thread(self._fresh_stamp)
            if stamp is None:
                return None
        return await self.open()

    async def maintain(self) -> None:
        """Start a background rebuild if the index needs one; else save it if a save is due."""
        index = self._index
        if index is None or self._rebuild is not None:
            return
        reason = await asyncio.to_thread(self._rebuild_reason_for, index)
        if self._rebuild is not None or self._stop.is_set():
            return  # another call started one meanwhile, or the keeper was closed
        if reason is None:
            if self._save_due(index):
                await asyncio.to_thread(self._save, index)
            return
        log.info("rebuilding the index in the background: %s", reason)
        self._rebuild_reason = reason
        self._rebuild = _in_daemon_thread(lambda: self._rebuild_now(index), name="index-rebuild")
        self._rebuild.add_done_callback(self._rebuild_done)

    async def wait_rebuilt(self) -> None:
        """Wait for a background rebuild, if one runs (tests, benchmarks)."""
        while self._rebuild is not None:
            await asyncio.shield(self._rebuild)

    async def close(self) -> None:
        """Stop a rebuild in progress and save the index if it changed since the last save."""
        self._stop.set()
        if self._rebuild is not None:
            try:  # a rebuild stops at its next batch; k-means cannot be interrupted
                await asyncio.wait_for(asyncio.shield(self._rebuild), timeout=5)
            except (TimeoutError, Exception):
                pass
        index = self._index
        if index is not None and self._rebuild is None and self._dirty(index):
            await asyncio.to_thread(self._save, index)

    # deciding

    def wanted_kind(self, count: int, current: IndexKind | None) -> IndexKind:
        """The kind to serve `count` vectors, with hysteresis around the auto threshold."""
        kind = self._settings.kind
        if kind == "flat" or count < MIN_VECTORS:
            return IndexKind.FLAT
        if kind == "ivf":
            return IndexKind.IVF
        threshold = self._settings.approximate_from
        if current is IndexKind.IVF:
            threshold //= 2  # no flapping between kinds around the threshold
        return IndexKind.IVF if count >= threshold else IndexKind.FLAT

    def _rebuild_reason_for(self, index: VectorIndex) -> str | None:
        count = len(index)
        wanted = self.wanted_kind(count, index.kind)
        if wanted is not index.kind:
            return f"{count} vectors: switching to a {wanted} index"
        growth = self._settings.retrain_growth
        if index.kind is IndexKind.IVF and count > growth * max(index.trained_for, 1):
            return f"{count} vectors, cells trained for {index.trained_for}: retraining"
        if index.generation is None or index.generation != self._repo.generation():
            return "the store changed behind the index (another writer)"
        return None

    # opening

    def _open(self) -> VectorIndex:
        generation = self._repo.generation()
        stamp = self._stamp()
        if stamp is not None and stamp.generation == generation:
            wanted = self.wanted_kind(stamp.count, IndexKind(stamp.kind))
            if wanted == stamp.kind:
                loaded = self._load(generation)
                if loaded is not None:
                    return loaded
        trained = self._trained_cells(stamp)
        index = self._build(trained, generation, stamp.trained_for if stamp else 0)
        if self.wanted_kind(len(index), index.kind) is index.kind:
            self._save(index)  # else a background rebuild will save what it makes
        return index

    def _fresh_stamp(self) -> IndexStamp | None:
        stamp = self._stamp()
        return stamp if stamp is not None and stamp.generation == self._repo.generation() else None

    def _stamp(self) -> IndexStamp | None:
        if self._path is None:
            return None
        stamp = read_stamp(self._path)
        if stamp is None or (stamp.model_id, stamp.dim) != (self._space.model_id, self._space.dim):
            return None
        if stamp.store_id != self._database_id():
            log.info("the saved index %s was built from another database: ignored", self._path)
            return None
        return stamp

    def _database_id(self) -> str:
        if self._store_id is None:
            self._store_id = self._repo.store_id()
        return self._store_id

    def _load(self, generation: int) -> VectorIndex | None:
        assert self._path is not None
        started = time.perf_counter()
        try:
            stamp, faiss_index = load_index(self._path)
        except (OSError, ValueError) as exc:
            log.warning("cannot load the saved index %s (%s); rebuilding", self._path, exc)
            return None
        if (stamp.store_id, stamp.generation) != (self._database_id(), generation):
            return None  # rewritten by another process between the two reads
        index = self._new(faiss_index, generation=generation, trained_for=stamp.trained_for)
        self._saved_generation = generation
        log.info(
            "index loaded from %s: %d vectors, %s, in %.1f s",
            self._path,
            len(index),
            index.kind,
            time.perf_counter() - started,
        )
        return index

    def _trained_cells(self, stamp: IndexStamp | None) -> Any:
        """A stale saved IVF index emptied of vectors, if its cells still suit the store."""
        if self._path is None or stamp is None or stamp.kind != IndexKind.IVF:
            return None
        count = self._repo.counts(space=self._space).indexed
        if self.wanted_kind(count, IndexKind.IVF) is not IndexKind.IVF:
            return None
        if count > self._settings.retrain_growth * max(stamp.trained_for, 1):
            return None
        try:
            _, faiss_index = load_index(self._path)
        except (OSError, ValueError):
            return None
        faiss_index.reset()
        log.info("the saved index is stale: refilling its trained cells from the store")
        return faiss_index

    def _build(self, faiss_index: Any, generation: int, trained_for: int) -> VectorIndex:
        started = time.perf_counter()
        index = self._new(
            faiss_index if faiss_index is not None else new_flat(self._space.dim),
            generation=None,
            trained_for=trained_for if faiss_index is not None else 0,
        )
        for ids, vectors in self._repo.iter_vectors(space=self._space):
            index.add(ids, vectors)
        # Writes by other processes while we read make the generation uncertain: check again.
        index.generation = generation if self._repo.generation() == generation else None
        log.info(
            "index built from the store: %d vectors, %s, in %.1f s",
            len(index),
            index.kind,
            time.perf_counter() - started,
        )
        return index

    def _new(self, faiss_index: Any, *, generation: int | None, trained_for: int) -> VectorIndex:
        return VectorIndex(
            self._space.dim,
            index=faiss_index,
            nprobe=self._settings.nprobe,
            use_gpu=self._use_gpu,
            generation=generation,
            trained_for=trained_for,
        )

    # rebuilding (on a daemon thread)

    def _rebuild_now(self, index: VectorIndex) -> None:
        started = time.perf_counter()
        index.begin_rebuild()
        try:
            snapshot = self._repo.generation()
            count = self._repo.counts(space=self._space).indexed
            wanted = self.wanted_kind(count, index.kind)
            trained_for = 0
            if wanted is IndexKind.IVF:
                sample = index.sample(training_size(lists_for(count), count))
                self._check_stop()
                faiss_index = train_ivf(self._space.dim, sample, count)
                trained_for = count
            else:
                faiss_index = new_flat(self._space.dim)
            for ids, vectors in self._repo.iter_vectors(space=self._space):
                self._check_stop()
                faiss_index.add_with_ids(vectors, ids)
            index.finish_rebuild(faiss_index, snapshot=snapshot, trained_for=trained_for)
        except BaseException:
            index.abort_rebuild()
            raise
        log.info("index rebuilt in %.1f s", time.perf_counter() - started)
        self._save(index)

    def _rebuild_done(self, future: asyncio.Future[None]) -> None:
        self._rebuild, self._rebuild_reason = None, None
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, _Stopped):
            return
        if error is not None:
            self._rebuild_error = f"index rebuild failed: {error}"
            log.error("index rebuild failed", exc_info=error)
        else:
            self._rebuild_error = None

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    # saving

    def _dirty(self, index: VectorIndex) -> bool:
        return (
            self._path is not None
            and index.generation is not None
            and index.generation != self._saved_generation
        )

    def _save_due(self, index: VectorIndex) -> bool:
        waited = time.monotonic() - self._last_save
        return self._dirty(index) and waited >= self._settings.save_interval_seconds

    def _save(self, index: VectorIndex) -> None:
        if self._path is None:
            return
        with self._save_lock:
            started = time.perf_counter()
            try:
                stamp = save_index(
                    self._path,
                    index,
                    store_id=self._database_id(),
                    model_id=self._space.model_id,
                )
            except OSError as exc:
                self._save_error = f"cannot save the index to {self._path}: {exc}"
                log.warning("%s", self._save_error)
                return
            self._last_save, self._save_error = time.monotonic(), None
            if stamp is not None:
                self._saved_generation = stamp.generation
                log.info(
                    "index saved to %s (%d vectors, generation %d) in %.1f s",
                    self._path,
                    stamp.count,
                    stamp.generation,
                    time.perf_counter() - started,
                )


class _Stopped(Exception):
    """The keeper was closed while a rebuild ran."""


def _in_daemon_thread(work: Callable[[], T], *, name: str) -> asyncio.Future[T]:
    """Run `work` on a daemon thread (process exit does not wait for it); await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the event loop is gone: nobody is waiting any more
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
