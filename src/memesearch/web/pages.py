"""HTML pages and HTMX partials: the same SearchService as /api, rendered for people."""

from __future__ import annotations

import asyncio
import logging
import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote_plus

from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams

from memesearch.config import megabytes
from memesearch.errors import MemesearchError, QueryError
from memesearch.search.query import ImageIdTerm, ImageTerm, Term, TextTerm
from memesearch.search.service import MAX_WINDOW, SearchPage
from memesearch.web.access import Access, cache_control, declare
from memesearch.web.errors import PayloadTooLarge, status_for
from memesearch.web.state import AppState, StateDep
from memesearch.web.uploads import is_upload_hash, media_type
from memesearch.web.urls import media_url, thumbnail_url

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

PAGE_SIZE = 36
_YEAR = 31_536_000
_NO_STORE = {"Cache-Control": "no-store"}
_PHASES = {"scan": "Scanning", "hash": "Hashing", "embed": "Embedding", "done": "Finishing"}


class Kind(StrEnum):
    """The kinds of term a page URL can carry."""

    TEXT = "text"
    ID = "id"  # an indexed image, by id
    IMG = "img"  # an uploaded image, by its hash in the upload cache


@dataclass(frozen=True, slots=True)
class TermSpec:
    """One `t=kind:weight:value` URL parameter, parsed."""

    kind: Kind
    weight: float
    value: str

    @property
    def param(self) -> str:
        """The parameter's canonical text."""
        return f"{self.kind}:{self.weight:g}:{self.value}"


@dataclass(frozen=True, slots=True)
class TermView:
    """A term as the query builder shows it."""

    kind: str
    value: str
    weight: float
    weight_label: str
    label: str = ""
    thumb: str = ""
    slider: float = 1.0  # the weight clamped to the slider's range; the URL keeps the exact one
    primary: bool = False  # the text field that the no-JavaScript form submits as `q`


@dataclass(frozen=True, slots=True)
class Tile:
    """One search result as a tile of the grid."""

    id: int
    name: str
    path: str
    score: str
    width: int
    height: int
    url: str
    thumb: str
    more_url: str


@dataclass(frozen=True, slots=True)
class StatusView:
    """The indexed count and what the background indexer is doing."""

    indexed: str
    failed: int
    indexing: bool
    phase: str
    done: int
    total: int
    warning: str | None = None  # e.g. removals held back: what the user should know or do


def parse_query(params: QueryParams, *, max_terms: int) -> tuple[list[TermSpec], int]:
    """The terms (`q`, then each `t`) and offset of a page URL, or a QueryError saying why not."""
    specs = [TermSpec(Kind.TEXT, 1.0, q.strip()) for q in params.getlist("q") if q.strip()]
    specs += [
        _parse_term(raw, n) for n, raw in enumerate(params.getlist("t"), start=len(specs) + 1)
    ]
    if len(specs) > max_terms:
        raise QueryError(f"a query can have at most {max_terms} terms, this one has {len(specs)}")
    raw_offset = params.get("offset", "0").strip() or "0"
    if not raw_offset.isdigit() or int(raw_offset) > MAX_WINDOW:
        raise QueryError(
            f"offset must be a whole number from 0 to {MAX_WINDOW}, not {raw_offset!r}"
        )
    return specs, int(raw_offset)


def _parse_term(raw: str, position: int) -> TermSpec:
    kind, _, rest = raw.partition(":")
    weight, colon, value = rest.partition(":")
    where = f"term {position} ({raw[:40]!r})"
    if not colon:
        raise QueryError(f"{where} should look like kind:weight:value, e.g. text:1:cat")
    if kind not in Kind.__members__.values():
        raise QueryError(f"{where}: unknown kind {kind!r}; use text, id or img")
    try:
        number = float(weight)
    except ValueError:
        raise QueryError(f"{where}: the weight {weight!r} is not a number") from None
    if not math.isfinite(number):
        raise QueryError(f"{where}: the weight must be a finite number")
    if kind == Kind.ID and not value.isdigit():
        raise QueryError(f"{where}: an image id is a whole number")
    if kind == Kind.IMG and not is_upload_hash(value):
        raise QueryError(f"{where}: not the hash of an uploaded image")
    if kind == Kind.TEXT and not value.strip():
        raise QueryError(f"{where}: the text is empty")
    return TermSpec(Kind(kind), number, value.strip() if kind == Kind.TEXT else value)


