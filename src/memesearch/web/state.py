"""AppState: what the lifespan builds and handlers receive (no module-level singletons)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from memesearch.config import Settings
from memesearch.live import LiveIndexer
from memesearch.metrics import Metrics
from memesearch.search import SearchService
from memesearch.services import Services
from memesearch.uploads import UploadCache


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


def get_state(request: Request) -> AppState:
    """The running app's state (FastAPI dependency)."""
    state: AppState = request.state.app
    return state


StateDep = Annotated[AppState, Depends(get_state)]
