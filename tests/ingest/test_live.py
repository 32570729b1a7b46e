"""The server's background indexer: watcher, timer and requests keep the index current."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import OperationalError

from memesearch.config import Settings, load_settings
from memesearch.ingest.live import LiveIndexer, describe_failure
from memesearch.search.query import ImageTerm
from memesearch.search.service import SearchService
from memesearch.services import Services, open_services
from memesearch.testing import write_config
from tests.corpus import write_image
from tests.support import wait_idle


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


@dataclass
class Running:
    """Services with a started LiveIndexer and a search service over the live index."""

    services: Services
    live: LiveIndexer
    search: SearchService


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    """Open the store, build the index, start background indexing; stop it all on exit."""
    async with open_services(settings) as services:
        await services.index()
        live = LiveIndexer(settings, services.indexer(), maintain=services.keeper.maintain)
        live.start()
        try:
            yield Running(services, live, await services.search_service())
        finally:
            await live.stop()


async def top_path(search: SearchService, image: Path) -> str | None:
    page = await search.search([ImageTerm(image.read_bytes())], k=1)
    return page.hits[0].path if page.hits else None


async def searchable(search: SearchService, image: Path, path: str) -> None:
    """Wait until searching by `image`'s bytes finds it first, under `path`."""

    async def found() -> bool:
        return await top_path(search, image) == path

    await eventually(found)


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
    async with running(settings) as run:
        await wait_idle(run.live)
        fresh = write_image(library / "sub" / "fresh meme.png", seed=2)
        await searchable(run.search, fresh, "sub/fresh meme.png")
        copy = tmp_path / "kept.png"
        copy.write_bytes(fresh.read_bytes())
        fresh.unlink()

        async def fresh_gone() -> bool:
            return await top_path(run.search, copy) != "sub/fresh meme.png"

        await eventually(fresh_gone)
        assert run.live.status.runs >= 3 and run.live.status.last_error is None


