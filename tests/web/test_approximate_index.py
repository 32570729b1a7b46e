"""The approximate (IVF) index through the running app: status, searches, deletions, restart."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from memesearch.config import Settings
from memesearch.db.migrate import upgrade_schema
from memesearch.db.repo import Repository
from memesearch.db.session import create_store_engine
from memesearch.embed.model import describe_model
from memesearch.records import VectorSpace
from memesearch.testing import clustered_vectors
from memesearch.web.app import create_app
from memesearch.web.state import AppState
from tests.corpus import Corpus, make_corpus
from tests.support import store_vectors, wait_idle
from tests.web.conftest import app_settings

SYNTHETIC = 1500  # enough for an inverted file; real images come on top


@pytest.fixture
def library(tmp_path: Path) -> Corpus:
    return make_corpus(tmp_path / "memes", n_good=12)


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path, library: Corpus) -> Settings:
    """An ivf-index config over a store already holding SYNTHETIC vectors of the tiny model."""
    settings = app_settings(
        tmp_path,
        library.root,
        tiny_model_dir,
        indexer={"watch": False, "settle_seconds": 0},
        index={"kind": "ivf"},
    )
    model = describe_model(settings.model)
    engine = create_store_engine(settings.database.url)
    upgrade_schema(engine)
    vectors = np.concatenate(list(clustered_vectors(SYNTHETIC, model.dim, clusters=60)))
    space = VectorSpace(model.model_id, model.dim)
    store_vectors(Repository(engine), space, vectors, library=library.root)
    engine.dispose()
    return settings


def settle(client: TestClient) -> AppState:
    """Wait for the background indexing pass and index rebuild; the app's state."""
    state: AppState = client.app_state["app"]
    client.portal.call(wait_idle, state.live)  # type: ignore[union-attr]
    client.portal.call(state.services.keeper.wait_rebuilt)  # type: ignore[union-attr]
    return state


def search(client: TestClient, term: dict[str, Any], k: int = 10) -> list[dict[str, Any]]:
    response = client.post("/api/search", json={"terms": [term], "k": k})
    assert response.status_code == 200, response.text
    return response.json()["results"]  # type: ignore[no-any-return]


def test_an_ivf_index_serves_the_app_and_is_loaded_again_after_a_restart(
    settings: Settings, library: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memesearch.index")
    with TestClient(create_app(settings)) as client:
        state = settle(client)
        status = client.get("/api/status").json()
        index = status["index"]
        assert index["kind"] == "ivf" and index["rebuilding"] is None
        assert index["lists"] > 0 and 0 < index["nprobe"] <= index["lists"]
        assert index["vectors"] == status["indexed"] == SYNTHETIC + len(library.good)
        repo, space = state.services.repo, state.services.space
        ids = {path: row.id for path in library.good if (row := repo.file_by_path(path=path))}
        assert len(ids) == len(library.good)
        for image_id in ids.values():
            assert search(client, {"image_id": image_id})[0]["id"] == image_id

        gone = library.good[3]
        vector = repo.get_vector(file_id=ids[gone], space=space)
        assert vector is not None
        (library.root / gone).unlink()
        assert client.post("/api/reindex").status_code == 202
        settle(client)
        hits = search(client, {"embedding": vector.tolist()}, k=100)
        assert ids[gone] not in [hit["id"] for hit in hits]
        deleted = client.post("/api/search", json={"terms": [{"image_id": ids[gone]}]})
        assert deleted.status_code == 404
        assert client.get("/api/status").json()["index"]["vectors"] == status["indexed"] - 1
        before = search(client, {"image_id": ids[library.good[0]]}, k=50)

    caplog.clear()
    with TestClient(create_app(settings)) as client:
        settle(client)
        index = client.get("/api/status").json()["index"]
        assert index["kind"] == "ivf" and index["saved"] is True
        assert "index loaded from" in caplog.text and "built from the store" not in caplog.text
        assert search(client, {"image_id": ids[library.good[0]]}, k=50) == before
