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
from memesearch.ingest.scan import (
    ScanOptions,
    normalize_scope,
    scan_library,
    scan_paths,
    within,
)
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
# Fewer vanished files than this are removed whatever share of the library they are (a small
# library's owner deleting a few memes), unless the library folder looks empty altogether.
_MASS_REMOVAL_MIN: Final = 20


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
    kept_unread: int = 0  # stored files in folders that could not be read: kept, not removed
    held_removals: int = 0  # files missing from disk but kept: too many at once (an unmount?)
    held_reason: str | None = None

    @property
    def changed(self) -> bool:
        """Whether anything in the store changed."""
        return any((self.added, self.updated, self.renamed, self.copied, self.removed, self.failed))


class Indexer:
    """Brings the store (and optionally a live index) in line with the library folder.

    Holds what every pass shares (settings, store, model, index); each `run` is one `_Pass`.
    """

    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        runtime: ModelRuntime,
        *,
        limits: DecodeLimits,
        thumbnails: ThumbnailSpec | None = None,
        index: VectorIndex | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.runtime = runtime
        self.index = index
        self.space = VectorSpace(runtime.info.model_id, runtime.info.dim)
        lib = settings.library
        self.root = lib.path
        self.scan_options = ScanOptions(
            extensions=frozenset(lib.extensions),
            follow_symlinks=lib.follow_symlinks,
            include_hidden=lib.include_hidden,
            exclude=settings.own_paths,
        )
        self.limits = limits
        self.thumbnails = thumbnails

    async def run(
        self,
        progress: ProgressCallback | None = None,
        *,
        paths: Iterable[str] | None = None,
        allow_mass_removal: bool = False,
    ) -> IndexReport:
        """One pass; a bad file is recorded and skipped, never fatal.

        `paths` (library-relative, '/'-separated) limits the pass to those files and folders,
        found or gone: what a watcher reported. The result is what a full pass would do there,
        at a cost that does not grow with the library. Without it, the whole library.
        """
        scope = None if paths is None else normalize_scope(paths)
        if scope is not None and len(scope) > MAX_SCOPE:
            scope = None  # so many changes that one walk is cheaper than path-by-path
        notify = progress or (lambda _event: None)
        return await _Pass(self, scope, notify, allow_mass_removal=allow_mass_removal).run()

    def path_of(self, info: FileInfo) -> Path:
        """Where a scanned file is on disk."""
        return self.root / info.path

    async def apply_to_index(self, delta: IndexDelta) -> None:
        """Bring the live index (if any) in line with a committed store write."""
        if self.index is not None:
            await asyncio.to_thread(self.index.apply, delta)


