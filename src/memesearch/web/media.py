"""Originals under /media and thumbnails under /thumbs: only indexed files, never outside root."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse

from memesearch.records import FileRow, FileState
from memesearch.web.access import Access, cache_control, declare
from memesearch.web.library_files import UnsafePathError, content_type_for, etag_for, library_file
from memesearch.web.state import AppState, StateDep

router = APIRouter(include_in_schema=False)
_ORIGINAL_SECONDS = 3600  # the file may be replaced under the same path
_VERSIONED_SECONDS = 31_536_000  # the URL names the content: it never changes


@router.get("/media/{path:path}", **declare(Access.PRIVATE))
async def original(path: str, request: Request, state: StateDep) -> Response:
    """The original file, if it is an indexed file inside the library."""
    row = await asyncio.to_thread(state.services.repo.file_by_path, path=path)
    if row is None or row.state is not FileState.OK:
        raise _not_found()
    cache = cache_control(state.settings.server.auth.mode, seconds=_ORIGINAL_SECONDS)
    return _serve(request, _original_file(state, row), cache)


@router.get("/thumbs/{image_id}.{extension}", **declare(Access.PRIVATE))
async def thumbnail(
    image_id: int, extension: str, request: Request, state: StateDep, v: str = ""
) -> Response:
    """The thumbnail (made now if it went missing), or the original when it is small already."""
    row = await asyncio.to_thread(state.services.repo.get_file, file_id=image_id)
    if row is None or row.state is not FileState.OK or row.content_hash is None:
        raise _not_found()
    versioned = bool(v) and row.content_hash.startswith(v)
    mode = state.settings.server.auth.mode
    if versioned:
        cache = cache_control(mode, seconds=_VERSIONED_SECONDS, immutable=True)
    else:
        cache = cache_control(mode, seconds=_ORIGINAL_SECONDS)
    thumb = state.thumbnailer.thumbnails.path_for(row.content_hash)
    if await asyncio.to_thread(thumb.is_file):
        return _serve(request, thumb, cache)
    original = _original_file(state, row)
    # Deleted cache, changed format, or an old index: make it rather than send a 12 MP photo.
    if await state.thumbnailer.ensure(original, row.content_hash):
        return _serve(request, thumb, cache)
    return _serve(request, original, cache)


def _original_file(state: AppState, row: FileRow) -> Path:
    lib = state.settings.library
    try:
        return library_file(
            lib.path,
            row.path,
            allow_hidden=lib.include_hidden,
            follow_symlinks=lib.follow_symlinks,
            indexed_as=(row.size, row.mtime_ns),
        )
    except UnsafePathError as exc:
        raise _not_found() from exc


def _serve(request: Request, path: Path, cache_control: str) -> Response:
    try:
        etag = etag_for(path)
    except OSError as exc:
        raise _not_found() from exc
    # nosniff + a sandbox CSP: a file is only ever rendered as the image type we claim.
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return FileResponse(path, media_type=content_type_for(path), headers=headers)


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "not found")
