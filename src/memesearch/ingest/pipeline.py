"""Indexer: scan → diff vs store → hash → reuse or decode → embed → store → index."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

import numpy as np

from memesearch.config import Settings
from memesearch.db.repo import Repository
from memesearch.embed.batcher import MicroBatcher, Priority
from memesearch.embed.runtime import ModelRuntime
from memesearch.images.decode import DecodeLimits, PreprocessSpec
from memesearch.images.prepare import PreparedImage
from memesearch.images.thumbnails import ThumbnailSpec
from memesearch.index import VectorIndex
from memesearch.ingest.changes import Resolution, ScanDiff, diff_scan, resolve_hashes
from memesearch.ingest.pool import DecodePool, JobFailure, bounded_map, hash_job, hold_until
from memesearch.ingest.scan import ScanOptions, normalize_scope, scan_library, scan_paths
from memesearch.records import (
    EmbeddedFile,
    FailedFile,
    FileInfo,
    IndexDelta,
    StoredFile,
    VectorSpace,
)

log = logging.getLogger(__name__)
_Batch = list[tuple[FileInfo, PreparedImage | JobFailure]]
# While the model loads, decoded batches beyond `prefetch_batches` are held, up to this many
# bytes of model input, so that the decode workers need not wait for the weights.
_HOLD_BYTES: Final = 256 * 1024 * 1024
# A scoped pass over more paths than this walks the whole library instead.
MAX_SCOPE: Final = 5000


class _SpecMismatch(Exception):
    """The loaded model preprocesses differently from what its config predicted."""


class Phase(StrEnum):
    """Stages of an indexing run, in order."""

    SCAN = "scan"
    HASH = "hash"
    EMBED = "embed"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress event: `done` of `total` items of `phase`."""

    phase: Phase
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


@dataclass(slots=True)
class IndexReport:
    """What one indexing run did; counts refer to files."""

    scanned: int = 0
    unchanged: int = 0
    added: int = 0
    updated: int = 0
    renamed: int = 0
    copied: int = 0
    touched: int = 0
    removed: int = 0
    decoded: int = 0
    embedded: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # failed while probably still being written
    still_failing: int = 0
    scan_problems: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    scope: int | None = None  # paths a scoped pass looked at; None for the whole library

    @property
    def changed(self) -> bool:
        """Whether anything in the store changed."""
        return any((self.added, self.updated, self.renamed, self.copied, self.removed, self.failed))


