"""The vector index: FAISS search over stored vectors, its kinds, persistence and upkeep."""

from memesearch.index.vector_index import (
    IndexKind,
    VectorIndex,
    configure_faiss,
    faiss_has_gpu,
    new_flat,
)

__all__ = ["IndexKind", "VectorIndex", "configure_faiss", "faiss_has_gpu", "new_flat"]
