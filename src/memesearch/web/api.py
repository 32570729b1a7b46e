"""JSON API under /api: search (JSON and multipart), images, status, failures, reindex, /api/mse."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, UploadFile, status

from memesearch.config import megabytes
from memesearch.errors import QueryError
from memesearch.index.keeper import KeeperStatus
from memesearch.search.query import ImageTerm, Term, TextTerm
from memesearch.search.service import MAX_K, MAX_WINDOW, SearchPage
from memesearch.web.access import Access, declare
from memesearch.web.errors import PayloadTooLarge
from memesearch.web.schemas import (
    MAX_SQL_INT,
    MSE_MAX_K,
    ErrorResponse,
    FailureItem,
    FailuresResponse,
    ImageInfo,
    IndexStatus,
    MseRequest,
    MseResult,
    ReindexResponse,
    SearchRequest,
    SearchResponse,
    SearchResult,
    StatusResponse,
    Weight,
)
from memesearch.web.state import AppState, StateDep
from memesearch.web.urls import media_url, thumbnail_url

router = APIRouter(prefix="/api", tags=["api"])


def _error(description: str) -> dict[str, Any]:
    """An error response for the schema: its meaning and the `{"detail": ...}` body."""
    return {"model": ErrorResponse, "description": description}


# Every error status an operation can answer, each with its `{"detail": ...}` body, so the
# published schema is the whole contract (FastAPI alone documents neither 400, our 422 with a
# plain message, 404 nor 413).
_BAD_BODY = _error("The body cannot be parsed (not UTF-8 JSON, broken multipart)")
_NOT_FOUND = _error("An image id that is not indexed")
_TOO_LARGE = _error("Body or upload over the configured limit")
_MALFORMED = _error("The request is malformed; `detail` says how")
_NOT_READY = _error("The model is not ready")
_QUERY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _BAD_BODY,
    413: _TOO_LARGE,
    422: _MALFORMED,
    503: _NOT_READY,
}
_ImageId = Annotated[int, Path(ge=0, le=MAX_SQL_INT, description="Id of an indexed file.")]


@router.post(
    "/search",
    response_model=SearchResponse,
    responses={**_QUERY_ERRORS, 404: _NOT_FOUND},
    **declare(Access.PRIVATE),
)
async def search(body: SearchRequest, state: StateDep) -> SearchResponse:
    """Search with weighted text, image (base64), image_id and embedding terms."""
    terms = body.to_terms()
    return await _run_search(
        state, terms, k=body.k, offset=body.offset, path_prefix=body.filters.path_prefix
    )


# Refused in read-only mode with the other upload routes: a public instance takes no files.
@router.post(
    "/search/upload",
    response_model=SearchResponse,
    responses=_QUERY_ERRORS,
    **declare(Access.WRITE),
)
async def search_upload(
    state: StateDep,
    images: Annotated[list[UploadFile], File(description="Example images.")] = [],  # noqa: B006
    image_weights: Annotated[list[Weight], Form(description="One weight per image.")] = [],  # noqa: B006
    text: Annotated[list[str], Form(description="Text terms.")] = [],  # noqa: B006
    text_weights: Annotated[list[Weight], Form(description="One weight per text.")] = [],  # noqa: B006
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 50,
    offset: Annotated[int, Form(ge=0, le=MAX_WINDOW)] = 0,
    path_prefix: Annotated[str, Form()] = "",
) -> SearchResponse:
    """Search with uploaded image files (multipart) plus optional text terms."""
    terms: list[Term] = [
        TextTerm(t, w) for t, w in zip(text, _weights(text_weights, len(text), "text"), strict=True)
    ]
    limit = state.services.limits.max_file_bytes
    weights = _weights(image_weights, len(images), "image")
    for upload, weight in zip(images, weights, strict=True):
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(
                f"upload {upload.filename!r} is over the {megabytes(limit)} limit"
            )
        terms.append(ImageTerm(data, weight))
    return await _run_search(state, terms, k=k, offset=offset, path_prefix=path_prefix)


def _weights(given: list[float], count: int, what: str) -> list[float]:
    if not given:
        return [1.0] * count
    if len(given) != count:
        raise QueryError(f"{len(given)} {what}_weights for {count} {what} terms")
    return given


async def _run_search(
    state: AppState, terms: list[Term], *, k: int, offset: int, path_prefix: str
) -> SearchResponse:
    if len(terms) > state.settings.server.max_terms:
        raise QueryError(f"at most {state.settings.server.max_terms} terms per query")
    state.metrics.observe_query(terms)
    page = await state.search.search(terms, k=k, offset=offset, path_prefix=path_prefix)
    return _response(state, page)


def _response(state: AppState, page: SearchPage) -> SearchResponse:
    ext = state.settings.thumbnails.format
    return SearchResponse(
        results=[
            SearchResult(
                id=hit.id,
                path=hit.path,
                score=hit.score,
                width=hit.width,
                height=hit.height,
                url=media_url(hit.path),
                thumbnail_url=thumbnail_url(hit.id, hit.content_hash, ext),
            )
            for hit in page.hits
        ],
        offset=page.offset,
        next_offset=page.next_offset,
        total_indexed=page.total_indexed,
    )


@router.get(
    "/images/{image_id}",
    response_model=ImageInfo,
    responses={404: _NOT_FOUND, 422: _MALFORMED},
    **declare(Access.PRIVATE),
)
async def image_info(image_id: _ImageId, state: StateDep) -> ImageInfo:
    """Metadata of one file by id."""
    row = await asyncio.to_thread(state.services.repo.get_file, file_id=image_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image has id {image_id}")
    return ImageInfo(
        id=row.id,
        path=row.path,
        width=row.width,
        height=row.height,
        format=row.format,
        size=row.size,
        modified_ns=row.mtime_ns,
        state=row.state.value,
        error=row.error,
        url=media_url(row.path),
        thumbnail_url=thumbnail_url(row.id, row.content_hash, state.settings.thumbnails.format),
    )


@router.get("/status", response_model=StatusResponse, **declare(Access.PRIVATE))
async def status_(state: StateDep) -> StatusResponse:
    """Counts, model, device and what the background indexer is doing."""
    services = state.services
    counts = await asyncio.to_thread(services.repo.counts, space=services.space)
    state.metrics.set_counts(indexed=counts.indexed, failed=counts.failed)
    live = state.live.status
    return StatusResponse(
        indexed=counts.indexed,
        pending=live.pending,
        failed=counts.failed,
        indexing=live.indexing,
        model=services.model.spec,
        dim=services.model.dim,
        device=state.device,
        phase=str(live.phase),
        progress_done=live.done,
        progress_total=live.total,
        last_error=live.last_error,
        failing_since=live.failing_since,
        retry_at=live.retry_at,
        removals_held=live.last_report.held_removals if live.last_report else 0,
        removals_held_reason=live.last_report.held_reason if live.last_report else None,
        index=_index_status(services.keeper.status()),
    )


def _index_status(status: KeeperStatus) -> IndexStatus:
    return IndexStatus(
        kind=status.kind,
        vectors=status.vectors,
        lists=status.lists,
        nprobe=status.nprobe,
        rebuilding=status.rebuilding,
        saved=status.generation is not None and status.generation == status.saved_generation,
        last_error=status.last_error,
    )


@router.get(
    "/failures",
    response_model=FailuresResponse,
    responses={422: _MALFORMED},
    **declare(Access.PRIVATE),
)
async def failures(
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=MAX_SQL_INT)] = 0,
) -> FailuresResponse:
    """Files that could not be indexed, with the reason, by path."""
    repo = state.services.repo
    rows = await asyncio.to_thread(repo.failures, limit=limit, offset=offset)
    counts = await asyncio.to_thread(repo.counts, space=state.services.space)
    return FailuresResponse(
        failures=[FailureItem(id=row.id, path=row.path, error=row.error) for row in rows],
        total=counts.failed,
    )


@router.post(
    "/reindex",
    response_model=ReindexResponse,
    status_code=status.HTTP_202_ACCEPTED,
    **declare(Access.WRITE),
)
async def reindex(
    state: StateDep,
    allow_mass_removal: Annotated[
        bool,
        Query(description="Confirm that files which vanished all at once are really gone."),
    ] = False,
) -> ReindexResponse:
    """Start a rescan of the library in the background (folded into one if one is queued)."""
    state.live.request_rescan(allow_mass_removal=allow_mass_removal)
    return ReindexResponse()


@router.post(
    "/mse", response_model=list[MseResult], responses=_QUERY_ERRORS, **declare(Access.PRIVATE)
)
async def mse(body: MseRequest, state: StateDep) -> list[MseResult]:
    """The original Meme Search Engine's query format, for its front end and scripts."""
    terms = body.to_terms()
    state.metrics.observe_query(terms)
    page = await state.search.search(terms, k=body.top_k, max_k=MSE_MAX_K)
    return [MseResult(score=hit.score, file=hit.path) for hit in page.hits]
