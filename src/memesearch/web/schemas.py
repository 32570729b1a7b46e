"""Pydantic models of the HTTP API; kept apart from database rows and domain types."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memesearch.errors import QueryError
from memesearch.search.query import (
    MAX_TEXT_CHARS,
    EmbeddingTerm,
    ImageIdTerm,
    ImageTerm,
    Term,
    TextTerm,
)
from memesearch.search.service import MAX_K, MAX_WINDOW

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# A term's weight, the same in JSON and multipart requests: huge weights overflow float32 sums.
Weight = Annotated[float, Field(allow_inf_nan=False, ge=-100, le=100)]
# The largest integer SQLite (and any SQL BIGINT) holds: a bigger id or offset would not reach the
# database as a miss but as an OverflowError, a 500.
MAX_SQL_INT = 2**63 - 1
# The original Meme Search Engine asked for 4000 results by default; answer up to this many.
MSE_MAX_K = 10_000
TERM_KINDS: Final = {
    "text": "string",
    "image": "string",
    "image_id": "integer",
    "embedding": "array",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TermIn(_Strict):
    """One query term: exactly one of text, image (base64), image_id or embedding."""

    # "Exactly one kind" in the schema too: clients and fuzzers see the rule the validator applies
    # (a kind is given when its key is present and not null).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": [kind], "properties": {kind: {"type": json_type}}}
                for kind, json_type in TERM_KINDS.items()
            ]
        },
    )

    text: str | None = Field(
        default=None, max_length=MAX_TEXT_CHARS, examples=["cat wearing sunglasses"]
    )
    image: str | None = Field(default=None, description="Base64-encoded image file.")
    image_id: int | None = Field(
        default=None, ge=0, le=MAX_SQL_INT, description="Id of an indexed image."
    )
    embedding: list[FiniteFloat] | None = Field(default=None, max_length=65536)
    weight: Weight = 1.0

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> TermIn:
        given = [kind for kind in TERM_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"a term needs exactly one of text, image, image_id, embedding (got {found})"
            )
        return self

    def to_term(self, position: int) -> Term:
        """The domain term; base64 is decoded here so a bad one names its term."""
        if self.text is not None:
            return TextTerm(self.text, self.weight)
        if self.image is not None:
            return ImageTerm(decode_base64(self.image, position), self.weight)
        if self.image_id is not None:
            return ImageIdTerm(self.image_id, self.weight)
        return EmbeddingTerm(tuple(self.embedding or ()), self.weight)


def decode_base64(data: str, position: int) -> bytes:
    """Strict base64 (data: URL prefixes allowed) or a QueryError naming the term."""
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QueryError(f"term {position}: image is not valid base64 ({exc})") from exc


class SearchFilters(_Strict):
    """Restrictions on which files may match."""

    path_prefix: str = Field(default="", max_length=4096, examples=["reactions/"])


class SearchRequest(_Strict):
    """`POST /api/search` body."""

    terms: list[TermIn] = Field(min_length=1)
    k: int = Field(default=50, ge=1, le=MAX_K)
    offset: int = Field(default=0, ge=0, le=MAX_WINDOW)
    filters: SearchFilters = SearchFilters()

    def to_terms(self) -> list[Term]:
        """Domain terms, numbered from 1 in error messages."""
        return [term.to_term(i) for i, term in enumerate(self.terms, start=1)]


class ValidationIssue(BaseModel):
    """One problem found in a request: where (`loc`), what (`msg`) and its kind (`type`)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The body of every error: a message, or for a malformed request a list of issues."""

    detail: str | list[ValidationIssue]


class SearchResult(BaseModel):
    """One match."""

    id: int
    path: str
    score: float
    width: int | None
    height: int | None
    url: str
    thumbnail_url: str


class SearchResponse(BaseModel):
    """A page of matches; `next_offset` is null on the last page."""

    results: list[SearchResult]
    offset: int
    next_offset: int | None
    total_indexed: int


class ImageInfo(BaseModel):
    """An indexed (or failed) file's metadata."""

    id: int
    path: str
    width: int | None
    height: int | None
    format: str | None
    size: int
    modified_ns: int
    state: str
    error: str | None
    url: str
    thumbnail_url: str


class IndexStatus(BaseModel):
    """The search index inside `GET /api/status`."""

    kind: str = Field(description='"flat" (exact) or "ivf" (approximate)')
    vectors: int
    lists: int = Field(description="cells of an ivf index (0 for flat)")
    nprobe: int = Field(description="cells an ivf search scans (0 for flat)")
    rebuilding: str | None = Field(description="why a background rebuild runs, if one does")
    saved: bool = Field(description="whether the saved index file holds what is in memory")
    last_error: str | None


class StatusResponse(BaseModel):
    """`GET /api/status`."""

    indexed: int
    pending: int
    failed: int
    indexing: bool
    model: str
    dim: int
    device: str
    phase: str
    progress_done: int
    progress_total: int
    last_error: str | None
    failing_since: float | None = Field(
        default=None, description="Unix time since when indexing passes fail, if they do"
    )
    retry_at: float | None = Field(
        default=None, description="Unix time the failed pass is tried again (backoff, ≤ 5 min)"
    )
    removals_held: int = Field(
        default=0, description="Files gone from disk all at once, kept until confirmed or back"
    )
    removals_held_reason: str | None = None
    index: IndexStatus


class FailureItem(BaseModel):
    """A file that could not be indexed and why."""

    id: int
    path: str
    error: str | None


class FailuresResponse(BaseModel):
    """`GET /api/failures`."""

    failures: list[FailureItem]
    total: int


class ReindexResponse(BaseModel):
    """`POST /api/reindex` (202)."""

    status: str = "scheduled"


class MseRequest(BaseModel):
    """The original Meme Search Engine's query body (`POST /api/mse`)."""

    model_config = ConfigDict(extra="ignore")

    text: list[tuple[str, Weight]] = Field(default_factory=list)
    images: list[tuple[str, Weight]] = Field(default_factory=list)
    embeddings: list[list[FiniteFloat]] = Field(default_factory=list)
    top_k: int = Field(default=4000, ge=1, le=MSE_MAX_K)

    def to_terms(self) -> list[Term]:
        """Weighted terms in the order text, images, embeddings."""
        terms: list[Term] = [TextTerm(text, weight) for text, weight in self.text]
        offset = len(terms)
        terms += [
            ImageTerm(decode_base64(data, offset + i), weight)
            for i, (data, weight) in enumerate(self.images, start=1)
        ]
        terms += [EmbeddingTerm(tuple(vector)) for vector in self.embeddings]
        return terms


class MseResult(BaseModel):
    """One result in the original's format."""

    score: float
    file: str