def query_string(specs: Sequence[TermSpec]) -> str:
    """The `t=` parameters of a page URL that reproduces `specs`."""
    return "&".join("t=" + quote_plus(spec.param, safe=":") for spec in specs)


async def build_terms(state: AppState, specs: Sequence[TermSpec]) -> list[Term]:
    """Query terms for the SearchService; uploaded images are read from the upload cache."""
    terms: list[Term] = []
    for position, spec in enumerate(specs, start=1):
        if spec.kind is Kind.TEXT:
            terms.append(TextTerm(spec.value, spec.weight))
        elif spec.kind is Kind.ID:
            terms.append(ImageIdTerm(int(spec.value), spec.weight))
        else:
            data = await asyncio.to_thread(state.uploads.get, spec.value)
            if data is None:
                raise QueryError(f"term {position}: that uploaded image has expired; add it again")
            terms.append(ImageTerm(data, spec.weight))
    return terms


@router.get("/", **declare(Access.PRIVATE, page=True))
async def home(request: Request, state: StateDep) -> Response:
    """The search page: query builder, status and the first page of results."""
    return await _render(request, state, partial=False)


@router.get("/results", **declare(Access.PRIVATE, page=True))
async def results(request: Request, state: StateDep) -> Response:
    """The next page of tiles for infinite scroll (HTMX), else the whole page."""
    response = await _render(request, state, partial="hx-request" in request.headers)
    response.headers["Vary"] = "HX-Request"
    return response


@router.get("/status", **declare(Access.PRIVATE, page=True))
async def status_partial(request: Request, state: StateDep) -> Response:
    """The indexed count and live progress; it polls itself only while indexing."""
    return state.templates.TemplateResponse(
        request, "_status.html", {"status": await _status(state)}, headers=_NO_STORE
    )


@router.post("/upload", **declare(Access.WRITE))  # stores a file
async def upload(
    state: StateDep, image: Annotated[UploadFile, File(description="An example image.")]
) -> JSONResponse:
    """Keep an example image in the upload cache; its hash makes an `img:` term."""
    limits = state.services.limits
    data = await image.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise PayloadTooLarge(f"the image is over the {megabytes(limits.max_file_bytes)} limit")
    key = await asyncio.to_thread(state.uploads.put, data, limits)
    return JSONResponse({"hash": key, "thumbnail": f"/uploads/{key}"})


@router.get("/uploads/{key}", **declare(Access.PRIVATE))
async def uploaded(key: str, state: StateDep) -> Response:
    """An image from the upload cache, so the query builder can show it."""
    data = await asyncio.to_thread(state.uploads.get, key) if is_upload_hash(key) else None
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no uploaded image has this hash")
    cache = cache_control(state.settings.server.auth.mode, seconds=_YEAR, immutable=True)
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    return Response(data, media_type=media_type(data), headers=headers)


