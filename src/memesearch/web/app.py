"""create_app(settings): the one process that holds the model, the index and the web app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator

from memesearch.config import AuthSettings, Settings
from memesearch.ingest.live import LiveIndexer
from memesearch.ingest.pipeline import IndexReport
from memesearch.resources import data_path
from memesearch.services import open_services
from memesearch.web import api, auth, media, pages
from memesearch.web.access import Access, PublicMount, declare, rules
from memesearch.web.errors import install_error_handlers
from memesearch.web.limits import BodyLimitMiddleware
from memesearch.web.metrics import Metrics
from memesearch.web.state import AppState
from memesearch.web.uploads import UploadCache

log = logging.getLogger(__name__)
READY_STALL_SECONDS = 30.0  # a request waiting this long for the model means it is stuck


def create_app(settings: Settings, *, start_indexer: bool = True) -> FastAPI:
    """Build the app; model, store, index and indexer start in its lifespan."""
    metrics = Metrics()
    templates = Jinja2Templates(directory=data_path("templates"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_services(settings, observer=metrics.observe_batch) as services:
            batcher = await services.runtime.batcher()  # load the model before answering
            index = await services.index()
            await services.keeper.maintain()  # e.g. train an approximate index in the background

            async def refresh_counts(report: IndexReport | None = None) -> None:
                """Counters from a pass, and the store's totals: scrapers see them current."""
                if report is not None:
                    metrics.observe_report(report)
                counts = await asyncio.to_thread(services.repo.counts, space=services.space)
                metrics.set_counts(indexed=counts.indexed, failed=counts.failed)

            await refresh_counts()
            live = LiveIndexer(
                settings,
                services.indexer(),
                maintain=services.keeper.maintain,
                after_pass=refresh_counts,
            )
            metrics.bind(
                index_size=lambda: len(index),
                queue_depth=lambda: batcher.pending,
                indexing=lambda: live.status.indexing,
            )
            state = AppState(
                settings=settings,
                services=services,
                search=await services.search_service(),
                live=live,
                metrics=metrics,
                device=batcher.embedder.device,
                uploads=UploadCache(
                    settings.uploads_dir, max_bytes=settings.server.upload_cache_bytes
                ),
                templates=templates,
            )
            if start_indexer:
                live.start()
            log.info("memesearch ready: %d images indexed", len(index))
            try:
                yield {"app": state}
            finally:
                await live.stop()

    app = FastAPI(
        title="memesearch",
        version="0.1.0",
        lifespan=lifespan,
        description="Semantic search over a folder of memes.",
    )
    install_error_handlers(app)
    _document_access(app, settings.server.auth)
    gate = auth.Gate(settings.server.auth)
    app.state.gate = gate  # the login route signs sessions with it
    app.add_middleware(auth.AuthMiddleware, gate=gate)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    Instrumentator(
        registry=metrics.registry, excluded_handlers=["/metrics", "/healthz"]
    ).instrument(app)
    public_metrics = settings.server.auth.public_metrics

    @app.get(
        "/metrics",
        include_in_schema=False,
        **declare(Access.PUBLIC if public_metrics else Access.PRIVATE),
    )
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api.router)
    app.include_router(media.router)
    app.include_router(auth.router)
    app.include_router(pages.router)
    static = StaticFiles(directory=data_path("static"))
    app.router.routes.append(PublicMount("/static", app=static, name="static"))

    @app.get("/healthz", include_in_schema=False, **declare(Access.PUBLIC))
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False, **declare(Access.PUBLIC))
    async def readyz(request: Request) -> JSONResponse:
        """503 while the model does not keep up (a health check can act on it); /healthz only
        says the process answers."""
        state: AppState = request.state.app
        batcher = await state.services.runtime.batcher()
        ready, detail = readiness(batcher.stalled_for(), batcher.pending)
        body = {"status": "ready" if ready else "stalled", "detail": detail}
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


def readiness(stalled_for: float, waiting: int) -> tuple[bool, str]:
    """Whether the model answers in time, and in words."""
    if stalled_for < READY_STALL_SECONDS:
        return True, f"the model answers ({waiting} items waiting)"
    return False, f"no answer from the model for {stalled_for:.0f} s ({waiting} items waiting)"


def _document_access(app: FastAPI, settings: AuthSettings) -> None:
    """Publish in /openapi.json what the gate asks, so clients and /docs send credentials."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # built once, on the first request for it
            table = [rule for _, rule in rules(app.router.routes)]
            app.openapi_schema = auth.document_access(generate(), table, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it
