"""VectorIndex over real FAISS: exact and IVF search, in-place writes, generations, rebuilds."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import pytest

from memesearch.index import IndexKind, VectorIndex, configure_faiss, new_flat, vector_index
from memesearch.index.ivf import lists_for, train_ivf, training_size
from memesearch.records import IndexDelta
from memesearch.testing import clustered_vectors
from tests.support import index_ids, remove_ids


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    normalised: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalised


def test_search_matches_numpy_brute_force() -> None:
    rng = np.random.default_rng(0)
    vectors, ids = unit(rng, 500, 48), np.arange(1000, 1500)
    index = VectorIndex(48)
    for part in (slice(0, 200), slice(200, None)):
        index.add(ids[part], vectors[part])
    queries = unit(rng, 4, 48)
    scores, found = index.search(queries, 10)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert (found == ids[expected]).all()
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ vectors.T, expected, 1), rtol=1e-5
    )


def test_remove_and_re_add_in_place() -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng, 10, 8)
    index = VectorIndex(8)
    index.add(list(range(10)), vectors)
    assert remove_ids(index, [3, 4, 99]) == 2
    assert len(index) == 8 and 3 not in index_ids(index)
    _, found = index.search(vectors[3], 10)
    assert 3 not in found[0] and (found[0][8:] == -1).all() if found.shape[1] > 8 else True
    index.add([3], vectors[3:4])
    _, found = index.search(vectors[3], 1)
    assert found[0, 0] == 3


def test_empty_index_and_bad_shapes() -> None:
    index = VectorIndex(8)
    scores, found = index.search(np.ones(8, np.float32), 5)
    assert found.shape == (1, 0) and scores.shape == (1, 0)
    with pytest.raises(ValueError, match="dimension 8"):
        index.add([1], np.ones((1, 7), np.float32))
    with pytest.raises(ValueError, match="2 ids for 1 vectors"):
        index.add([1, 2], np.ones((1, 8), np.float32))


def test_allowed_ids_restrict_the_search() -> None:
    rng = np.random.default_rng(2)
    vectors = unit(rng, 50, 16)
    index = VectorIndex(16)
    index.add(np.arange(100, 150), vectors)
    allowed = np.array([103, 110, 149, 999])
    scores, found = index.search(vectors[3], 10, allowed=allowed)
    assert found[0, 0] == 103
    assert set(found[0][found[0] >= 0]) <= {103, 110, 149}
    expected = sorted(((vectors[3] @ vectors[i - 100]), i) for i in (103, 110, 149))[::-1]
    assert [i for _, i in expected] == found[0][:3].tolist()
    _, none = index.search(vectors[3], 10, allowed=np.array([], np.int64))
    assert none.shape == (1, 0)


# The approximate (IVF) index: small dims and a few thousand vectors keep these fast.

DIM = 32


def clustered(count: int, dim: int = DIM, *, draw_seed: int = 1) -> np.ndarray:
    """`count` clustered unit vectors; another `draw_seed` samples the same mixture (queries)."""
    blocks = clustered_vectors(count, dim, clusters=200, seed=3, draw_seed=draw_seed)
    return np.concatenate(list(blocks))


def ivf_index(vectors: np.ndarray, ids: np.ndarray, *, nprobe: int = 0) -> VectorIndex:
    """An IVF index trained on `vectors` and holding them, sized as the keeper sizes it."""
    count, dim = vectors.shape
    trained = train_ivf(dim, vectors[: training_size(lists_for(count), count)], count)
    index = VectorIndex(dim, index=trained, nprobe=nprobe, trained_for=count)
    index.add(ids, vectors)
    return index


def exact_top(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]


def test_ivf_recall_at_10_against_exact_search() -> None:
    vectors, ids = clustered(6000, 64), np.arange(6000) + 10_000
    index = ivf_index(vectors, ids)
    assert index.kind is IndexKind.IVF and len(index) == 6000
    assert 0 < index.nprobe < index.lists  # it really scans only some cells
    queries = clustered(200, 64, draw_seed=7)
    scores, found = index.search(queries, 10)
    expected = exact_top(queries, vectors, ids, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, expected, strict=True)])
    assert recall >= 0.95
    # Scores are true inner products (to fp16 precision), best first.
    true = np.take_along_axis(queries @ vectors.T, np.searchsorted(ids, found), axis=1)
    np.testing.assert_allclose(scores, true, atol=2e-3)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_ivf_add_and_remove_in_place() -> None:
    vectors, ids = clustered(3000), np.arange(3000)
    index = ivf_index(vectors, ids)
    gone = ids[::10]
    assert remove_ids(index, gone) == len(gone)
    assert len(index) == 2700 and not set(gone) & set(index_ids(index).tolist())
    _, found = index.search(vectors[gone], 50)
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    kept = ids[1::10]
    _, found = index.search(vectors[kept], 1)
    assert found[:, 0].tolist() == kept.tolist()
    back = gone[:20]
    index.add(back, vectors[back])
    _, found = index.search(vectors[back], 1)
    assert found[:, 0].tolist() == back.tolist() and len(index) == 2720


def test_a_filtered_ivf_search_is_exact() -> None:
    vectors, ids = clustered(3000), np.arange(3000) * 3
    index = ivf_index(vectors, ids, nprobe=1)  # one probed cell: unfiltered searches miss a lot
    allowed = np.sort(np.random.default_rng(5).choice(ids, 300, replace=False))
    queries = clustered(20, draw_seed=9)
    scores, found = index.search(queries, 10, allowed=allowed)
    rows = np.searchsorted(ids, allowed)
    assert (found == exact_top(queries, vectors[rows], allowed, 10)).all()
    assert scores.shape == (20, 10)


def vector_of(seed: int, dim: int = 8) -> np.ndarray:
    row: np.ndarray = unit(np.random.default_rng(seed), 1, dim)[0]
    return row


def delta(generation: int, *, removed: Sequence[int] = (), added: Sequence[int] = ()) -> IndexDelta:
    """A store write: `added` ids (re)written with a vector made from the id, `removed` dropped."""
    return IndexDelta(
        removed=[*removed, *added],
        added=[(i, vector_of(i)) for i in added],
        generation=generation,
    )


def test_apply_tracks_the_store_generation_only_while_contiguous() -> None:
    index = VectorIndex(8, generation=5)
    index.apply(delta(6, added=[1, 2]))
    assert index.generation == 6 and sorted(index_ids(index).tolist()) == [1, 2]
    index.apply(delta(6, removed=[1]))  # a write the index already reflects: left alone
    assert index.generation == 6 and len(index) == 2
    index.apply(delta(8, added=[3]))  # generation 7 was never applied
    assert index.generation is None and sorted(index_ids(index).tolist()) == [1, 2, 3]
    index.apply(delta(9, removed=[2]))
    assert index.generation is None and sorted(index_ids(index).tolist()) == [1, 3]


def test_a_rebuild_replays_the_writes_that_came_after_its_snapshot() -> None:
    live = VectorIndex(8, generation=10)
    live.add(list(range(10)), np.stack([vector_of(i) for i in range(10)]))
    live.begin_rebuild()
    live.apply(delta(11, removed=[3]))  # committed before the rebuild read the store
    live.apply(delta(12, added=[30]))
    live.apply(delta(13, removed=[30]))
    snapshot = 13  # what the rebuild read: 0..9 without 3
    rebuilt = new_flat(8)
    kept = [0, 1, 2, 4, 5, 6, 7, 8, 9]
    rebuilt.add_with_ids(np.stack([vector_of(i) for i in kept]), np.array(kept, np.int64))
    live.apply(delta(14, added=[20]))  # after the snapshot: must be replayed
    live.apply(delta(15, removed=[1]))
    assert 3 not in index_ids(live) and 20 in index_ids(live)  # the old index serves meanwhile
    live.finish_rebuild(rebuilt, snapshot=snapshot, trained_for=7)
    assert sorted(index_ids(live).tolist()) == [0, 2, 4, 5, 6, 7, 8, 9, 20]
    assert live.generation == 15 and live.trained_for == 7
    _, found = live.search(vector_of(20), 1)
    assert found[0, 0] == 20


def test_writes_in_the_snapshot_that_are_applied_after_the_swap_change_nothing() -> None:
    live = VectorIndex(8, generation=1)
    live.begin_rebuild()
    # Writes 2 and 3 commit, the rebuild reads the store and swaps in; then they are applied.
    rebuilt = new_flat(8)
    rebuilt.add_with_ids(vector_of(5).reshape(1, -1), np.array([5], np.int64))
    live.finish_rebuild(rebuilt, snapshot=3)
    live.apply(delta(2, added=[5, 6]))
    live.apply(delta(3, removed=[6]))
    assert live.generation == 3 and index_ids(live).tolist() == [5]
    live.apply(delta(4, added=[7]))
    assert live.generation == 4 and sorted(index_ids(live).tolist()) == [5, 7]


def test_a_gap_in_the_journal_leaves_the_generation_unknown() -> None:
    live = VectorIndex(8, generation=1)
    live.begin_rebuild()
    live.apply(delta(3, added=[5]))  # generation 2 committed but is not applied yet
    live.finish_rebuild(new_flat(8), snapshot=1)
    assert live.generation is None and index_ids(live).tolist() == [5]


def test_an_aborted_rebuild_stops_journalling() -> None:
    live = VectorIndex(8, generation=1)
    live.begin_rebuild()
    live.apply(delta(2, added=[5]))
    live.abort_rebuild()
    live.finish_rebuild(new_flat(8), snapshot=2)  # nothing journalled is replayed any more
    assert live.generation == 2 and len(live) == 0


class FakeStore:
    """A store in memory: writes commit under a lock with a new generation, like SQLite's."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.rows = dict(enumerate(vectors))
        self.generation = 0
        self.lock = threading.Lock()

    def write(self, removed: list[int], added: dict[int, np.ndarray]) -> IndexDelta:
        with self.lock:
            for file_id in removed:
                del self.rows[file_id]
            self.rows.update(added)
            self.generation += 1
            return IndexDelta(removed, list(added.items()), self.generation)

    def snapshot(self) -> tuple[int, np.ndarray, np.ndarray]:
        with self.lock:
            ids = np.array(sorted(self.rows), np.int64)
            return self.generation, ids, np.stack([self.rows[i] for i in ids.tolist()])