async def _render(request: Request, state: AppState, *, partial: bool) -> Response:
    context: dict[str, Any] = {"error": None, "tiles": [], "next_url": None, "query": ""}
    specs: list[TermSpec] = []
    offset = 0
    code = status.HTTP_200_OK
    try:
        specs, offset = parse_query(request.query_params, max_terms=state.settings.server.max_terms)
        if specs:
            terms = await build_terms(state, specs)
            state.metrics.observe_query(terms)
            page = await state.search.search(terms, k=PAGE_SIZE, offset=offset)
            context |= _results_context(state, specs, page)
    except MemesearchError as exc:
        code = status_for(exc)
        if code >= 500:
            log.error("page %s failed: %s", request.url, exc)
        message = str(exc)
        context["error"] = message[:1].upper() + message[1:]
    context |= {"offset": offset, "searched": bool(specs) and context["error"] is None}
    if partial:  # HTMX swaps only 2xx answers: the message must arrive as one
        return state.templates.TemplateResponse(request, "_results.html", context)
    context |= {
        "terms": _term_views(state, specs),
        "status": await _status(state),
        "title": " · ".join(_title_part(spec) for spec in specs),
    }
    return state.templates.TemplateResponse(request, "home.html", context, status_code=code)


def _results_context(state: AppState, specs: list[TermSpec], page: SearchPage) -> dict[str, Any]:
    query = query_string(specs)
    ext = state.settings.thumbnails.format
    tiles = [
        Tile(
            id=hit.id,
            name=posixpath.basename(hit.path),
            path=hit.path,
            score=f"{hit.score:.3f}",
            width=hit.width or 1,
            height=hit.height or 1,
            url=media_url(hit.path),
            thumb=thumbnail_url(hit.id, hit.content_hash, ext),
            more_url="/?" + query_string(_with_like(specs, hit.id)),
        )
        for hit in page.hits
    ]
    next_offset = page.next_offset
    return {
        "query": query,
        "tiles": tiles,
        "shown": page.offset + len(tiles),
        "total_indexed": f"{page.total_indexed:,}",
        "empty_index": page.total_indexed == 0,
        "next_url": None if next_offset is None else f"/results?{query}&offset={next_offset}",
        "next_page_url": None if next_offset is None else f"/?{query}&offset={next_offset}",
    }


def _with_like(specs: list[TermSpec], file_id: int) -> list[TermSpec]:
    like = TermSpec(Kind.ID, 1.0, str(file_id))
    return [spec for spec in specs if replace(spec, weight=1.0) != like] + [like]


def _term_views(state: AppState, specs: list[TermSpec]) -> list[TermView]:
    ext = state.settings.thumbnails.format
    first_text = next((i for i, spec in enumerate(specs) if spec.kind is Kind.TEXT), None)
    views = []
    for i, spec in enumerate(specs):
        label = _weight_label(spec.weight)
        slider = max(-2.0, min(2.0, spec.weight))
        view = TermView(
            spec.kind, spec.value, spec.weight, label, slider=slider, primary=i == first_text
        )
        if spec.kind is Kind.ID:
            view = replace(
                view, label="Indexed image", thumb=thumbnail_url(int(spec.value), None, ext)
            )
        elif spec.kind is Kind.IMG:
            view = replace(view, label="Your image", thumb=f"/uploads/{spec.value}")
        views.append(view)
    if first_text is None:  # always a field to type into, even for an image-only query
        views.insert(0, TermView(Kind.TEXT, "", 1.0, _weight_label(1.0), primary=True))
    return views


def _weight_label(weight: float) -> str:
    sign = "−" if weight < 0 else "+" if weight > 0 else ""  # a real minus sign, easy to see
    return f"{sign}{abs(weight):.1f}"


def _title_part(spec: TermSpec) -> str:
    sign = "−" if spec.weight < 0 else ""
    return sign + {Kind.TEXT: spec.value, Kind.ID: "an image", Kind.IMG: "your image"}[spec.kind]


async def _status(state: AppState) -> StatusView:
    counts = await asyncio.to_thread(state.services.repo.counts, space=state.services.space)
    live = state.live.status
    phase = _PHASES.get(str(live.phase), str(live.phase).capitalize())
    return StatusView(
        indexed=f"{counts.indexed:,}",
        failed=counts.failed,
        indexing=live.indexing,
        phase=phase,
        done=live.done,
        total=live.total,
        warning=live.last_report.held_reason if live.last_report else None,
    )
