"""Helpers shared by test modules: run the real indexer, read the real store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from memesearch.config import Settings
from memesearch.db.models import ImageFile, Vector
from memesearch.embed.model import EmbedStats
from memesearch.indexer import IndexReport
from memesearch.services import open_services


@dataclass
class IndexRun:
    """A report plus what the model did (None: the model was never even loaded)."""

    report: IndexReport
    model_stats: EmbedStats | None


async def index_once(settings: Settings) -> IndexRun:
    """One full indexing run, as `memesearch index` does it."""
    async with open_services(settings) as services:
        report = await (await services.indexer()).run()
        embedder = services.runtime.embedder
        return IndexRun(report, None if embedder is None else embedder.stats)


async def stored_rows(settings: Settings) -> tuple[dict[str, ImageFile], list[Vector]]:
    """Every file row by path and every vector row, straight from the database."""
    async with open_services(settings) as services:
        with services.repo._sessions() as session:
            files = {row.path: row for row in session.scalars(select(ImageFile))}
            vectors = list(session.scalars(select(Vector)))
    return files, vectors
