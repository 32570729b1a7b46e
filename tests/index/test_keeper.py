"""IndexKeeper over a real SQLite store: open, load or rebuild, switch kinds, retrain, save."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memesearch.config import IndexSettings
from memesearch.db.migrate import upgrade_schema
from memesearch.db.repo import Repository
from memesearch.db.session import create_store_engine
from memesearch.index import IndexKind, VectorIndex
from memesearch.index.keeper import IndexKeeper
from memesearch.index.persist import read_stamp
from memesearch.records import VectorSpace
from memesearch.testing import clustered_vectors
from tests.index.test_persist import with_stamp
from tests.support import index_ids, store_vectors

SPACE = VectorSpace("synthetic-model", 32)
POOL = np.concatenate(list(clustered_vectors(4000, 32, clusters=100, seed=5)))  # 3000 stored
QUERIES = np.concatenate(list(clustered_vectors(20, 32, clusters=100, seed=5, draw_seed=2)))

MakeKeeper = Callable[..., IndexKeeper]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of POOL[:3000], written once (writes are slow) and copied for every test."""
    path = tmp_path_factory.mktemp("template") / "store.db"
    engine = create_store_engine(f"sqlite:///{path}")
    upgrade_schema(engine)
    store_vectors(Repository(engine), SPACE, POOL[:3000])
    engine.dispose()
    return path


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Iterator[Repository]:
    for part in template.parent.glob(f"{template.name}*"):
        shutil.copy(part, tmp_path / part.name)
    engine = create_store_engine(f"sqlite:///{tmp_path / template.name}")
    yield Repository(engine)
    engine.dispose()


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """Where the keepers of a test save the index."""
    return tmp_path / "store.faiss"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="memesearch.index")
    return caplog


@pytest.fixture
async def keeper(repo: Repository, saved: Path) -> AsyncIterator[MakeKeeper]:
    """Makes keepers over the test's store and file; closes them after the test."""
    made: list[IndexKeeper] = []

    def make(space: VectorSpace = SPACE, path: Path = saved, **index: Any) -> IndexKeeper:
        made.append(IndexKeeper(IndexSettings(**index), repo, space, path=path))
        return made[-1]

    yield make
    for each in made:
        await each.close()


def said(logs: pytest.LogCaptureFixture, fragment: str, level: int = logging.INFO) -> bool:
    return any(fragment in r.getMessage() and r.levelno >= level for r in logs.records)


def store_ids(repo: Repository) -> list[int]:
    return sorted(i for ids, _ in repo.iter_vectors(space=SPACE) for i in ids.tolist())


def first_hits(index: VectorIndex, vectors: np.ndarray) -> list[int]:
    """The best match of each vector: the file it was stored as, if the index holds it."""
    hits: list[int] = index.search(vectors, 1)[1][:, 0].tolist()
    return hits


def kind_now(index: VectorIndex) -> IndexKind:
    """`index.kind` read afresh: mypy keeps an earlier narrowing of it across awaits."""
    return index.kind


async def add(repo: Repository, index: VectorIndex | None, first: int, count: int) -> list[int]:
    """Store POOL[first : first + count] as new files, applying each write to `index` (if any)."""
    deltas = await asyncio.to_thread(
        store_vectors, repo, SPACE, POOL[first : first + count], first=first
    )
    if index is not None:
        for delta in deltas:
            await asyncio.to_thread(index.apply, delta)
    return [file_id for delta in deltas for file_id, _ in delta.added]


async def drop(repo: Repository, index: VectorIndex | None, ids: Sequence[int]) -> None:
    """Delete files from the store (as a rescan does for vanished ones), then from `index`."""
    delta = await asyncio.to_thread(
        lambda: repo.apply_reuse(reuses=[], removals=list(ids), space=SPACE)
    )
    if index is not None:
        await asyncio.to_thread(index.apply, delta)


async def trained(keeper: IndexKeeper) -> VectorIndex:
    """The keeper's index once open and upkept (e.g. switched to ivf)."""
    index = await keeper.open()
    await keeper.maintain()
    await keeper.wait_rebuilt()
    return index


