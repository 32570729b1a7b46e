"""AppState: what the lifespan builds and handlers receive (no module-level singletons)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from memesearch.config import Settings
from memesearch.ingest.live import LiveIndexer
from memesearch.search.service import SearchService
from memesearch.services import Services
from memesearch.web.metrics import Metrics
from memesearch.web.thumbnailer import ThumbnailBackfill
from memesearch.web.uploads import UploadCache


@dataclass(slots=True)
class AppState:
    """Everything request handlers need, reached through `request.state.app`."""

    settings: Settings
    services: Services
    search: SearchService
    live: LiveIndexer
    metrics: Metrics
    device: str
    uploads: UploadCache
    templates: Jinja2Templates  # built by create_app: pages and the login form render with it
    thumbnailer: ThumbnailBackfill = field(init=False)

    def __post_init__(self) -> None:
        """Makes missing thumbnails with half the decode workers: searches need the CPU too."""
        self.thumbnailer = ThumbnailBackfill(
            self.services.thumbnails,
            self.services.limits,
            max_decodes=max(1, self.settings.indexer.worker_count() // 2),
        )


def get_state(request: Request) -> AppState:
    """The running app's state (FastAPI dependency)."""
    state: AppState = request.state.app
    return state


StateDep = Annotated[AppState, Depends(get_state)]
