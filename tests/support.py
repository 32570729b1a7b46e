"""Helpers shared by test modules: run the real indexer, read and fill the real store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy import select

from memesearch.config import Settings
from memesearch.db.models import ImageFile, Vector
from memesearch.db.repo import Repository
from memesearch.embed.batcher import Kind, Priority
from memesearch.index import VectorIndex
from memesearch.ingest.live import IndexingStatus, LiveIndexer
from memesearch.ingest.pipeline import IndexReport
from memesearch.records import EmbeddedFile, FileInfo, IndexDelta, VectorSpace
from memesearch.services import open_services


@dataclass
class IndexRun:
    """A report plus what the model did."""

    report: IndexReport
    images_embedded: int | None  # None: the model was never even loaded


async def index_once(settings: Settings, paths: Iterable[str] | None = None) -> IndexRun:
    """One indexing run, as `memesearch index` does it; with `paths`, as the watcher does."""
    images = 0

    def count(kind: Kind, _priority: Priority, size: int, _seconds: float) -> None:
        nonlocal images
        images += size if kind is Kind.IMAGE else 0

    async with open_services(settings, observer=count) as services:
        report = await services.indexer().run(paths=paths)
        loaded = services.runtime.embedder is not None
        return IndexRun(report, images if loaded else None)


def index_ids(index: VectorIndex) -> np.ndarray:
    """Every id in the index, read from a serialised copy (the index offers no listing)."""
    writer = faiss.VectorIOWriter()
    index.write(writer, lambda _state: None)
    # Already of its concrete type; a downcast of a temporary would free what it points into.
    copy: Any = faiss.deserialize_index(faiss.vector_to_array(writer.data))
    if isinstance(copy, faiss.IndexIVF):
        lists = copy.invlists
        assert lists is not None  # a deserialised IVF index owns its inverted lists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(copy.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return faiss.vector_to_array(copy.id_map).astype(np.int64)


def remove_ids(index: VectorIndex, ids: Iterable[int]) -> int:
    """Remove ids as a store write does (as the next generation); how many were there."""
    before = len(index)
    following = 0 if index.generation is None else index.generation + 1
    index.apply(IndexDelta(removed=[int(i) for i in ids], added=[], generation=following))
    return before - len(index)


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
