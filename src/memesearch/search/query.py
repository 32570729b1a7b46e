"""Query terms (text | image | image_id | embedding, each weighted) → one query vector."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from memesearch.db.repo import Repository
from memesearch.embed.batcher import Priority
from memesearch.embed.runtime import ModelRuntime
from memesearch.errors import ImageDecodeError, QueryError, UnknownImageError
from memesearch.images.decode import DecodeLimits
from memesearch.images.prepare import prepare_bytes
from memesearch.records import VectorSpace

_ZERO = 1e-6


class TermKind(StrEnum):
    """What a term refers to."""

    TEXT = "text"
    IMAGE = "image"
    IMAGE_ID = "image_id"
    EMBEDDING = "embedding"


@dataclass(frozen=True, slots=True)
class Term:
    """One weighted part of a query; negative weights push matches away."""

    kind: TermKind
    value: str | bytes | int | tuple[float, ...]
    weight: float = 1.0

    @classmethod
    def text(cls, text: str, weight: float = 1.0) -> Term:
        """A text description."""
        return cls(TermKind.TEXT, text, weight)

    @classmethod
    def image(cls, data: bytes, weight: float = 1.0) -> Term:
        """An example image given as its encoded bytes."""
        return cls(TermKind.IMAGE, data, weight)

    @classmethod
    def image_id(cls, file_id: int, weight: float = 1.0) -> Term:
        """An already indexed file, by id."""
        return cls(TermKind.IMAGE_ID, file_id, weight)

    @classmethod
    def embedding(cls, values: Sequence[float], weight: float = 1.0) -> Term:
        """A raw vector in the model's space."""
        return cls(TermKind.EMBEDDING, tuple(float(v) for v in values), weight)


class QueryEncoder:
    """Embeds each term and combines them: normalise(Σ weight · normalise(term))."""

    def __init__(self, runtime: ModelRuntime, repo: Repository, *, limits: DecodeLimits) -> None:
        self._runtime = runtime
        self._repo = repo
        self._limits = limits
        self._space = VectorSpace(runtime.info.model_id, runtime.info.dim)

    async def encode(self, terms: Sequence[Term]) -> np.ndarray:
        """The unit query vector for `terms`, or a QueryError saying what is wrong."""
        validate_terms(terms, self._space.dim)
        vectors = await self._term_vectors(terms)
        weights = np.array([term.weight for term in terms], dtype=np.float32)
        combined = (weights[:, None] * vectors).sum(axis=0)
        norm = float(np.linalg.norm(combined))
        if not math.isfinite(norm) or norm < _ZERO:
            raise QueryError("the terms cancel each other out: the combined query is empty")
        unit: np.ndarray = (combined / norm).astype(np.float32)
        return unit

    async def _term_vectors(self, terms: Sequence[Term]) -> np.ndarray:
        vectors = np.zeros((len(terms), self._space.dim), dtype=np.float32)
        texts = [(i, t) for i, t in enumerate(terms) if t.kind is TermKind.TEXT]
        images = [(i, t) for i, t in enumerate(terms) if t.kind is TermKind.IMAGE]
        for i, term in enumerate(terms):
            if term.kind is TermKind.IMAGE_ID:
                vectors[i] = await self._stored_vector(int(term.value))  # type: ignore[arg-type]
            elif term.kind is TermKind.EMBEDDING:
                vectors[i] = _unit(np.asarray(term.value, dtype=np.float32), i)
        if texts or images:
            batcher = await self._runtime.batcher()
        if texts:
            embedded = await batcher.embed_texts([str(t.value) for _, t in texts])
            vectors[[i for i, _ in texts]] = embedded
        if images:
            spec = batcher.embedder.preprocess
            pixels = await asyncio.gather(
                *(asyncio.to_thread(self._decode, i, t.value, spec) for i, t in images)
            )
            embedded = await batcher.embed_images(np.stack(pixels), priority=Priority.QUERY)
            vectors[[i for i, _ in images]] = embedded
        return vectors

    def _decode(self, position: int, data: object, spec: object) -> np.ndarray:
        try:
            return prepare_bytes(data, spec, self._limits).pixels  # type: ignore[arg-type]
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"term {position + 1}: {exc}") from exc

    async def _stored_vector(self, file_id: int) -> np.ndarray:
        vector = await asyncio.to_thread(self._repo.get_vector, file_id=file_id, space=self._space)
        if vector is None:
            raise UnknownImageError(file_id)
        return vector


def validate_terms(terms: Sequence[Term], dim: int) -> None:
    """Reject what cannot make a query, before any model work."""
    if not terms:
        raise QueryError("a query needs at least one term")
    for position, term in enumerate(terms, start=1):
        if not math.isfinite(term.weight):
            raise QueryError(f"term {position}: weight must be a finite number")
        if term.kind is TermKind.TEXT and not str(term.value).strip():
            raise QueryError(f"term {position}: text is empty")
        if term.kind is TermKind.IMAGE and not term.value:
            raise QueryError(f"term {position}: image is empty")
        if term.kind is TermKind.EMBEDDING:
            values = term.value
            if not isinstance(values, tuple) or len(values) != dim:
                size = len(values) if isinstance(values, tuple) else "no"
                raise QueryError(
                    f"term {position}: embedding has {size} values, the model produces {dim}"
                )
    if all(term.weight == 0 for term in terms):
        raise QueryError("every term has weight 0")


def _unit(vector: np.ndarray, position: int) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm):
        raise QueryError(f"term {position + 1}: embedding contains NaN or infinite values")
    if norm < _ZERO:
        raise QueryError(f"term {position + 1}: embedding is all zeros")
    return vector / norm
