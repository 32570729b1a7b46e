"""A running app over a real library: TestClient drives the real lifespan."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from memesearch.config import Settings, load_settings
from memesearch.testing import write_config
from memesearch.web.app import create_app
from memesearch.web.state import AppState
from tests.corpus import Corpus, make_corpus
from tests.support import wait_idle


@dataclass
class Served:
    """The client, the app's state and the corpus behind it."""

    client: TestClient
    state: AppState
    corpus: Corpus
    settings: Settings

    def wait_idle(self) -> None:
        """Block until background indexing has settled."""
        self.client.portal.call(wait_idle, self.state.live)  # type: ignore[union-attr]


def app_settings(
    root: Path, library: Path, model_dir: Path, /, **sections: dict[str, object]
) -> Settings:
    """Settings for an app over `library`, its data under `root`; `sections` add or override."""
    config: dict[str, dict[str, object]] = {
        "library": {"path": str(library), "max_file_mb": 2},
        "database": {"url": f"sqlite:///{root / 'data' / 'db.sqlite'}"},
        "thumbnails": {"folder": str(root / "data" / "thumbs"), "width": 128},
        "model": {"name": f"local-dir:{model_dir}", "batch_size": 16},
        "indexer": {"workers": 2},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return load_settings(write_config(root / "config.toml", config))


def served_app(root: Path, model_dir: Path, *, n_good: int, **server: object) -> Iterator[Served]:
    corpus = make_corpus(root / "memes", n_good=n_good)
    settings = app_settings(root, corpus.root, model_dir, server={"max_body_mb": 1, **server})
    with TestClient(create_app(settings)) as client:
        served = Served(client, client.app_state["app"], corpus, settings)
        served.wait_idle()
        yield served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    yield from served_app(tmp_path_factory.mktemp("served"), tiny_model_dir, n_good=40)
