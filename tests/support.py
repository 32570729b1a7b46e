"""Helpers shared by test modules: run the real indexer, read and fill the real store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from memesearch.config import Settings
from memesearch.db.models import ImageFile, Vector
from memesearch.db.repo import Repository
from memesearch.embed.model import EmbedStats
from memesearch.ingest.live import IndexingStatus, LiveIndexer
from memesearch.ingest.pipeline import IndexReport
from memesearch.records import EmbeddedFile, FileInfo, IndexDelta, VectorSpace
from memesearch.services import open_services


@dataclass
class IndexRun:
    """A report plus what the model did (None: the model was never even loaded)."""

    report: IndexReport
    model_stats: EmbedStats | None


async def index_once(settings: Settings, paths: Iterable[str] | None = None) -> IndexRun:
    """One indexing run, as `memesearch index` does it; with `paths`, as the watcher does."""
    async with open_services(settings) as services:
        report = await services.indexer().run(paths=paths)
        embedder = services.runtime.embedder
        return IndexRun(report, None if embedder is None else embedder.stats)


async def wait_idle(live: LiveIndexer) -> IndexingStatus:
    """Wait until the background indexer has no pass running or asked for."""
    while not live.idle:
        await asyncio.sleep(0.02)
    return live.status


async def stored_rows(settings: Settings) -> tuple[dict[str, ImageFile], list[Vector]]:
    """Every file row by path and every vector row, straight from the database."""
    async with open_services(settings) as services:
        with services.repo._sessions() as session:
            files = {row.path: row for row in session.scalars(select(ImageFile))}
            vectors = list(session.scalars(select(Vector)))
    return files, vectors


def store_vectors(
    repo: Repository,
    space: VectorSpace,
    vectors: np.ndarray,
    *,
    first: int = 0,
    library: Path | None = None,
) -> list[IndexDelta]:
    """Store `vectors` as files `synthetic/<n>.png` (n from `first`), a write per 1000.

    With `library`, each gets a real (tiny, not decodable) file there, stored with its size and
    mtime, so scans take it as unchanged and leave its synthetic vector alone.
    """
    deltas: list[IndexDelta] = []
    for start in range(0, len(vectors), 1000):
        batch = []
        for n, vector in enumerate(vectors[start : start + 1000], start=first + start):
            path, mtime_ns = f"synthetic/{n:06d}.png", 1
            if library is not None:
                (library / path).parent.mkdir(parents=True, exist_ok=True)
                (library / path).write_bytes(b"x")
                mtime_ns = (library / path).stat().st_mtime_ns
            batch.append(
                EmbeddedFile(FileInfo(path, 1, mtime_ns), f"hash-{n}", 8, 8, "PNG", vector)
            )
        deltas.append(repo.write_batch(embedded=batch, failed=[], space=space))
    return deltas