class _Pass:
    """One indexing pass: what it found and decided so far, and the steps that find it."""

    def __init__(
        self,
        indexer: Indexer,
        scope: list[str] | None,
        notify: ProgressCallback,
        *,
        allow_mass_removal: bool = False,
    ) -> None:
        self.ix = indexer
        self.allow_mass_removal = allow_mass_removal
        self.scope = scope
        self.notify = notify
        self.report = IndexReport(scope=None if scope is None else len(scope))
        self.rejected: dict[str, str] = {}  # files refused for their names, with the reason
        self.stored: dict[str, StoredFile] = {}
        self.new_paths: set[str] = set()  # files to embed that the store has never seen
        self.unknown: list[str] = []  # unreadable files and folders: what is there is unknown

    async def run(self) -> IndexReport:
        started = time.perf_counter()
        ix, report = self.ix, self.report
        await asyncio.to_thread(ix.repo.check_in_place)  # never write into a deleted store
        scanned = await self._scan()
        self.notify(Progress(Phase.SCAN, len(scanned), len(scanned)))
        self.stored = await asyncio.to_thread(
            ix.repo.stored_files, space=ix.space, under=self.scope
        )
        if self.unknown:  # unreadable right now: neither changed nor gone, left as they are
            known = {p: f for p, f in self.stored.items() if not within(p, self.unknown)}
            report.kept_unread = len(self.stored) - len(known)
            self.stored = known
        diff = diff_scan(scanned, self.stored)
        report.unchanged, report.still_failing = diff.unchanged, diff.still_failing
        resolution = await self._resolve(diff)
        await self._hold_mass_removal(resolution, found=len(scanned))
        await self._apply_reuse(resolution)
        self.new_paths = {i.path for i in resolution.to_embed if i.path not in self.stored}
        await self._embed(resolution.to_embed)
        await self._drop_orphan_thumbnails(diff, resolution)
        report.seconds = time.perf_counter() - started
        self.notify(Progress(Phase.DONE, report.scanned, report.scanned))
        return report

    async def _scan(self) -> dict[str, FileInfo]:
        """Every file found (in the scope); those refused for their names land in `rejected`."""
        ix = self.ix
        if self.scope is None:
            scan = await asyncio.to_thread(scan_library, ix.root, ix.scan_options)
        else:
            scan = await asyncio.to_thread(scan_paths, ix.root, ix.scan_options, self.scope)
        # A file refused for its name is a failed file like any other (listed, retried only
        # when it changes, gone once renamed), so it is diffed with the rest but never read.
        self.rejected = {path: item.reason for path, item in scan.rejected.items()}
        self.unknown = scan.unknown
        scanned = {**scan.files, **{path: item.info for path, item in scan.rejected.items()}}
        self.report.scanned = len(scanned)
        self.report.scan_problems = [p for p in scan.problems if p[0] not in self.rejected]
        return scanned

    async def _resolve(self, diff: ScanDiff) -> Resolution:
        """Hash what changed and decide per file: touch, reuse a vector, or embed."""
        unreadable = {
            i.path: self.rejected[i.path] for i in diff.to_hash if i.path in self.rejected
        }
        to_hash = [info for info in diff.to_hash if info.path not in self.rejected]
        total = len(diff.to_hash)
        # Skipping the hash pass needs a store empty as a whole, not just in the scope.
        if not self.stored and self.scope is None:
            # An empty store holds no content to reuse, so hashing first would only read every
            # file twice: the decode workers hash what they read anyway.
            self.notify(Progress(Phase.HASH, total, total))
            failed = [
                FailedFile(info=i, reason=unreadable[i.path])
                for i in diff.to_hash
                if i.path in unreadable
            ]
            return Resolution(to_embed=[*to_hash, *diff.stale], failed=failed)
        ix = self.ix
        hashes: dict[str, str] = {}

        def hash_one(info: FileInfo) -> asyncio.Future[str | JobFailure]:
            return asyncio.ensure_future(asyncio.to_thread(hash_job, str(ix.path_of(info))))

        workers = ix.settings.indexer.worker_count()
        async for info, outcome in bounded_map(hash_one, to_hash, limit=workers * 2):
            if isinstance(outcome, JobFailure):
                if not outcome.vanished:
                    unreadable[info.path] = outcome.reason
            else:
                hashes[info.path] = outcome
            self.notify(Progress(Phase.HASH, len(hashes) + len(unreadable), total))
        donors = await asyncio.to_thread(
            ix.repo.donors_by_hash, hashes=hashes.values(), space=ix.space
        )
        return resolve_hashes(diff, self.stored, hashes, donors, unreadable)

    async def _hold_mass_removal(self, resolution: Resolution, *, found: int) -> None:
        """Keep files that vanished all at once: an unmounted drive looks like that, and their
        vectors would cost hours to compute again. The next pass that sees them settles it;
        `allow_mass_removal` confirms that they are gone."""
        removing = len(resolution.removals)
        if not removing or self.allow_mass_removal:
            return
        total = len(self.stored)
        if self.scope is not None:  # a watcher pass knows its scope: the share is of the store
            total = (await asyncio.to_thread(self.ix.repo.counts, space=self.ix.space)).files
        share = self.ix.settings.indexer.mass_removal_share
        emptied = self.scope is None and found == 0 and not self.unknown
        if not emptied and (removing <= share * total or removing < _MASS_REMOVAL_MIN):
            return
        where = "the library folder looks empty" if emptied else f"{removing} of {total} files"
        reason = (
            f"{removing} indexed files vanished at once ({where}): kept, in case a drive is "
            "unmounted; run `memesearch index --allow-mass-removal` or POST "
            "/api/reindex?allow_mass_removal=true if they are really gone"
        )
        log.warning("%s", reason)
        self.report.held_removals, self.report.held_reason = removing, reason
        resolution.removals = []

    async def _apply_reuse(self, resolution: Resolution) -> None:
        """Touches, renames, copies, removals and refusals: everything that needs no model."""
        ix, report = self.ix, self.report
        await asyncio.to_thread(ix.repo.touch, files=resolution.touched)
        report.touched = len(resolution.touched)
        if resolution.reuses or resolution.removals:
            delta = await asyncio.to_thread(
                ix.repo.apply_reuse,
                reuses=resolution.reuses,
                removals=resolution.removals,
                space=ix.space,
            )
            await ix.apply_to_index(delta)
        report.renamed = sum(reuse.move for reuse in resolution.reuses)
        report.copied = len(resolution.reuses) - report.renamed
        report.removed = len(resolution.removals)
        if resolution.failed:
            await self._store([], resolution.failed)

    async def _embed(self, files: list[FileInfo]) -> None:
        if not files:
            return
        runtime = self.ix.runtime
        # The weights load while the workers decode, with the preprocessing the config predicts.
        loading = asyncio.ensure_future(runtime.batcher())
        try:
            spec = runtime.info.preprocess or (await loading).embedder.preprocess
            if not await self._decode_and_embed(files, spec, loading):
                log.warning("%s preprocesses unlike its config says", runtime.info.spec)
                spec = (await loading).embedder.preprocess
                await self._decode_and_embed(files, spec, loading)
        finally:
            loading.cancel()  # a no-op unless this run failed while the model was loading

    async def _decode_and_embed(
        self, files: list[FileInfo], spec: PreprocessSpec, loading: asyncio.Future[MicroBatcher]
    ) -> bool:
        """Decode in the pool while decoded batches are embedded; False: the spec was wrong."""
        cfg = self.ix.settings.indexer
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=cfg.prefetch_batches)
        try:
            async with DecodePool(cfg.worker_count()) as pool, asyncio.TaskGroup() as group:
                group.create_task(self._produce(pool, files, spec, queue))
                group.create_task(self._consume(queue, spec, loading, len(files)))
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
        ix = self.ix
        batch_size = ix.settings.model.batch_size
        batch: _Batch = []

        def decode(info: FileInfo) -> asyncio.Future[PreparedImage | JobFailure]:
            job = pool.prepare(ix.path_of(info), spec, ix.limits, ix.thumbnails)
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
    ) -> None:
        # While the weights load, batches are taken off the queue so that the workers go on.
        height, width = spec.size
        limit = _HOLD_BYTES // (height * width * 3 * self.ix.settings.model.batch_size)
        held = await hold_until(loading, queue, limit=limit)
        if (await loading).embedder.preprocess != spec:
            raise _SpecMismatch  # nothing is stored yet: decode again with the model's own spec
        done = 0
        while (batch := held.popleft() if held else await queue.get()) is not None:
            self.report.decoded += len(batch)
            good, failed = self._sort(batch)
            await self._store(await self._embedded(good), failed)
            done += len(batch)
            self.notify(Progress(Phase.EMBED, done, total))

    def _sort(self, batch: _Batch) -> tuple[list[tuple[FileInfo, PreparedImage]], list[FailedFile]]:
        """Decoded files, and those that failed; a file still being written is deferred."""
        good: list[tuple[FileInfo, PreparedImage]] = []
        failed: list[FailedFile] = []
        fresh_after = time.time_ns() - int(self.ix.settings.indexer.settle_seconds * 1e9)
        for info, outcome in batch:
            if isinstance(outcome, PreparedImage):
                if outcome.thumbnail_error:
                    log.warning("no thumbnail for %s: %s", info.path, outcome.thumbnail_error)
                good.append((info, outcome))
            elif outcome.vanished:
                continue  # gone since the scan: the next scan settles it
            elif info.mtime_ns > fresh_after:
                self.report.deferred.append(info.path)  # a copy in progress: retried, not failed
            else:
                failed.append(FailedFile(info=info, reason=outcome.reason))
        return good, failed

    async def _embedded(self, good: list[tuple[FileInfo, PreparedImage]]) -> list[EmbeddedFile]:
        """Run the model over decoded files; count each as added or updated."""
        if not good:
            return []
        batcher = await self.ix.runtime.batcher()
        pixels = np.stack([prepared.pixels for _, prepared in good])
        vectors = await batcher.embed_images(pixels, priority=Priority.INDEX)
        self.report.embedded += len(good)
        added = sum(info.path in self.new_paths for info, _ in good)
        self.report.added += added
        self.report.updated += len(good) - added
        return [
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

    async def _store(self, embedded: list[EmbeddedFile], failed: list[FailedFile]) -> None:
        ix = self.ix
        delta = await asyncio.to_thread(
            ix.repo.write_batch, embedded=embedded, failed=failed, space=ix.space
        )
        self.report.failed.extend((item.info.path, item.reason) for item in failed)
        await ix.apply_to_index(delta)

    async def _drop_orphan_thumbnails(self, diff: ScanDiff, resolution: Resolution) -> None:
        """Delete thumbnails of content no file has any more (deleted or edited files)."""
        spec, stored = self.ix.thumbnails, self.stored
        if spec is None:
            return
        left = {diff.missing[i].content_hash for i in resolution.removals}
        left |= {stored[info.path].content_hash for info in diff.to_hash if info.path in stored}
        candidates = {h for h in left if h}
        if not candidates:
            return
        in_use = await asyncio.to_thread(self.ix.repo.hashes_in_use, hashes=candidates)
        for content_hash in candidates - in_use:
            await asyncio.to_thread(spec.path_for(content_hash).unlink, missing_ok=True)
