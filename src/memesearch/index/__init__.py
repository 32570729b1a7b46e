"""The vector index: FAISS search over stored vectors, its kinds, persistence and upkeep."""

from memesearch.index.vector_index import (
    IndexKind,
    VectorIndex,
    build_index,
    faiss_has_gpu,
    new_flat,
)

__all__ = ["IndexKind", "VectorIndex", "build_index", "faiss_has_gpu", "new_flat"]
