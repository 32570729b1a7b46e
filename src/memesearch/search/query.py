"""Query terms (text | image | image_id | embedding, each weighted) → one query vector."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

import numpy as np

from memesearch.db.repo import Repository
from memesearch.embed.batcher import Priority
from memesearch.embed.runtime import ModelRuntime
from memesearch.errors import ImageDecodeError, QueryError, UnknownImageError
from memesearch.images.decode import DecodeLimits, PreprocessSpec
from memesearch.images.prepare import prepare_bytes
from memesearch.records import VectorSpace

_ZERO = 1e-6
# The longest text term, on every route: a text model reads a few dozen tokens, and tokenising
# megabytes would hold the model thread for everyone.
MAX_TEXT_CHARS = 2000


@dataclass(frozen=True, slots=True)
class TextTerm:
    """A text description; negative weights push matches away, like every term's."""

    text: str
    weight: float = 1.0
    kind: ClassVar[str] = "text"


@dataclass(frozen=True, slots=True)
class ImageTerm:
    """An example image given as its encoded bytes."""

    data: bytes
    weight: float = 1.0
    kind: ClassVar[str] = "image"


@dataclass(frozen=True, slots=True)
class ImageIdTerm:
    """An already indexed file, by id."""

    image_id: int
    weight: float = 1.0
    kind: ClassVar[str] = "image_id"


@dataclass(frozen=True, slots=True)
class EmbeddingTerm:
    """A raw vector in the model's space (any sequence of numbers, kept as a tuple of floats)."""

    values: tuple[float, ...]
    weight: float = 1.0
    kind: ClassVar[str] = "embedding"

    def __post_init__(self) -> None:
        """Hold the values as an immutable tuple of floats, whatever sequence came in."""
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))


# One weighted part of a query; `kind` names it ("text", "image", "image_id", "embedding").
Term: TypeAlias = TextTerm | ImageTerm | ImageIdTerm | EmbeddingTerm


class QueryEncoder:
    """Embeds each term and combines them: normalise(Σ weight · normalise(term))."""

    def __init__(
        self, runtime: ModelRuntime, repo: Repository, *, limits: DecodeLimits, decodes: int = 2
    ) -> None:
        self._runtime = runtime
        self._repo = repo
        self._limits = limits
        self._decodes = asyncio.Semaphore(decodes)  # a decoded image can take hundreds of MB
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
        texts: list[tuple[int, str]] = []
        images: list[tuple[int, bytes]] = []
        for i, term in enumerate(terms):
            match term:
                case TextTerm(text=text):
                    texts.append((i, text))
                case ImageTerm(data=data):
                    images.append((i, data))
                case ImageIdTerm(image_id=image_id):
                    vectors[i] = await self._stored_vector(image_id)
                case EmbeddingTerm(values=values):
                    vectors[i] = _unit(np.asarray(values, dtype=np.float32), i)
        if texts or images:
            batcher = await self._runtime.batcher()
        if texts:
            embedded = await batcher.embed_texts([text for _, text in texts])
            vectors[[i for i, _ in texts]] = embedded
        if images:
            spec = batcher.embedder.preprocess
            pixels = await asyncio.gather(*(self._decoded(i, data, spec) for i, data in images))
            embedded = await batcher.embed_images(np.stack(pixels), priority=Priority.QUERY)
            vectors[[i for i, _ in images]] = embedded
        return vectors

    async def _decoded(self, position: int, data: bytes, spec: PreprocessSpec) -> np.ndarray:
        async with self._decodes:
            return await asyncio.to_thread(self._decode, position, data, spec)

    def _decode(self, position: int, data: bytes, spec: PreprocessSpec) -> np.ndarray:
        try:
            return prepare_bytes(data, spec, self._limits).pixels
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
        match term:
            case TextTerm(text=text) if not text.strip():
                raise QueryError(f"term {position}: text is empty")
            case TextTerm(text=text) if len(text) > MAX_TEXT_CHARS:
                raise QueryError(
                    f"term {position}: text has {len(text):,} characters, "
                    f"at most {MAX_TEXT_CHARS:,} are read"
                )
            case ImageTerm(data=data) if not data:
                raise QueryError(f"term {position}: image is empty")
            case EmbeddingTerm(values=values) if len(values) != dim:
                raise QueryError(
                    f"term {position}: embedding has {len(values)} values, the model produces {dim}"
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
