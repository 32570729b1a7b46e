"""VectorIndex: inner-product search over normalised vectors, keyed by file id.

Two kinds behind one interface: `flat` (exact, every vector scanned; batches of queries become
one matrix product) and `ivf` (approximate, see `ivf.py`). Both add and remove ids in place.
The index knows the store generation it reflects, so a saved copy can be told fresh from stale,
and it can be rebuilt in the background while it keeps serving: writes that land meanwhile are
journalled and replayed onto the new index before the swap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import faiss
import numpy as np

from memesearch.index.ivf import is_ivf, probes_for
from memesearch.index.rwlock import ReadWriteLock
from memesearch.records import IndexDelta

log = logging.getLogger(__name__)


class IndexKind(StrEnum):
    """What kind of FAISS index serves searches."""

    FLAT = "flat"
    IVF = "ivf"


def faiss_has_gpu() -> bool:
    """Whether this faiss build can use CUDA (faiss-gpu) and a GPU is visible."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return get_num_gpus is not None and int(get_num_gpus()) > 0


def new_flat(dim: int) -> Any:
    """An empty exact inner-product index with caller-chosen ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


@dataclass(frozen=True, slots=True)
class IndexState:
    """What an index holds: its kind, size, store generation and training size."""

    kind: IndexKind
    count: int
    generation: int | None
    trained_for: int


class VectorIndex:
    """Top-k inner-product search with in-place add/remove; safe to share between threads.

    Searches share a read lock; add, remove and swaps take the write lock. With faiss-gpu and a
    GPU, exact searches run on a GPU replica, rebuilt by the first search after a write.
    """

    def __init__(
        self,
        dim: int,
        *,
        index: Any = None,
        nprobe: int = 0,
        use_gpu: bool = False,
        generation: int | None = None,
        trained_for: int = 0,
    ) -> None:
        self.dim = dim
        self._index = new_flat(dim) if index is None else index
        if self._index.d != dim:
            raise ValueError(f"a {self._index.d}-d index cannot serve {dim}-d vectors")
        self._nprobe = nprobe
        self._lock = ReadWriteLock()
        self._use_gpu = use_gpu and faiss_has_gpu()
        self._gpu_resources: Any = None
        self._gpu: Any = None  # the GPU replica, dropped by every write (under the write lock)
        self._gpu_lock = threading.Lock()  # searches share the read lock: one builds the replica
        self._journal: list[IndexDelta] | None = None
        self.generation = generation  # store generation this reflects; None: unknown (stale)
        self.trained_for = trained_for  # library size an IVF index was trained for

    @property
    def kind(self) -> IndexKind:
        """Whether searches are exact (flat) or approximate (ivf)."""
        return IndexKind.IVF if is_ivf(self._index) else IndexKind.FLAT

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on the GPU (exact index only)."""
        return self._use_gpu and self.kind is IndexKind.FLAT

    @property
    def lists(self) -> int:
        """Cells of an IVF index (0 for flat)."""
        concrete: Any = faiss.downcast_index(self._index)
        return int(concrete.nlist) if is_ivf(concrete) else 0

    @property
    def nprobe(self) -> int:
        """Cells an IVF search scans (0 for flat)."""
        lists = self.lists
        return probes_for(lists, self._nprobe) if lists else 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    # writes

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under the given ids (ids already present must be removed first)."""
        with self._lock.write():
            self._add(self._index, ids, vectors)
            self._gpu = None

    def apply(self, delta: IndexDelta) -> None:
        """Apply what one store write changed, and advance to the generation it committed.

        A write the index already holds is skipped: one that committed before a rebuild read
        the store but reached the index only after the swap.
        """
        with self._lock.write():
            if self.generation is not None and 0 < delta.generation <= self.generation:
                return
            self._apply_to(self._index, delta)
            self._gpu = None
            self.generation = _next_generation(self.generation, delta.generation)
            if self._journal is not None:
                self._journal.append(delta)

    # background rebuilds

    def begin_rebuild(self) -> None:
        """Start journalling writes; call before reading the snapshot the rebuild starts from."""
        with self._lock.write():
            self._journal = []

    def finish_rebuild(self, index: Any, *, snapshot: int, trained_for: int = 0) -> None:
        """Swap in `index`, built from the store at generation `snapshot`, plus later writes."""
        if index.d != self.dim:
            raise ValueError(f"a {index.d}-d index cannot replace a {self.dim}-d one")
        with self._lock.write():
            journal, self._journal = self._journal or [], None
            generation: int | None = snapshot
            for delta in journal:
                if delta.generation <= snapshot:
                    continue  # already in the snapshot
                self._apply_to(index, delta)
                generation = _next_generation(generation, delta.generation)
            self._index, self._gpu = index, None
            self.generation, self.trained_for = generation, trained_for
        log.info("index now %s with %d vectors (generation %s)", self.kind, len(self), generation)

    def abort_rebuild(self) -> None:
        """Stop journalling after a rebuild failed or was cancelled."""
        with self._lock.write():
            self._journal = None

    # reads

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores [m, k'], ids [m, k']) per query row, k' = min(k, size); ids -1 pad.

        `allowed` restricts the search to those ids (a FAISS selector, evaluated in the scan);
        an IVF index then scans every cell, so a filtered search stays exact.
        """
        matrix = self._as_matrix(queries)
        with self._lock.read():
            size = len(self)
            total = size if allowed is None else min(len(allowed), size)
            if total == 0 or k <= 0:
                shape = (matrix.shape[0], 0)
                return np.zeros(shape, np.float32), np.full(shape, -1, np.int64)
            k = min(k, total)
            if allowed is None and self.kind is IndexKind.FLAT:
                return self._searcher().search(matrix, k)  # type: ignore[no-any-return]
            params = self._parameters(allowed)
            scores, ids = self._index.search(matrix, k, params=params)
        return scores, ids

    def sample(self, count: int, *, seed: int = 0) -> np.ndarray:
        """Up to `count` stored vectors picked at random (float32), e.g. to train k-means on."""
        with self._lock.read():
            size = len(self)
            if size == 0:
                return np.zeros((0, self.dim), np.float32)
            rows = np.random.default_rng(seed).choice(size, min(count, size), replace=False)
            return _vectors_at(self._index, np.sort(rows), self.dim)

    def write(self, sink: Any, header: Callable[[IndexState], None]) -> IndexState:
        """Call `header` with the state, then serialise the index to a FAISS writer.

        Writes wait meanwhile (searches do not), so the state describes exactly what is written.
        """
        with self._lock.read():
            state = IndexState(
                kind=self.kind,
                count=len(self),
                generation=self.generation,
                trained_for=self.trained_for,
            )
            header(state)
            faiss.write_index(self._index, sink)
        return state

    def _parameters(self, allowed: np.ndarray | None) -> Any:
        selector = (
            None
            if allowed is None
            else faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        )
        if self.kind is IndexKind.FLAT:
            params = faiss.SearchParameters()
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = self.lists if selector is not None else self.nprobe
        if selector is not None:
            params.sel = selector
        return params

    def _searcher(self) -> Any:
        """The index exact searches run on: the GPU replica when there is a GPU (read lock held)."""
        if not self._use_gpu:
            return self._index
        with self._gpu_lock:
            if self._gpu is None:
                if self._gpu_resources is None:
                    self._gpu_resources = faiss.StandardGpuResources()
                self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
            return self._gpu

    def _apply_to(self, index: Any, delta: IndexDelta) -> None:
        _remove(index, delta.removed)
        if delta.added:
            ids = [file_id for file_id, _ in delta.added]
            self._add(index, ids, np.stack([vector for _, vector in delta.added]))

    def _add(self, index: Any, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids_array = np.ascontiguousarray(ids, dtype=np.int64)
        matrix = self._as_matrix(vectors)
        if matrix.shape[0] != ids_array.shape[0]:
            raise ValueError(f"{ids_array.shape[0]} ids for {matrix.shape[0]} vectors")
        index.add_with_ids(matrix, ids_array)

    def _as_matrix(self, vectors: np.ndarray) -> np.ndarray:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got shape {matrix.shape}")
        return matrix


def configure_faiss() -> None:
    """Process-wide FAISS settings; called once at start (`open_services`).

    Scores every batch of queries with one matrix product (BLAS), even a batch of one.

    FAISS scans the vectors once per query below `distance_compute_blas_threshold` (20) queries.
    Concurrent searches arrive here in batches of a few: with BLAS, 16 queries over 300k
    vectors take about as long as one (0.14 s vs 0.10 s on 2 cores, against 2.4 s without).
    """
    faiss.cvar.distance_compute_blas_threshold = 1


def _next_generation(current: int | None, committed: int) -> int | None:
    """The generation after applying a write that committed `committed`: None if one was missed."""
    return committed if current is not None and committed == current + 1 else None


def _remove(index: Any, ids: Iterable[int]) -> int:
    ids_array = np.fromiter(ids, dtype=np.int64)
    if ids_array.size == 0 or index.ntotal == 0:
        return 0
    return int(index.remove_ids(faiss.IDSelectorBatch(ids_array)))


def _vectors_at(index: Any, rows: np.ndarray, dim: int) -> np.ndarray:
    """Decode the vectors at storage positions `rows` (sorted) of a flat or IVF index."""
    concrete: Any = faiss.downcast_index(index)
    if not is_ivf(concrete):
        flat: Any = faiss.downcast_index(concrete.index)
        stored = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * dim).reshape(-1, dim)
        return np.array(stored[rows], dtype=np.float32)
    lists, picked, start = concrete.invlists, [], 0  # SQfp16, not by residual: codes decode alone
    for i in range(concrete.nlist):
        size = lists.list_size(i)
        lo, hi = np.searchsorted(rows, [start, start + size])
        if hi > lo:
            codes = faiss.rev_swig_ptr(lists.get_codes(i), size * lists.code_size)
            mine = codes.reshape(size, lists.code_size)[rows[lo:hi] - start]
            picked.append(concrete.sq.decode(np.ascontiguousarray(mine)))
        start += size
    return np.concatenate(picked) if picked else np.zeros((0, dim), np.float32)
