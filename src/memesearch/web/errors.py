"""Domain errors → HTTP responses, in one place; the API never answers 500 for bad input."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from memesearch.errors import (
    ImageDecodeError,
    LibraryError,
    MemesearchError,
    ModelNotReady,
    QueryError,
    UnknownImageError,
)

log = logging.getLogger(__name__)


class PayloadTooLarge(MemesearchError):
    """A request body or upload is over the configured limit."""


# Most specific first: the first matching class decides the status.
STATUS_BY_ERROR: tuple[tuple[type[MemesearchError], int], ...] = (
    (UnknownImageError, 404),
    (PayloadTooLarge, 413),
    (ImageDecodeError, 422),
    (QueryError, 422),
    (ModelNotReady, 503),
    (LibraryError, 503),
)


def status_for(error: MemesearchError) -> int:
    """The HTTP status a domain error maps to (500 only for our own store/model failures)."""
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return 500


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on `app`."""

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MemesearchError)
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": describe_validation(exc)}, status_code=422)

    app.add_exception_handler(MemesearchError, domain_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


def describe_validation(exc: RequestValidationError) -> list[dict[str, object]]:
    """Pydantic's errors without the offending input: it may be NaN (not JSON) or megabytes."""
    return [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
