"""VectorIndex: an inner-product FAISS index over normalised vectors, keyed by file id."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import faiss
import numpy as np

log = logging.getLogger(__name__)


def faiss_has_gpu() -> bool:
    """Whether this faiss build can use CUDA (faiss-gpu) and a GPU is visible."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return get_num_gpus is not None and int(get_num_gpus()) > 0


class VectorIndex:
    """Exact inner-product search with in-place add/remove; safe to share between threads.

    The CPU IndexIDMap2 is the source of truth. With faiss-gpu and a GPU, searches run on a GPU
    replica, refreshed lazily after removals (GPU flat indexes cannot remove ids in place).
    """

    def __init__(self, dim: int, *, use_gpu: bool = False) -> None:
        self.dim = dim
        self._cpu = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.RLock()
        self._use_gpu = use_gpu and faiss_has_gpu()
        self._gpu_resources: Any = None
        self._gpu: Any = None

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on the GPU."""
        return self._use_gpu

    def __len__(self) -> int:
        with self._lock:
            return int(self._cpu.ntotal)

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under the given ids (ids already present must be removed first)."""
        if len(ids) == 0:
            return
        ids_array = np.ascontiguousarray(ids, dtype=np.int64)
        matrix = self._as_matrix(vectors)
        if matrix.shape[0] != ids_array.shape[0]:
            raise ValueError(f"{ids_array.shape[0]} ids for {matrix.shape[0]} vectors")
        with self._lock:
            self._cpu.add_with_ids(matrix, ids_array)
            self._gpu = None

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        ids_array = np.fromiter(ids, dtype=np.int64)
        if ids_array.size == 0:
            return 0
        with self._lock:
            removed = int(self._cpu.remove_ids(faiss.IDSelectorBatch(ids_array)))
            if removed:
                self._gpu = None
            return removed

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores [m, k'], ids [m, k']) per query row, k' = min(k, size); ids -1 pad.

        `allowed` restricts the search to those ids (a FAISS selector, evaluated in the scan).
        """
        matrix = self._as_matrix(queries)
        with self._lock:
            total = int(self._cpu.ntotal) if allowed is None else min(len(allowed), len(self))
            if total == 0 or k <= 0:
                shape = (matrix.shape[0], 0)
                return np.zeros(shape, np.float32), np.full(shape, -1, np.int64)
            if allowed is None:
                return self._searcher().search(matrix, min(k, total))  # type: ignore[no-any-return]
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            params = faiss.SearchParameters()
            params.sel = selector
            scores, ids = self._cpu.search(matrix, min(k, total), params=params)
        return scores, ids

    def ids(self) -> np.ndarray:
        """Every id in the index."""
        with self._lock:
            return faiss.vector_to_array(self._cpu.id_map).astype(np.int64)

    def _searcher(self) -> Any:
        if not self._use_gpu:
            return self._cpu
        if self._gpu is None:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu)
        return self._gpu

    def _as_matrix(self, vectors: np.ndarray) -> np.ndarray:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got shape {matrix.shape}")
        return matrix


def build_index(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, *, use_gpu: bool = False
) -> VectorIndex:
    """Build an index from (ids, vectors) batches, e.g. `Repository.iter_vectors`."""
    index = VectorIndex(dim, use_gpu=use_gpu)
    for ids, vectors in batches:
        index.add(ids, vectors)
    log.info("index built: %d vectors of dimension %d", len(index), dim)
    return index
