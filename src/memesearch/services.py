"""Wire settings into running parts: store, model runtime, index, indexer, search."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine

from memesearch.config import Settings
from memesearch.db.migrate import upgrade_schema
from memesearch.db.repo import Repository
from memesearch.db.session import create_store_engine
from memesearch.embed.batcher import BatchObserver
from memesearch.embed.model import ModelInfo, describe_model
from memesearch.embed.runtime import ModelRuntime
from memesearch.images.decode import DecodeLimits
from memesearch.images.thumbnails import ThumbnailSpec
from memesearch.index import VectorIndex, configure_faiss
from memesearch.index.keeper import IndexKeeper
from memesearch.ingest.pipeline import Indexer
from memesearch.records import VectorSpace
from memesearch.search.query import QueryEncoder
from memesearch.search.service import SearchService


@dataclass(slots=True)
class Services:
    """Everything a command or the web app needs, built once from one Settings."""

    settings: Settings
    engine: Engine
    repo: Repository
    model: ModelInfo
    runtime: ModelRuntime
    space: VectorSpace
    keeper: IndexKeeper = field(repr=False)

    @property
    def limits(self) -> DecodeLimits:
        """Size guards for decoding, from [library]."""
        lib = self.settings.library
        return DecodeLimits(max_file_bytes=lib.max_file_bytes, max_pixels=lib.max_pixels)

    @property
    def thumbnails(self) -> ThumbnailSpec:
        """Where and how thumbnails are made, from [thumbnails]."""
        cfg = self.settings.thumbnails
        return ThumbnailSpec(
            folder=cfg.folder, width=cfg.width, format=cfg.format.upper(), quality=cfg.quality
        )

    async def index(self) -> VectorIndex:
        """The in-memory index: loaded from its saved file when fresh, else built from the store."""
        return await self.keeper.open()

    def indexer(self) -> Indexer:
        """An indexer that also keeps the in-memory index (if opened by now) current."""
        return Indexer(
            self.settings,
            self.repo,
            self.runtime,
            limits=self.limits,
            thumbnails=self.thumbnails,
            index=self.keeper.index,
        )

    async def search_service(self) -> SearchService:
        """Search over the in-memory index."""
        server = self.settings.server
        # A query image is decoded while people wait: a lower pixel cap than the library's, and
        # a few decodes at a time, so one client's huge images cannot starve the others.
        limits = DecodeLimits(
            max_file_bytes=self.limits.max_file_bytes,
            max_pixels=min(self.limits.max_pixels, server.max_query_pixels),
        )
        encoder = QueryEncoder(self.runtime, self.repo, limits=limits, decodes=server.query_decodes)
        return SearchService(
            await self.index(),
            self.repo,
            encoder,
            space=self.space,
            batch_wait_ms=self.settings.server.search_batch_wait_ms,
        )


@asynccontextmanager
async def open_services(
    settings: Settings, *, observer: BatchObserver | None = None
) -> AsyncIterator[Services]:
    """Open the store (upgrading its schema) and describe the model; close all on exit."""
    configure_faiss()
    engine = create_store_engine(settings.database.url)
    try:
        await asyncio.to_thread(upgrade_schema, engine)
        info = await asyncio.to_thread(describe_model, settings.model)
        async with ModelRuntime(settings.model, info, observer=observer) as runtime:
            repo, space = Repository(engine), VectorSpace(info.model_id, info.dim)
            keeper = IndexKeeper(
                settings.index,
                repo,
                space,
                path=settings.index_file,
                use_gpu=settings.index.gpu == "auto",
            )
            try:
                yield Services(
                    settings=settings,
                    engine=engine,
                    repo=repo,
                    model=info,
                    runtime=runtime,
                    space=space,
                    keeper=keeper,
                )
            finally:
                await keeper.close()
    finally:
        engine.dispose()