class Indexer:
    """Brings the store (and optionally a live index) in line with the library folder."""

    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        runtime: ModelRuntime,
        *,
        limits: DecodeLimits,
        thumbnails: ThumbnailSpec | None = None,
        index: VectorIndex | None = None,
        exclude: tuple[Path, ...] = (),
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._runtime = runtime
        self._index = index
        self._space = VectorSpace(runtime.info.model_id, runtime.info.dim)
        lib = settings.library
        self._root = lib.path
        self._scan_options = ScanOptions(
            extensions=frozenset(lib.extensions),
            follow_symlinks=lib.follow_symlinks,
            include_hidden=lib.include_hidden,
            exclude=exclude,
        )
        self._limits = limits
        self._thumbnails = thumbnails

    async def run(
        self, progress: ProgressCallback | None = None, *, paths: Iterable[str] | None = None
    ) -> IndexReport:
        """One pass; a bad file is recorded and skipped, never fatal.

        `paths` (library-relative, '/'-separated) limits the pass to those files and folders,
        found or gone: what a watcher reported. The result is what a full pass would do there,
        at a cost that does not grow with the library. Without it, the whole library.
        """
        started = time.perf_counter()
        notify = progress or (lambda _event: None)
        scope = None if paths is None else normalize_scope(paths)
        if scope is not None and len(scope) > MAX_SCOPE:
            scope = None  # so many changes that one walk is cheaper than path-by-path
        report = IndexReport(scope=None if scope is None else len(scope))
        scanned, rejected = await self._scan(report, scope)
        notify(Progress(Phase.SCAN, len(scanned), len(scanned)))
        stored = await asyncio.to_thread(self._repo.stored_files, space=self._space, under=scope)
        diff = diff_scan(scanned, stored)
        report.unchanged, report.still_failing = diff.unchanged, diff.still_failing
        # Skipping the hash pass needs a store empty as a whole, not just in the scope.
        empty = not stored and scope is None
        resolution = await self._resolve(diff, stored, notify, rejected, empty=empty)
        await self._apply_reuse(resolution, diff, report)
        new_paths = {info.path for info in resolution.to_embed if info.path not in stored}
        await self._embed(resolution.to_embed, new_paths, report, notify)
        await self._drop_orphan_thumbnails(diff, resolution, stored)
        report.seconds = time.perf_counter() - started
        notify(Progress(Phase.DONE, report.scanned, report.scanned))
        return report

    async def _scan(
        self, report: IndexReport, scope: list[str] | None
    ) -> tuple[dict[str, FileInfo], dict[str, str]]:
        """Every file found (in the scope), and why those refused for their names were refused."""
        if scope is None:
            scan = await asyncio.to_thread(scan_library, self._root, self._scan_options)
        else:
            scan = await asyncio.to_thread(scan_paths, self._root, self._scan_options, scope)
        # A file refused for its name is a failed file like any other (listed, retried only
        # when it changes, gone once renamed), so it is diffed with the rest but never read.
        rejected = {path: item.reason for path, item in scan.rejected.items()}
        scanned = {**scan.files, **{path: item.info for path, item in scan.rejected.items()}}
        report.scanned = len(scanned)
        report.scan_problems = [problem for problem in scan.problems if problem[0] not in rejected]
        return scanned, rejected

    async def _resolve(
        self,
        diff: ScanDiff,
        stored: dict[str, StoredFile],
        notify: ProgressCallback,
        rejected: dict[str, str],
        *,
        empty: bool,
    ) -> Resolution:
        hashes: dict[str, str] = {}
        unreadable = {
            info.path: rejected[info.path] for info in diff.to_hash if info.path in rejected
        }
        to_hash = [info for info in diff.to_hash if info.path not in rejected]
        total = len(diff.to_hash)
        if empty:
            # An empty store holds no content to reuse, so hashing first would only read every
            # file twice: the decode workers hash what they read anyway.
            notify(Progress(Phase.HASH, total, total))
            failed = [
                FailedFile(info=info, reason=unreadable[info.path])
                for info in diff.to_hash
                if info.path in unreadable
            ]
            return Resolution(to_embed=[*to_hash, *diff.stale], failed=failed)
        workers = self._settings.indexer.worker_count()

        def hash_one(info: FileInfo) -> asyncio.Future[str | JobFailure]:
            return asyncio.ensure_future(asyncio.to_thread(hash_job, str(self._abs(info))))

        async for info, outcome in bounded_map(hash_one, to_hash, limit=workers * 2):
            if isinstance(outcome, JobFailure):
                if not outcome.vanished:
                    unreadable[info.path] = outcome.reason
            else:
                hashes[info.path] = outcome
            notify(Progress(Phase.HASH, len(hashes) + len(unreadable), total))
        donors = await asyncio.to_thread(
            self._repo.donors_by_hash, hashes=hashes.values(), space=self._space
        )
        return resolve_hashes(diff, stored, hashes, donors, unreadable)

    async def _apply_reuse(
        self, resolution: Resolution, diff: ScanDiff, report: IndexReport
    ) -> None:
        await asyncio.to_thread(self._repo.touch, files=resolution.touched)
        report.touched = len(resolution.touched)
        if resolution.reuses or resolution.removals:
            delta = await asyncio.to_thread(
                self._repo.apply_reuse,
                reuses=resolution.reuses,
                removals=resolution.removals,
                space=self._space,
            )
            await self._update_index(delta)
        report.renamed = sum(reuse.move for reuse in resolution.reuses)
        report.copied = len(resolution.reuses) - report.renamed
        report.removed = len(resolution.removals)
        if resolution.failed:
            await self._store_batch([], resolution.failed, report)

    async def _embed(
        self,
        files: list[FileInfo],
        new_paths: set[str],
        report: IndexReport,
        notify: ProgressCallback,
    ) -> None:
        if not files:
            return
        # The weights load while the workers decode, with the preprocessing the config predicts.
        loading = asyncio.ensure_future(self._runtime.batcher())
        try:
            spec = self._runtime.info.preprocess or (await loading).embedder.preprocess
            if not await self._decode_and_embed(files, spec, loading, new_paths, report, notify):
                log.warning("%s preprocesses unlike its config says", self._runtime.info.spec)
                spec = (await loading).embedder.preprocess
                await self._decode_and_embed(files, spec, loading, new_paths, report, notify)
        finally:
            loading.cancel()  # a no-op unless this run failed while the model was loading

    async def _decode_and_embed(
        self,
        files: list[FileInfo],
        spec: PreprocessSpec,
        loading: asyncio.Future[MicroBatcher],
        new_paths: set[str],
        report: IndexReport,
        notify: ProgressCallback,
    ) -> bool:
        """Decode in the pool while decoded batches are embedded; False: the spec was wrong."""
        queue: asyncio.Queue[_Batch | None]
        queue = asyncio.Queue(maxsize=self._settings.indexer.prefetch_batches)
        workers = self._settings.indexer.worker_count()
        try:
            async with DecodePool(workers) as pool, asyncio.TaskGroup() as group:
                group.create_task(self._produce(pool, files, spec, queue))
                group.create_task(
                    self._consume(queue, spec, loading, len(files), new_paths, report, notify)
                )
        except BaseExceptionGroup as errors:
            if errors.subgroup(_SpecMismatch) is not None:
                return False
            failed_load = loading.done() and not loading.cancelled() and loading.exception()
            if failed_load:
                raise failed_load from None  # the model could not load: say just that
            raise
        return True

    async def _produce(
        self,
        pool: DecodePool,
        files: list[FileInfo],
        spec: PreprocessSpec,
        queue: asyncio.Queue[_Batch | None],
    ) -> None:
        batch_size = self._settings.model.batch_size
        batch: _Batch = []

        def decode(info: FileInfo) -> asyncio.Future[PreparedImage | JobFailure]:
            job = pool.prepare(self._abs(info), spec, self._limits, self._thumbnails)
            return asyncio.ensure_future(job)

        limit = pool.workers * 2 + batch_size
        async for info, outcome in bounded_map(decode, files, limit=limit):
            batch.append((info, outcome))
            if len(batch) >= batch_size:
                await queue.put(batch)
                batch = []
        if batch:
            await queue.put(batch)
        await queue.put(None)

    async def _consume(
        self,
        queue: asyncio.Queue[_Batch | None],
        spec: PreprocessSpec,
        loading: asyncio.Future[MicroBatcher],
        total: int,
        new_paths: set[str],
        report: IndexReport,
        notify: ProgressCallback,
    ) -> None:
        # While the weights load, batches are taken off the queue so that the workers go on.
        height, width = spec.size
        limit = _HOLD_BYTES // (height * width * 3 * self._settings.model.batch_size)
        held = await hold_until(loading, queue, limit=limit)
        if (await loading).embedder.preprocess != spec:
            raise _SpecMismatch  # nothing is stored yet: decode again with the model's own spec
        done = 0
        while (batch := held.popleft() if held else await queue.get()) is not None:
            report.decoded += len(batch)
            await self._embed_and_store(batch, new_paths, report)
            done += len(batch)
            notify(Progress(Phase.EMBED, done, total))

    async def _embed_and_store(
        self,
        batch: list[tuple[FileInfo, PreparedImage | JobFailure]],
        new_paths: set[str],
        report: IndexReport,
    ) -> None:
        good = [(info, out) for info, out in batch if isinstance(out, PreparedImage)]
        for info, prepared in good:
            if prepared.thumbnail_error:
                log.warning("no thumbnail for %s: %s", info.path, prepared.thumbnail_error)
        failed = []
        fresh_after = time.time_ns() - int(self._settings.indexer.settle_seconds * 1e9)
        for info, out in batch:
            if not isinstance(out, JobFailure) or out.vanished:
                continue
            if info.mtime_ns > fresh_after:
                report.deferred.append(info.path)  # a copy in progress: retried, not failed
            else:
                failed.append(FailedFile(info=info, reason=out.reason))
        vectors = np.zeros((0, self._space.dim), np.float32)
        if good:
            batcher = await self._runtime.batcher()
            pixels = np.stack([prepared.pixels for _, prepared in good])
            vectors = await batcher.embed_images(pixels, priority=Priority.INDEX)
            report.embedded += len(good)
        embedded = [
            EmbeddedFile(
                info=info,
                content_hash=prepared.content_hash,
                width=prepared.width,
                height=prepared.height,
                format=prepared.format,
                vector=vector,
            )
            for (info, prepared), vector in zip(good, vectors, strict=True)
        ]
        for item in embedded:
            if item.info.path in new_paths:
                report.added += 1
            else:
                report.updated += 1
        await self._store_batch(embedded, failed, report)

    async def _store_batch(
        self, embedded: list[EmbeddedFile], failed: list[FailedFile], report: IndexReport
    ) -> None:
        delta = await asyncio.to_thread(
            self._repo.write_batch, embedded=embedded, failed=failed, space=self._space
        )
        report.failed.extend((item.info.path, item.reason) for item in failed)
        await self._update_index(delta)

    async def _drop_orphan_thumbnails(
        self, diff: ScanDiff, resolution: Resolution, stored: dict[str, StoredFile]
    ) -> None:
        """Delete thumbnails of content no file has any more (deleted or edited files)."""
        if self._thumbnails is None:
            return
        left = {diff.missing[i].content_hash for i in resolution.removals}
        left |= {stored[info.path].content_hash for info in diff.to_hash if info.path in stored}
        candidates = {h for h in left if h}
        if not candidates:
            return
        in_use = await asyncio.to_thread(self._repo.hashes_in_use, hashes=candidates)
        spec = self._thumbnails
        for content_hash in candidates - in_use:
            await asyncio.to_thread(spec.path_for(content_hash).unlink, missing_ok=True)

    async def _update_index(self, delta: IndexDelta) -> None:
        if self._index is None:
            return
        await asyncio.to_thread(self._index.apply, delta)

    def _abs(self, info: FileInfo) -> Path:
        return self._root / info.path