def assert_matches_store(index: VectorIndex, repo: Repository) -> None:
    assert sorted(index_ids(index).tolist()) == store_ids(repo)
    assert index.generation == repo.generation()


async def test_open_builds_from_the_store_and_saves(
    keeper: MakeKeeper, repo: Repository, saved: Path, logs: pytest.LogCaptureFixture
) -> None:
    kept = keeper()
    index = await kept.open()
    assert index.kind is IndexKind.FLAT and len(index) == 3000
    assert_matches_store(index, repo)
    assert first_hits(index, POOL[:5]) == store_ids(repo)[:5]
    assert said(logs, "index built from the store")
    stamp = read_stamp(saved)
    assert stamp is not None and (stamp.model_id, stamp.dim) == (SPACE.model_id, SPACE.dim)
    assert (stamp.kind, stamp.count, stamp.generation) == ("flat", 3000, repo.generation())
    status = kept.status()
    assert (status.kind, status.vectors, status.lists, status.nprobe) == ("flat", 3000, 0, 0)
    assert status.saved_generation == status.generation == repo.generation()
    assert status.rebuilding is None and status.last_error is None


@pytest.mark.parametrize("kind", ["flat", "ivf"])
async def test_a_second_keeper_loads_the_saved_index(
    keeper: MakeKeeper, repo: Repository, logs: pytest.LogCaptureFixture, kind: str
) -> None:
    first = keeper(kind=kind)
    index = await trained(first)
    assert index.kind == kind
    await first.close()
    logs.clear()
    second = keeper(kind=kind)
    loaded = await second.open()
    assert said(logs, "index loaded from")
    assert not said(logs, "built from the store") and not said(logs, "rebuild")
    assert (loaded.kind, loaded.lists, loaded.nprobe) == (index.kind, index.lists, index.nprobe)
    assert second.status().saved_generation == loaded.generation == repo.generation()
    for found, expected in zip(loaded.search(QUERIES, 10), index.search(QUERIES, 10), strict=True):
        np.testing.assert_array_equal(found, expected)
    await second.maintain()
    assert second.status().rebuilding is None


async def test_a_stale_file_is_refilled_from_the_store_in_its_trained_cells(
    keeper: MakeKeeper, repo: Repository, saved: Path, logs: pytest.LogCaptureFixture
) -> None:
    index = await trained(keeper(kind="ivf"))
    assert index.kind is IndexKind.IVF and index.trained_for == 3000
    new = await add(repo, None, 3000, 50)  # another process wrote to the store meanwhile
    logs.clear()
    kept = keeper(kind="ivf")
    reopened = await kept.open()
    assert said(logs, "the saved index is stale") and said(logs, "index built from the store")
    assert reopened.kind is IndexKind.IVF and reopened.lists == index.lists
    assert reopened.trained_for == 3000  # the old cells, not retrained for 3050
    assert_matches_store(reopened, repo)
    assert first_hits(reopened, POOL[3000:3050]) == new
    stamp = read_stamp(saved)
    assert stamp is not None and (stamp.generation, stamp.count) == (repo.generation(), 3050)
    await kept.maintain()
    assert kept.status().rebuilding is None