def test_searches_stay_consistent_while_writes_and_a_rebuild_run() -> None:
    vectors = clustered(4000)
    store = FakeStore(vectors[:3000])
    index = VectorIndex(DIM, generation=0)
    index.add(np.arange(3000), vectors[:3000])
    removed: list[int] = []  # ids whose removal the index has acknowledged, in order
    searching = threading.Barrier(4)  # three searchers and the writer start together
    snapshot_read, writes_during, done = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        searching.wait(timeout=60)
        for step in range(250):  # drop 2 old ids, add 2 new ones, apply after the commit
            gone = [step * 2, step * 2 + 1]
            new = {3000 + step * 2 + j: vectors[3000 + step * 2 + j] for j in (0, 1)}
            index.apply(store.write(gone, new))
            removed.extend(gone)
            if step == 50:
                threading.Thread(target=rebuild).start()
                snapshot_read.wait(timeout=60)
            if step == 100:
                writes_during.set()  # fifty writes landed after the rebuild's snapshot
            if step == 150:
                done.wait(timeout=60)  # the rest go to the new index

    def rebuild() -> None:
        index.begin_rebuild()
        snapshot, ids, stored = store.snapshot()
        snapshot_read.set()
        trained = train_ivf(DIM, stored, len(ids))
        trained.add_with_ids(stored, ids)
        writes_during.wait(timeout=60)
        index.finish_rebuild(trained, snapshot=snapshot, trained_for=len(ids))
        done.set()

    def searcher(seed: int) -> int:
        rng, searches = np.random.default_rng(seed), 0
        while not done.is_set() or len(removed) < 500:
            gone = set(removed[: len(removed)])  # removed before this search starts
            queries = vectors[rng.integers(0, 3500, 4)]
            scores, found = index.search(queries, 20)
            for row_scores, row in zip(scores, found, strict=True):
                hits = row[row >= 0].tolist()
                assert not gone & set(hits), "an id removed before the search was returned"
                assert len(set(hits)) == len(hits) and (np.diff(row_scores) <= 1e-6).all()
            searches += 1
            if searches == 1:
                searching.wait(timeout=60)
        return searches

    with ThreadPoolExecutor(4) as pool:
        searches = [pool.submit(searcher, seed) for seed in range(3)]
        pool.submit(writer).result(timeout=120)
        assert all(future.result(timeout=120) > 1 for future in searches)
    assert index.kind is IndexKind.IVF and index.generation == store.generation == 250
    assert sorted(index_ids(index).tolist()) == sorted(store.rows) and len(index) == 3000


