"""SearchService: query terms → query vector → FAISS → hydrated, paged results."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memesearch.db.repo import Repository
from memesearch.errors import QueryError
from memesearch.index import VectorIndex
from memesearch.records import VectorSpace
from memesearch.search.coalesce import Coalescer
from memesearch.search.query import QueryEncoder, Term

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
    content_hash: str | None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """A page of results; `next_offset` is None on the last page."""

    hits: list[SearchHit]
    offset: int
    next_offset: int | None
    total_indexed: int


class SearchService:
    """Answers queries against the live index; concurrent searches share one FAISS scan."""

    def __init__(
        self,
        index: VectorIndex,
        repo: Repository,
        encoder: QueryEncoder,
        *,
        space: VectorSpace,
        batch_wait_ms: float = 0.0,
        max_batch: int = 64,
    ) -> None:
        self._index = index
        self._repo = repo
        self._encoder = encoder
        self._space = space
        self._coalescer: Coalescer[_Probe, _Hits] = Coalescer(
            self._search_many, max_batch=max_batch, max_wait_ms=batch_wait_ms
        )

    @property
    def scans(self) -> int:
        """FAISS scans run for unfiltered searches so far (several queries may share one)."""
        return self._coalescer.batches

    async def search(
        self,
        terms: Sequence[Term],
        *,
        k: int = 50,
        offset: int = 0,
        path_prefix: str = "",
        max_k: int = MAX_K,
    ) -> SearchPage:
        """The `k` best matches after skipping `offset`, best first."""
        _check_paging(k, offset, max_k)
        vector = await self._encoder.encode(terms)
        return await self.search_vector(
            vector, k=k, offset=offset, path_prefix=path_prefix, max_k=max_k
        )

    async def search_vector(
        self,
        vector: np.ndarray,
        *,
        k: int,
        offset: int,
        path_prefix: str = "",
        max_k: int = MAX_K,
    ) -> SearchPage:
        """Page through the matches of an already encoded query vector."""
        _check_paging(k, offset, max_k)
        wanted = offset + k + 1  # one more than the page tells whether a next page exists
        if path_prefix:
            allowed = await asyncio.to_thread(
                self._repo.ids_with_prefix, prefix=path_prefix, space=self._space
            )
            scores, ids = await asyncio.to_thread(
                self._index.search, vector, wanted, allowed=allowed
            )
            scores, ids = scores[0], ids[0]
        else:
            scores, ids = await self._coalescer.submit((vector, wanted))
        ranked = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]
        return await self._page(ranked, k=k, offset=offset)

    async def _page(self, ranked: list[tuple[int, float]], *, k: int, offset: int) -> SearchPage:
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
                content_hash=rows[fid].content_hash,
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

    def _search_many(self, probes: list[_Probe]) -> list[_Hits]:
        matrix = np.stack([vector for vector, _ in probes])
        scores, ids = self._index.search(matrix, max(k for _, k in probes))
        return [(scores[row, :k], ids[row, :k]) for row, (_, k) in enumerate(probes)]


_Probe = tuple[np.ndarray, int]
_Hits = tuple[np.ndarray, np.ndarray]


def _check_paging(k: int, offset: int, max_k: int) -> None:
    if not 1 <= k <= max_k:
        raise QueryError(f"k must be between 1 and {max_k}, got {k}")
    if offset < 0:
        raise QueryError(f"offset must not be negative, got {offset}")
    if offset + k > MAX_WINDOW:
        raise QueryError(f"offset + k must not exceed {MAX_WINDOW}")
