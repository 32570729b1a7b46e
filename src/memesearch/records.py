"""Value types that cross layers: what the scanner saw, what the store holds, what changed.

Plain frozen dataclasses and enums, no SQLAlchemy and no I/O: the scanner, the change diff, the
repository, the vector index and the web layer all speak these, so none has to import another
just for a type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import numpy as np


class FileState(StrEnum):
    """Whether a file is searchable or was skipped with a reason."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file as the scanner saw it; `path` is relative to the library root, '/'-separated."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class VectorSpace:
    """The model whose vectors a query or write concerns; vectors of two spaces never mix."""

    model_id: str
    dim: int


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What the store knows about a path, enough to decide whether it changed."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    state: FileState
    has_vector: bool


@dataclass(frozen=True, slots=True)
class FileRow:
    """A file's metadata as shown to users."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    format: str | None
    state: FileState
    error: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EmbeddedFile:
    """A decoded and embedded file ready to be stored."""

    info: FileInfo
    content_hash: str
    width: int
    height: int
    format: str
    vector: np.ndarray


@dataclass(frozen=True, slots=True)
class FailedFile:
    """A file that could not be used, with the reason shown to the user."""

    info: FileInfo
    reason: str
    content_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Reuse:
    """Give `info` the vector of file `donor_id` (same content): a rename moves, a copy copies."""

    info: FileInfo
    content_hash: str
    donor_id: int
    move: bool


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """How many files are searchable, failed, and known in total."""

    files: int
    indexed: int
    failed: int


@dataclass(slots=True)
class IndexDelta:
    """What a write changed, for the in-memory index: ids to drop, (id, vector) pairs to add."""

    removed: list[int]
    added: list[tuple[int, np.ndarray]]
    generation: int = 0  # the store's generation once this write committed
