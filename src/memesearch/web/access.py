"""Who may call a route, declared where the route is declared, read back from the route table.

Every route says what it is with `declare(...)` in its decorator: public (anyone, even with auth
on), private (credentials when auth is on; the default of a GET) or writing (credentials, and
refused in read-only mode). A page for people says so too: unauthenticated browsers are sent to
the login form instead of getting a 401. The auth middleware and the OpenAPI document both read
these marks from the app's routes, so a new or renamed route cannot escape either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Scope

ACCESS_KEY: Final = "x-memesearch-access"  # in a route's openapi_extra, hence in /openapi.json
PAGE_KEY: Final = "x-memesearch-page"
_READING_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(StrEnum):
    """What a route asks of a caller."""

    PUBLIC = "public"  # no credentials ever: health, login, vendored static files
    PRIVATE = "private"  # credentials when auth is on; served in read-only mode
    WRITE = "write"  # credentials when auth is on; refused in read-only mode


def declare(access: Access, *, page: bool = False) -> dict[str, Any]:
    """Keyword arguments for a route decorator: `@router.post(path, **declare(Access.WRITE))`."""
    extra: dict[str, Any] = {ACCESS_KEY: access.value}
    if page:
        extra[PAGE_KEY] = True
    return {"openapi_extra": extra}


class PublicMount(Mount):
    """A mounted app anyone may fetch (the page's vendored scripts and styles)."""


@dataclass(frozen=True, slots=True)
class RouteRule:
    """The access of one route, as the middleware and the OpenAPI document see it."""

    path: str  # the route's path template, e.g. "/api/images/{image_id}"
    methods: frozenset[str]
    access: Access
    page: bool = False
    declared: bool = True  # False: the default for its methods, not written at the route


def rule_of(route: BaseRoute) -> RouteRule | None:
    """The rule a route declares (or defaults to); None for what is neither route nor mount."""
    if isinstance(route, Mount):
        access = Access.PUBLIC if isinstance(route, PublicMount) else Access.PRIVATE
        return RouteRule(route.path, frozenset({"GET", "HEAD"}), access)
    if not isinstance(route, APIRoute):
        return None
    methods = frozenset(route.methods or ())
    extra = route.openapi_extra or {}
    if ACCESS_KEY in extra:
        access, declared = Access(extra[ACCESS_KEY]), True
    else:  # an unmarked route that could change something is taken to write: fail safe
        reads = methods <= _READING_METHODS
        access, declared = (Access.PRIVATE if reads else Access.WRITE), False
    return RouteRule(route.path, methods, access, bool(extra.get(PAGE_KEY)), declared)


def flatten(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes of a table, those of included routers in place of the router.

    Our routers carry their prefix in their own paths and are included without one.
    """
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI ≥ 0.165 nests routers
        if included is not None:
            yield from flatten(included.routes)
        else:
            yield route


def rules(routes: Iterable[BaseRoute]) -> list[tuple[BaseRoute, RouteRule]]:
    """Every route of a route table (included routers flattened) with its rule."""
    found = []
    for route in flatten(routes):
        rule = rule_of(route)
        if rule is not None:
            found.append((route, rule))
    return found


def rule_for(scope: Scope, table: Iterable[tuple[BaseRoute, RouteRule]]) -> RouteRule:
    """The rule of the route that will answer this request.

    A path no route knows is private (auth on: 401, not a hint at what exists). A known path
    asked with a method it does not serve (a 405 to come) takes that route's rule.
    """
    partial: RouteRule | None = None
    for route, rule in table:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return rule
        if match is Match.PARTIAL and partial is None:
            partial = rule
    return partial or RouteRule(scope.get("path", ""), frozenset(), Access.PRIVATE, declared=False)


def cache_control(auth_mode: str, *, seconds: int, immutable: bool = False) -> str:
    """Cache-Control of a response only this instance's users may see.

    With auth on it is `private`: a browser may keep it, a shared proxy must not hand it to
    whoever asks next.
    """
    scope = "public" if auth_mode == "off" else "private"
    return f"{scope}, max-age={seconds}" + (", immutable" if immutable else "")
