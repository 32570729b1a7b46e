"""The stored form of a vector: little-endian float16 bytes (float32 rows of old stores still read).

Vectors are stored as float16: half the bytes of float32, and a unit vector's cosine scores move
by ~1e-4, far below what changes a ranking (recall against float32: see tests/db). Rows written
as float32 by older versions are still read; migration 0002 converts them.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

STORED_DTYPE: Final = "float16"
_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
}


def encode_vector(vector: np.ndarray, dim: int) -> bytes:
    """The stored form of a vector of the expected dimension: `STORED_DTYPE` little-endian."""
    if vector.shape != (dim,):
        raise ValueError(f"vector has {vector.size} values, expected {dim}")
    return np.ascontiguousarray(vector, dtype=_DTYPES[STORED_DTYPE]).tobytes()


def decode_vector(blob: bytes, dim: int, dtype: str) -> np.ndarray:
    """The inverse of `encode_vector` (float32 [dim]), checked against the expected dimension."""
    vector: np.ndarray = decode_vectors(blob, 1, dim, dtype)[0]
    return vector


def decode_vectors(blob: bytes, count: int, dim: int, dtype: str) -> np.ndarray:
    """`count` stored vectors of one dtype, concatenated, as float32 [count, dim]."""
    if dtype not in _DTYPES:
        raise ValueError(f"stored vectors are {dtype!r}, which this version cannot read")
    values = np.frombuffer(blob, dtype=_DTYPES[dtype])
    if values.size != count * dim:
        raise ValueError(f"stored vectors hold {values.size} values, expected {count} × {dim}")
    return values.reshape(count, dim).astype(np.float32)
