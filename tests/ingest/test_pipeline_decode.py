"""The decode pipeline: one read per file on a first index; decoding overlaps the model load."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memesearch.ingest.pipeline
import memesearch.services
from memesearch.config import ModelSettings, Settings, load_settings
from memesearch.db.vectors import decode_vector
from memesearch.embed.model import Embedder, ModelInfo, describe_model, load_embedder
from memesearch.embed.runtime import ModelRuntime
from memesearch.errors import ModelLoadError
from memesearch.images.decode import PreprocessSpec
from memesearch.ingest.pipeline import Indexer, IndexReport
from memesearch.ingest.pool import JobFailure, hash_job
from memesearch.records import FileState
from memesearch.services import open_services
from memesearch.testing import write_config
from tests.corpus import make_corpus, write_image
from tests.support import index_once, stored_rows


@pytest.fixture
def small_corpus(library: Path) -> list[str]:
    return make_corpus(library, n_good=24).good


async def index_with_loader(settings: Settings, loader: object) -> IndexReport:
    """One indexing run whose model comes from `loader` instead of the real one."""
    async with open_services(settings) as services:
        runtime = ModelRuntime(settings.model, services.model, loader=loader)  # type: ignore[arg-type]
        indexer = Indexer(
            settings,
            services.repo,
            runtime,
            limits=services.limits,
            thumbnails=services.thumbnails,
        )
        try:
            return await indexer.run()
        finally:
            await runtime.aclose()


async def test_a_first_index_reads_each_file_once_later_ones_hash_first(
    settings: Settings, library: Path, small_corpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []

    def counting_hash_job(path: str) -> str | JobFailure:
        hashed.append(path)
        return hash_job(path)

    monkeypatch.setattr(memesearch.ingest.pipeline, "hash_job", counting_hash_job)
    first = await index_once(settings)
    assert hashed == []  # an empty store has nothing to reuse: the workers hash as they decode
    assert first.report.embedded == len(small_corpus)
    write_image(library / "new one.png", seed=12_345)
    second = await index_once(settings)
    assert hashed == [str(library / "new one.png")]  # a copy of known content would be reused
    assert second.report.added == 1


async def test_images_are_decoded_while_the_model_loads(
    settings: Settings, small_corpus: list[str]
) -> None:
    thumbnails = settings.thumbnails.folder
    decoded_first: list[bool] = []

    def slow_loader(model: ModelSettings, info: ModelInfo) -> Embedder:
        # The decode workers write thumbnails: one on disk before the model exists proves it.
        deadline = time.monotonic() + 60
        while not any(thumbnails.rglob("*.webp")) and time.monotonic() < deadline:
            time.sleep(0.02)
        decoded_first.append(any(thumbnails.rglob("*.webp")))
        return load_embedder(model, info)

    report = await index_with_loader(settings, slow_loader)
    assert decoded_first == [True]
    assert report.embedded == len(small_corpus)


async def test_decoding_runs_past_the_prefetch_bound_while_the_model_loads(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    for i in range(20):  # BMP always gets a thumbnail: one on disk per file decoded
        write_image(library / f"m{i:02d}.bmp", seed=i, fmt="BMP")
    config: dict[str, dict[str, Any]] = {
        "library": {"path": str(library)},
        "database": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        "model": {"name": f"local-dir:{tiny_model_dir}", "batch_size": 2},
        "indexer": {"workers": 2, "prefetch_batches": 1, "settle_seconds": 0},
    }
    settings = load_settings(write_config(tmp_path / "config.toml", config))
    thumbnails = settings.thumbnails.folder
    decoded_before_load: list[int] = []

    def slow_loader(model: ModelSettings, info: ModelInfo) -> Embedder:
        deadline = time.monotonic() + 60
        while len(list(thumbnails.rglob("*.webp"))) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        decoded_before_load.append(len(list(thumbnails.rglob("*.webp"))))
        return load_embedder(model, info)

    report = await index_with_loader(settings, slow_loader)
    assert decoded_before_load == [20]  # not stalled at the 1-batch bound plus what is in flight
    assert report.embedded == 20


async def test_a_model_that_fails_to_load_says_so_plainly(
    settings: Settings, small_corpus: list[str]
) -> None:
    def broken_loader(model: ModelSettings, info: ModelInfo) -> Embedder:
        raise ModelLoadError("cannot load model: the weights are truncated")

    with pytest.raises(ModelLoadError, match="truncated"):
        await index_with_loader(settings, broken_loader)


async def test_a_wrong_prediction_costs_a_second_decode_never_wrong_vectors(
    settings: Settings,
    small_corpus: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await index_once(settings)
    expected = await vectors_by_path(settings)
    database = Path(settings.database.url.removeprefix("sqlite:///"))
    for stale in database.parent.glob(database.name + "*"):
        stale.unlink()

    def mispredicted(model: ModelSettings) -> ModelInfo:
        wrong = PreprocessSpec(size=(32, 32), resize_mode="shortest")
        return dataclasses.replace(describe_model(model), preprocess=wrong)

    monkeypatch.setattr(memesearch.services, "describe_model", mispredicted)
    with caplog.at_level(logging.WARNING, logger="memesearch.ingest.pipeline"):
        second = await index_once(settings)
    assert "unlike its config says" in caplog.text
    assert second.report.embedded == first.report.embedded == len(small_corpus)
    assert second.report.decoded == first.report.decoded  # counted once, not per attempt
    got = await vectors_by_path(settings)
    assert got.keys() == expected.keys()
    for path, vector in expected.items():
        np.testing.assert_allclose(got[path], vector, atol=1e-5)


async def vectors_by_path(settings: Settings) -> dict[str, np.ndarray]:
    files, vectors = await stored_rows(settings)
    by_id = {v.file_id: decode_vector(v.vector, v.dim, v.dtype) for v in vectors}
    return {path: by_id[row.id] for path, row in files.items() if row.state is FileState.OK}
