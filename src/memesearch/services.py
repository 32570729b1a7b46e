"""Wire settings into running parts: store, model runtime, index, indexer, search."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from memesearch.config import Settings
from memesearch.db.migrate import upgrade_schema
from memesearch.db.repo import Repository
from memesearch.db.session import create_store_engine
from memesearch.embed.batcher import BatchObserver
from memesearch.embed.model import ModelInfo, describe_model
from memesearch.embed.runtime import ModelRuntime
from memesearch.images.decode import DecodeLimits
from memesearch.images.thumbnails import ThumbnailSpec
from memesearch.index import VectorIndex
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
        return DecodeLimits(
            max_file_bytes=int(lib.max_file_mb * 1024 * 1024),
            max_pixels=int(lib.max_image_megapixels * 1_000_000),
        )

    @property
    def own_paths(self) -> tuple[Path, ...]:
        """What memesearch writes (thumbnails, uploads, SQLite files): never indexed or watched."""
        return _own_paths(self.settings)

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

    async def indexer(self) -> Indexer:
        """An indexer that also keeps the in-memory index (if built) current."""
        return Indexer(
            self.settings,
            self.repo,
            self.runtime,
            limits=self.limits,
            thumbnails=self.thumbnails,
            index=self.keeper.index,
            exclude=self.own_paths,
        )

    async def search_service(self) -> SearchService:
        """Search over the in-memory index."""
        encoder = QueryEncoder(self.runtime, self.repo, limits=self.limits)
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
                path=index_path(settings),
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


def index_path(settings: Settings) -> Path:
    """Where the index is saved: `[index] file`, else beside the SQLite file (or thumbnails)."""
    if settings.index.file is not None:
        return settings.index.file
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).with_suffix(".faiss")
    return settings.thumbnails.folder.parent / "index.faiss"


def _own_paths(settings: Settings) -> tuple[Path, ...]:
    """Our own files, never to be indexed even when kept inside the library folder."""
    paths = [
        settings.thumbnails.folder,
        settings.thumbnails.folder.parent / "uploads",
        index_path(settings),  # and its temporary siblings while it is saved
    ]
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        paths.append(Path(url.database))  # the file (and its -wal/-shm), never its folder
    return tuple(paths)