DAMAGES = {
    "cut in half": lambda data: data[: len(data) // 2],
    "stamp of an unknown kind": with_stamp(kind="hnsw"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
async def test_a_damaged_file_is_rebuilt_with_a_warning(
    keeper: MakeKeeper,
    repo: Repository,
    saved: Path,
    logs: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    await keeper().open()
    saved.write_bytes(DAMAGES[damage](saved.read_bytes()))
    logs.clear()
    index = await keeper().open()
    assert said(logs, str(saved), logging.WARNING) and said(logs, "index built from the store")
    assert_matches_store(index, repo)
    stamp = read_stamp(saved)  # replaced by a sound file
    assert stamp is not None and (stamp.kind, stamp.generation) == ("flat", repo.generation())


async def test_a_file_of_another_model_is_ignored(
    keeper: MakeKeeper, saved: Path, logs: pytest.LogCaptureFixture
) -> None:
    await keeper().open()
    logs.clear()
    other = await keeper(VectorSpace("another-model", 32)).open()
    assert len(other) == 0 and not said(logs, "index loaded from")
    stamp = read_stamp(saved)
    assert stamp is not None and stamp.model_id == "another-model"


async def test_a_file_saved_for_a_deleted_database_is_not_loaded_for_its_successor(
    tmp_path: Path, saved: Path, logs: pytest.LogCaptureFixture
) -> None:
    # Two databases that went through the same number of writes have the same generation.
    def fresh_store(name: str, vectors: np.ndarray) -> Repository:
        engine = create_store_engine(f"sqlite:///{tmp_path / name}")
        upgrade_schema(engine)
        repo = Repository(engine)
        store_vectors(repo, SPACE, vectors)
        return repo

    old = fresh_store("old.db", POOL[:100])
    first = IndexKeeper(IndexSettings(), old, SPACE, path=saved)
    await first.open()
    await first.close()
    new = fresh_store("new.db", POOL[100:200])  # the user deleted the database and reindexed
    assert new.generation() == old.generation()
    logs.clear()
    second = IndexKeeper(IndexSettings(), new, SPACE, path=saved)
    index = await second.open()
    await second.close()
    assert said(logs, "built from another database") and not said(logs, "index loaded from")
    assert_matches_store(index, new)
    assert first_hits(index, POOL[100:105]) == store_ids(new)[:5]
    stamp = read_stamp(saved)
    assert stamp is not None and stamp.store_id == new.store_id() != old.store_id()


async def test_auto_serves_exact_results_then_switches_to_ivf_in_the_background(
    keeper: MakeKeeper, repo: Repository, saved: Path
) -> None:
    kept = keeper(kind="auto", approximate_from=1000)
    index = await kept.open()
    assert index.kind is IndexKind.FLAT and len(index) == 3000
    assert not saved.exists()  # what the switch makes is saved instead
    ids = store_ids(repo)
    await kept.maintain()
    assert "switching to a ivf index" in str(kept.status().rebuilding)
    added: list[int] = []
    while kept.status().rebuilding is not None and len(added) < 900:  # writes during the rebuild
        added += await add(repo, index, 3000 + len(added), 10)
        await drop(repo, index, ids[len(added) - 10 : len(added)])
        assert first_hits(index, POOL[2990:3000]) == ids[2990:]  # searches work throughout
    assert added
    await kept.wait_rebuilt()
    assert kind_now(index) is IndexKind.IVF and kept.status().rebuilding is None
    assert_matches_store(index, repo)
    assert first_hits(index, POOL[3000 : 3000 + len(added)]) == added
    assert len(index) == 3000 and not set(ids[: len(added)]) & set(index_ids(index).tolist())
    stamp = read_stamp(saved)
    assert stamp is not None and stamp.kind == "ivf"


async def test_shrinking_a_little_keeps_the_ivf_index_and_a_lot_goes_back_to_flat(
    keeper: MakeKeeper, repo: Repository
) -> None:
    kept = keeper(kind="auto", approximate_from=2400)
    index = await trained(kept)
    assert index.kind is IndexKind.IVF
    ids = store_ids(repo)
    await drop(repo, index, ids[:1000])  # 2000 left: below 2400 but above half of it
    await kept.maintain()
    assert kept.status().rebuilding is None and index.kind is IndexKind.IVF
    await drop(repo, index, ids[1000:1900])  # 1100 left: below half
    await kept.maintain()
    assert "switching to a flat index" in str(kept.status().rebuilding)
    await kept.wait_rebuilt()
    assert kind_now(index) is IndexKind.FLAT and len(index) == 1100
    assert_matches_store(index, repo)


async def test_kind_flat_never_switches(keeper: MakeKeeper, saved: Path) -> None:
    kept = keeper(kind="flat", approximate_from=1000)
    index = await kept.open()
    await kept.maintain()
    assert kept.status().rebuilding is None and index.kind is IndexKind.FLAT
    stamp = read_stamp(saved)
    assert stamp is not None and stamp.kind == "flat"


async def test_growing_past_retrain_growth_retrains_the_cells(
    keeper: MakeKeeper, repo: Repository
) -> None:
    await drop(repo, None, store_ids(repo)[1200:])
    kept = keeper(kind="ivf", retrain_growth=1.5)
    index = await trained(kept)
    assert index.kind is IndexKind.IVF and index.trained_for == 1200
    await add(repo, index, 3000, 500)  # 1700: not yet 1.5 times 1200
    await kept.maintain()
    assert kept.status().rebuilding is None
    await add(repo, index, 3500, 200)  # 1900
    await kept.maintain()
    assert "retraining" in str(kept.status().rebuilding)
    await kept.wait_rebuilt()
    assert index.kind is IndexKind.IVF and index.trained_for == 1900
    assert_matches_store(index, repo)


async def test_writes_by_another_process_make_the_index_rebuild(
    keeper: MakeKeeper, repo: Repository
) -> None:
    kept = keeper()
    index = await kept.open()
    new = await add(repo, None, 3000, 30)  # e.g. `memesearch index` run while serving
    await kept.maintain()
    assert "the store changed" in str(kept.status().rebuilding)
    await kept.wait_rebuilt()
    assert_matches_store(index, repo)
    assert first_hits(index, POOL[3000:3030]) == new


async def test_changes_are_saved_when_due_and_on_close(
    keeper: MakeKeeper, repo: Repository, saved: Path
) -> None:
    kept = keeper(save_interval_seconds=3600)
    index = await kept.open()
    before = repo.generation()
    await add(repo, index, 3000, 10)
    await kept.maintain()  # not due for an hour
    stamp = read_stamp(saved)
    assert stamp is not None and stamp.generation == before
    assert kept.status().saved_generation == before != index.generation
    await kept.close()
    stamp = read_stamp(saved)
    assert stamp is not None and stamp.generation == index.generation == repo.generation()
    eager = keeper(save_interval_seconds=0)
    index = await eager.open()
    await add(repo, index, 3010, 10)
    await eager.maintain()
    stamp = read_stamp(saved)
    assert stamp is not None and (stamp.generation, stamp.count) == (repo.generation(), 3020)


async def test_without_persistence_no_file_is_written(
    keeper: MakeKeeper, repo: Repository, tmp_path: Path
) -> None:
    kept = keeper(kind="ivf", persist=False)
    index = await trained(kept)
    await add(repo, index, 3000, 10)
    await kept.close()
    assert kept.path is None and kept.status().saved_generation is None
    assert index.kind is IndexKind.IVF and not list(tmp_path.glob("*.faiss*"))


async def test_open_if_saved_opens_only_a_fresh_file(keeper: MakeKeeper, repo: Repository) -> None:
    assert await keeper().open_if_saved() is None  # nothing saved yet
    await keeper().open()
    fresh = await keeper().open_if_saved()
    assert fresh is not None and len(fresh) == 3000
    await add(repo, None, 3000, 5)
    assert await keeper().open_if_saved() is None  # stale now


async def test_closing_during_a_rebuild_leaves_a_usable_file(
    keeper: MakeKeeper, repo: Repository
) -> None:
    kept = keeper(kind="auto", approximate_from=1000)
    await kept.open()
    await kept.maintain()
    await kept.close()
    index = await keeper(kind="auto", approximate_from=1000).open()
    assert_matches_store(index, repo)


async def test_a_failed_save_is_reported_until_a_save_succeeds(
    keeper: MakeKeeper, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the index folder should be")
    path = blocker / "store.faiss"
    kept = keeper(path=path, kind="auto", approximate_from=1000, save_interval_seconds=0)
    index = await trained(kept)  # saved after the switch to ivf: fails
    assert index.kind is IndexKind.IVF
    assert "cannot save the index" in str(kept.status().last_error)
    blocker.unlink()
    await kept.maintain()
    assert kept.status().last_error is None
    stamp = read_stamp(path)
    assert stamp is not None and stamp.generation == index.generation
