"""SearchService: query terms → query vector → FAISS → hydrated, paged results."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memesearch.db.repo import Repository
from memesearch.errors import QueryError
from memesearch.index import VectorIndex
from memesearch.query import QueryEncoder, Term

MAX_K = 500
MAX_WINDOW = 100_000  # offset + k: deep paging past this is a crawl, not a search


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result: a file and how well it matches (cosine similarity with the query)."""

    id: int
    path: str
    score: float
    width: int | None
    height: int | None
    format: str | None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """A page of results; `next_offset` is None on the last page."""

    hits: list[SearchHit]
    offset: int
    next_offset: int | None
    total_indexed: int


class SearchService:
    """Answers queries against the live index; safe to call concurrently."""

    def __init__(self, index: VectorIndex, repo: Repository, encoder: QueryEncoder) -> None:
        self._index = index
        self._repo = repo
        self._encoder = encoder

    async def search(self, terms: Sequence[Term], *, k: int = 50, offset: int = 0) -> SearchPage:
        """The `k` best matches after skipping `offset`, best first."""
        _check_paging(k, offset)
        vector = await self._encoder.encode(terms)
        return await self.search_vector(vector, k=k, offset=offset)

    async def search_vector(self, vector: np.ndarray, *, k: int, offset: int) -> SearchPage:
        """Page through the matches of an already encoded query vector."""
        _check_paging(k, offset)
        scores, ids = await asyncio.to_thread(self._index.search, vector, offset + k + 1)
        ranked = [
            (int(file_id), float(score))
            for file_id, score in zip(ids[0], scores[0], strict=True)
            if file_id >= 0
        ]
        window = ranked[offset : offset + k]
        rows = await asyncio.to_thread(self._repo.hydrate, ids=[fid for fid, _ in window])
        hits = [
            SearchHit(
                id=fid,
                path=rows[fid].path,
                score=score,
                width=rows[fid].width,
                height=rows[fid].height,
                format=rows[fid].format,
            )
            for fid, score in window
            if fid in rows  # deleted between search and hydrate
        ]
        has_more = len(ranked) > offset + k
        return SearchPage(
            hits=hits,
            offset=offset,
            next_offset=offset + k if has_more else None,
            total_indexed=len(self._index),
        )


def _check_paging(k: int, offset: int) -> None:
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
    if offset < 0:
        raise QueryError(f"offset must not be negative, got {offset}")
    if offset + k > MAX_WINDOW:
        raise QueryError(f"offset + k must not exceed {MAX_WINDOW}")