async def test_periodic_rescan_without_a_watcher(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    settings = load_settings(
        live_config(tmp_path, library, tiny_model_dir, watch=False, rescan_minutes=0.005)
    )
    async with running(settings) as run:
        await wait_idle(run.live)
        image = write_image(library / "later.png", seed=3)
        await searchable(run.search, image, "later.png")


async def test_our_own_cache_folder_inside_the_library_is_ignored(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    write_image(library / "big.jpg", seed=4, size=(1600, 1200))
    settings = load_settings(live_config(tmp_path, library, tiny_model_dir, rescan_minutes=0))
    async with running(settings) as run:
        await wait_idle(run.live)
        await asyncio.sleep(1.0)  # time for any watcher echo of our own thumbnail write
        await wait_idle(run.live)
        counts = run.services.repo.counts(space=run.services.space)
        assert counts.files == 1  # the thumbnail under .cache/ was not indexed
        assert any((library / ".cache" / "thumbs").rglob("*.webp"))


async def test_a_failing_pass_is_reported_and_the_loop_survives(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    library = tmp_path / "not yet"
    settings = load_settings(live_config(tmp_path, library, tiny_model_dir, rescan_minutes=0))
    async with running(settings) as run:
        status = await wait_idle(run.live)
        assert status.last_error is not None and "cannot be read" in status.last_error
        library.mkdir()
        write_image(library / "a.png", seed=5)
        run.live.request_rescan()
        status = await wait_idle(run.live)
        assert status.last_error is None
        assert run.services.repo.counts(space=run.services.space).indexed == 1


async def test_a_copy_in_progress_is_looked_at_again_only_while_it_is_needed(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    config = live_config(
        tmp_path, library, tiny_model_dir, watch=False, rescan_minutes=0, settle_seconds=1
    )
    async with running(load_settings(config)) as run:
        await wait_idle(run.live)
        whole = write_image(tmp_path / "whole.jpg", seed=6, size=(320, 240)).read_bytes()

        async def copy_started(name: str) -> int:
            (library / name).write_bytes(whole[:2000])
            run.live.request_rescan()
            status = await wait_idle(run.live)
            assert status.last_report is not None and status.last_report.deferred == [name]
            return status.runs

        # A copy that stalls: no watcher, no request, yet it is looked at again once settled.
        runs = await copy_started("stalled.jpg")

        async def retried() -> bool:
            return run.live.status.runs > runs

        await eventually(retried)
        status = await wait_idle(run.live)
        assert status.last_report is not None
        assert [path for path, _ in status.last_report.failed] == ["stalled.jpg"]

        # A copy that finishes (and a pass sees it): no more retries, the library rests.
        await copy_started("copying.jpg")
        (library / "copying.jpg").write_bytes(whole)
        run.live.request_rescan()
        status = await wait_idle(run.live)
        assert await top_path(run.search, tmp_path / "whole.jpg") == "copying.jpg"
        await asyncio.sleep(2.5)  # past the retry the deferral had asked for
        assert run.live.status.runs == status.runs


async def test_the_watcher_looks_only_at_what_changed_folders_included(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    for i in range(6):
        write_image(library / "old" / f"{i}.png", seed=10 + i)
    outside = tmp_path / "outside"
    arriving = [write_image(outside / f"{i}.png", seed=20 + i).read_bytes() for i in range(3)]
    settings = load_settings(live_config(tmp_path, library, tiny_model_dir, rescan_minutes=0))
    async with running(settings) as run:
        status = await wait_idle(run.live)
        assert status.last_report is not None and status.last_report.scope is None  # start: all

        # A folder moved in, named like a file: every picture in it is found.
        os.rename(outside, library / "2024.memes")

        async def arrived() -> bool:
            pages = [await run.search.search([ImageTerm(data)], k=1) for data in arriving]
            paths = [page.hits[0].path if page.hits else None for page in pages]
            return paths == [f"2024.memes/{i}.png" for i in range(3)]

        await eventually(arrived)
        # Searchable as soon as a batch is stored; the pass reports once it has finished.
        report = (await wait_idle(run.live)).last_report
        assert report is not None and report.scope is not None
        assert report.scanned < 6  # the six old files were not looked at again

        # The folder moved out again: its pictures leave the index.
        os.rename(library / "2024.memes", tmp_path / "away")

        async def left() -> bool:
            counts = run.services.repo.counts(space=run.services.space)
            return counts.files == 6 and run.services.keeper.status().vectors == 6

        await eventually(left)
        assert run.live.status.last_error is None


async def test_a_failed_pass_is_tried_again_without_any_other_event(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    """No watcher, no timer: only the retry of the failed pass can find the meme."""
    config = live_config(tmp_path, library, tiny_model_dir, watch=False, rescan_minutes=0)
    settings = load_settings(config)
    library.rmdir()  # the drive is not mounted yet
    async with running(settings) as run:

        async def failed() -> bool:
            return run.live.status.last_error is not None

        await eventually(failed)
        status = run.live.status
        assert status.last_error is not None and "cannot be read" in status.last_error
        assert status.failing_since is not None and status.retry_at is not None
        assert status.retry_at > status.finished_at  # type: ignore[operator]
        image = write_image(library / "back.png", seed=3)  # mounted again
        await searchable(run.search, image, "back.png")
        status = await wait_idle(run.live)
        assert (status.last_error, status.failing_since, status.retry_at) == (None, None, None)


def test_failures_are_described_by_their_cause() -> None:
    disk_full = OSError(errno.ENOSPC, "No space left on device", "/data/thumbs/ab")
    grouped = ExceptionGroup("unhandled errors in a TaskGroup", [disk_full])
    assert describe_failure(grouped) == "disk full (/data/thumbs/ab): No space left on device"
    locked = OperationalError(
        "INSERT INTO files …", {}, sqlite3.OperationalError("database is locked")
    )
    assert describe_failure(ExceptionGroup("x", [ExceptionGroup("y", [locked])])) == (
        "database error: database is locked"
    )
    assert describe_failure(PermissionError(errno.EACCES, "Permission denied", "/m")) == (
        "Permission denied (/m)"
    )
    assert describe_failure(KeyError("x")) == "unexpected error: KeyError: 'x'"


async def test_a_mass_removal_waits_for_the_users_word(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    for n in range(21):
        write_image(library / f"m{n:02d}.png", seed=200 + n)
    config = live_config(tmp_path, library, tiny_model_dir, watch=False, rescan_minutes=0)
    async with running(load_settings(config)) as run:
        await wait_idle(run.live)
        for image in library.glob("m*.png"):
            image.unlink()  # as good as the empty mount point of an unmounted drive
        run.live.request_rescan()
        status = await wait_idle(run.live)
        assert status.last_report is not None and status.last_report.held_removals == 21
        assert run.services.keeper.status().vectors == 21  # still searchable meanwhile
        run.live.request_rescan(allow_mass_removal=True)  # POST /api/reindex?allow_mass_removal=…
        status = await wait_idle(run.live)
        assert status.last_report is not None and status.last_report.removed == 21
        assert run.services.keeper.status().vectors == 0


async def test_a_library_folder_deleted_and_made_anew_is_watched_again(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    """A restore (`rm -rf memes; mkdir memes; cp …`): new memes appear without a rescan timer."""
    write_image(library / "old.png", seed=1)
    settings = load_settings(live_config(tmp_path, library, tiny_model_dir, rescan_minutes=0))
    async with running(settings) as run:
        await wait_idle(run.live)
        shutil.rmtree(library)
        await asyncio.sleep(0.5)  # the watcher may notice the folder gone in between
        library.mkdir()
        restored = write_image(library / "restored.png", seed=2)
        await searchable(run.search, restored, "restored.png")
        later = write_image(library / "later.png", seed=3)  # and the new folder is watched
        await searchable(run.search, later, "later.png")


async def test_a_database_deleted_while_serving_is_not_written_into(
    tmp_path: Path, library: Path, tiny_model_dir: Path
) -> None:
    write_image(library / "a.png", seed=1)
    config = live_config(tmp_path, library, tiny_model_dir, watch=False, rescan_minutes=0)
    settings = load_settings(config)
    async with running(settings) as run:
        await wait_idle(run.live)
        database = settings.database.sqlite_file
        assert database is not None
        for path in database.parent.glob(database.name + "*"):
            path.unlink()  # the file, its -wal and -shm: a cleanup script gone wrong
        write_image(library / "b.png", seed=2)
        run.live.request_rescan()
        status = await wait_idle(run.live)
        assert status.last_error is not None and "was deleted or replaced" in status.last_error
        assert status.last_report is not None and status.last_report.added == 1  # the first pass
        assert status.retry_at is not None  # it says so again until someone restarts
