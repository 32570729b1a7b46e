"""VectorIndex over real FAISS: exact results, in-place add/remove, validation."""

from __future__ import annotations

import numpy as np
import pytest

from memesearch.index import VectorIndex, build_index


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_search_matches_numpy_brute_force() -> None:
    rng = np.random.default_rng(0)
    vectors, ids = unit(rng, 500, 48), np.arange(1000, 1500)
    index = build_index([(ids[:200], vectors[:200]), (ids[200:], vectors[200:])], 48)
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
    assert index.remove([3, 4, 99]) == 2
    assert len(index) == 8 and 3 not in index.ids()
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