def test_faiss_settings_are_made_once_at_start_not_by_each_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faiss.cvar, "distance_compute_blas_threshold", 20)
    VectorIndex(8)
    assert faiss.cvar.distance_compute_blas_threshold == 20  # building an index changes nothing
    configure_faiss()
    assert faiss.cvar.distance_compute_blas_threshold == 1


def test_concurrent_searches_build_one_gpu_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """Searches share the read lock; the replica after a write must be built once, not per search.

    No GPU here: the replica is a real CPU copy made by a stand-in for `index_cpu_to_gpu`, slowed
    so that every search arrives while it is being built.
    """
    built: list[int] = []
    started = threading.Event()

    def copy_to_gpu(_resources: object, _device: int, index: faiss.Index) -> faiss.Index:
        built.append(1)
        started.set()
        time.sleep(0.2)  # widens the window a second build would use; asserts nothing on time
        return faiss.clone_index(index)

    monkeypatch.setattr(vector_index, "faiss_has_gpu", lambda: True)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", copy_to_gpu, raising=False)
    rng = np.random.default_rng(3)
    vectors = unit(rng, 50, 8)
    index = VectorIndex(8, use_gpu=True)
    index.add(list(range(50)), vectors)
    results: list[np.ndarray] = []
    barrier = threading.Barrier(6)

    def search(row: int) -> None:
        barrier.wait(timeout=5)
        results.append(index.search(vectors[row], 1)[1][0])

    threads = [threading.Thread(target=search, args=(row,)) for row in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert started.is_set() and len(built) == 1
    assert sorted(int(found[0]) for found in results) == list(range(6))
    index.add([50], unit(rng, 1, 8))  # a write drops the replica: the next search rebuilds it
    index.search(vectors[0], 1)
    assert len(built) == 2
