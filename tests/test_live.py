"""The server's background indexer: watcher, timer and requests keep the index current."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from memesearch.config import load_settings
from memesearch.live import LiveIndexer
from memesearch.query import Term
from memesearch.search import SearchService
from memesearch.services import open_services
from tests.conftest import write_config
from tests.corpus import write_image


def live_config(tmp_path: Path, library: Path, model: Path, **indexer: object) -> Path:
    return write_config(
        tmp_path / "live.toml",
        {
            "library": {"path": str(library)},
            "database": {"url": f"sqlite:///{tmp_path / 'live.db'}"},
            "thumbnails": {"folder": str(library / ".cache" / "thumbs")},
            "model": {"name": f"local-dir:{model}"},
            "indexer": {"workers": 1, "settle_seconds": 0, "debounce_ms": 100, **indexer},
        },
    )


async def top_path(search: SearchService, image: Path) -> str | None:
    page = await search.search([Term.image(image.read_bytes())], k=1)
    return page.hits[0].path if page.hits else None


async def eventually(check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Poll `check` until true; the bound is generous, the test asserts that it happens at all."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "it never happened"
        await asyncio.sleep(0.1)


async def test_watcher_picks_up_new_and_deleted_files(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    write_image(library / "old.png", seed=1)
    settings = load_settings(live_config(tmp_path, library, tiny_model_dir, rescan_minutes=0))
    async with open_services(settings) as services:
        await services.index()
        search = await services.search_service()
        live = LiveIndexer(services)
        live.start()
        try:
            await live.wait_idle()
            fresh = write_image(library / "sub" / "fresh meme.png", seed=2)

            async def fresh_found() -> bool:
                return await top_path(search, fresh) == "sub/fresh meme.png"

            await eventually(fresh_found)
            copy = tmp_path / "kept.png"
            copy.write_bytes(fresh.read_bytes())
            fresh.unlink()

            async def fresh_gone() -> bool:
                return await top_path(search, copy) != "sub/fresh meme.png"

            await eventually(fresh_gone)
            assert live.status.runs >= 3 and live.status.last_error is None
        finally:
            await live.stop()


async def test_periodic_rescan_without_a_watcher(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    settings = load_settings(
        live_config(tmp_path, library, tiny_model_dir, watch=False, rescan_minutes=0.005)
    )
    async with open_services(settings) as services:
        await services.index()
        search = await services.search_service()
        live = LiveIndexer(services)
        live.start()
        try:
            await live.wait_idle()
            image = write_image(library / "later.png", seed=3)

            async def found() -> bool:
                return await top_path(search, image) == "later.png"

            await eventually(found)
        finally:
            await live.stop()


async def test_our_own_cache_folder_inside_the_library_is_ignored(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    write_image(library / "big.jpg", seed=4, size=(1600, 1200))
    settings = load_settings(live_config(tmp_path, library, tiny_model_dir, rescan_minutes=0))
    async with open_services(settings) as services:
        await services.index()
        live = LiveIndexer(services)
        live.start()
        try:
            await live.wait_idle()
            await asyncio.sleep(1.0)  # time for any watcher echo of our own thumbnail write
            await live.wait_idle()
            counts = services.repo.counts(space=services.space)
            assert counts.files == 1  # the thumbnail under .cache/ was not indexed
            assert any((library / ".cache" / "thumbs").rglob("*.webp"))
        finally:
            await live.stop()


@pytest.mark.parametrize("reason", ["library missing"])
async def test_a_failing_pass_is_reported_and_the_loop_survives(
    tmp_path: Path, tiny_model_dir: Path, reason: str
) -> None:
    library = tmp_path / "not yet"
    settings = load_settings(live_config(tmp_path, library, tiny_model_dir, rescan_minutes=0))
    async with open_services(settings) as services:
        await services.index()
        live = LiveIndexer(services)
        live.start()
        try:
            status = await live.wait_idle()
            assert status.last_error is not None and "cannot be read" in status.last_error
            library.mkdir()
            write_image(library / "a.png", seed=5)
            live.request_rescan()
            status = await live.wait_idle()
            assert status.last_error is None
            assert services.repo.counts(space=services.space).indexed == 1
        finally:
            await live.stop()
