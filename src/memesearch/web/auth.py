"""Access control: off, a bearer token (API) + login form and session cookie (UI), or HTTP basic.

One pure ASGI middleware guards every route but those declared public; a read-only mode refuses
the routes declared as writing (see `access.py`). `document_access` tells the OpenAPI schema the
same, from the same declarations.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from memesearch.config import AuthSettings
from memesearch.web.access import Access, RouteRule, declare, rule_for, rules
from memesearch.web.schemas import ErrorResponse
from memesearch.web.state import StateDep

COOKIE = "memesearch_session"
_MAX_EXPIRY_DIGITS = 12  # seconds since 1970: good for the next 30,000 years

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Gate:
    """Decides who may pass; built once from the settings."""

    settings: AuthSettings

    def allows(self, headers: Headers) -> bool:
        """Whether the request carries valid credentials for the configured mode."""
        mode = self.settings.mode
        if mode == "off":
            return True
        authorization = headers.get("authorization", "")
        if mode == "basic":
            return self._basic_ok(authorization)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and _same(token, self.settings.token):
            return True
        return self.session_ok(_cookie(headers, COOKIE))

    def _basic_ok(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared, always: no early exit that would time the username.
        return _same(user, self.settings.username) & _same(password, self.settings.password)

    def new_session(self) -> str:
        """A signed cookie value that expires after `session_days`."""
        expires = int(time.time() + self.settings.session_days * 86400)
        return f"{expires}.{self._sign(str(expires))}"

    def session_ok(self, value: str) -> bool:
        """Whether a session cookie is ours and not expired."""
        expires, _, signature = value.partition(".")
        # ASCII digits only ("²³".isdigit() is true, and int() refuses it), and a length a
        # timestamp can have (int() refuses 4,300+ digits): anything else is simply not ours.
        if not (expires.isascii() and expires.isdigit()) or len(expires) > _MAX_EXPIRY_DIGITS:
            return False
        if int(expires) < time.time():
            return False
        return _same(signature, self._sign(expires))

    def _sign(self, message: str) -> str:
        # Keyed by the token: changing the token logs every session out.
        key = hashlib.sha256(b"memesearch-session:" + self.settings.token.encode()).digest()
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class AuthMiddleware:
    """Turns away requests without credentials; HTML pages redirect to the login form."""

    def __init__(self, app: ASGIApp, *, gate: Gate) -> None:
        self.app = app
        self.gate = gate
        self._table: list[tuple[BaseRoute, RouteRule]] | None = None  # read on the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._table is None:  # the app's routes are all declared by its first request
            self._table = rules(scope["app"].router.routes)
        rule = rule_for(scope, self._table)
        headers = Headers(scope=scope)
        settings = self.gate.settings
        if is_refused(scope["method"], rule, settings):
            response: Response = _json(403, "this instance is read-only")
        elif is_public(rule, settings) or self.gate.allows(headers):
            await self.app(scope, receive, send)
            return
        else:
            response = self._challenge(scope, rule, headers)
        await response(scope, receive, send)

    def _challenge(self, scope: Scope, rule: RouteRule, headers: Headers) -> Response:
        if self.gate.settings.mode == "basic":
            response = _json(401, "authentication required")
            response.headers["WWW-Authenticate"] = 'Basic realm="memesearch", charset="UTF-8"'
            return response
        query: bytes = scope.get("query_string", b"")
        target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
        login = "/login?next=" + quote(target, safe="")
        if headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": login})
        if rule.page and "text/html" in headers.get("accept", ""):
            return RedirectResponse(login, status_code=303)
        response = _json(401, "authentication required: send 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="memesearch"'
        return response


def is_public(rule: RouteRule, settings: AuthSettings) -> bool:
    """Whether the gate lets requests for a route through without credentials."""
    return settings.mode == "off" or rule.access is Access.PUBLIC


def is_refused(method: str, rule: RouteRule, settings: AuthSettings) -> bool:
    """Whether read-only mode turns the request away, whoever sends it."""
    writes = rule.access is Access.WRITE and method.upper() not in ("GET", "HEAD", "OPTIONS")
    return settings.read_only and writes


def document_access(
    schema: dict[str, Any], table: Iterable[RouteRule], settings: AuthSettings
) -> dict[str, Any]:
    """Add to an OpenAPI `schema` what the gate asks of each operation: credentials, read-only."""
    components = schema.setdefault("components", {})
    error = _error_schema(components.setdefault("schemas", {}))
    scheme = _SCHEMES.get(settings.mode)
    if scheme is not None:
        components.setdefault("securitySchemes", {})[scheme.name] = {
            "type": "http",
            "scheme": scheme.http,
            "description": scheme.description,
        }
    paths = schema.get("paths", {})
    for rule in table:
        for method in sorted(rule.methods):
            operation = paths.get(rule.path, {}).get(method.lower())
            if operation is None:
                continue  # not in the schema (pages, media) or not this method
            responses = operation.setdefault("responses", {})
            if scheme is not None and not is_public(rule, settings):
                operation["security"] = [{scheme.name: []}]
                responses["401"] = _error_response(scheme.refusal, error, challenge=True)
            if is_refused(method, rule, settings):
                responses["403"] = _error_response("This instance is read-only", error)
    return schema


@dataclass(frozen=True, slots=True)
class _Scheme:
    """How the OpenAPI schema names and explains one mode's credentials."""

    name: str
    http: str  # an http scheme: what Swagger UI's "Authorize" dialog and client generators know
    description: str
    refusal: str


_SCHEMES = {
    "token": _Scheme(
        "bearerAuth",
        "bearer",
        "The `server.auth.token` of this instance.",
        "No or wrong credentials: send `Authorization: Bearer <token>`",
    ),
    "basic": _Scheme(
        "basicAuth",
        "basic",
        "`server.auth.username` and `server.auth.password`.",
        "No or wrong username and password",
    ),
}
_REF = "#/components/schemas/"


def _error_response(
    description: str, error: dict[str, str], *, challenge: bool = False
) -> dict[str, Any]:
    """A documented error status whose body is the API's usual `{"detail": ...}`."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": dict(error)}},
    }
    if challenge:
        header = {"description": "The scheme to authenticate with", "schema": {"type": "string"}}
        response["headers"] = {"WWW-Authenticate": header}
    return response


def _error_schema(schemas: dict[str, Any]) -> dict[str, str]:
    """A reference to the error body, added to `schemas` if no operation brought it in yet."""
    if "ErrorResponse" not in schemas:
        definition = ErrorResponse.model_json_schema(ref_template=_REF + "{model}")
        for name, nested in definition.pop("$defs", {}).items():
            schemas.setdefault(name, nested)
        schemas["ErrorResponse"] = definition
    return {"$ref": _REF + "ErrorResponse"}


@router.get("/login", response_class=HTMLResponse, **declare(Access.PUBLIC, page=True))
async def login_form(request: Request, state: StateDep, next: str = "/") -> Response:
    """The login page of token mode."""
    context = {"next": _local(next), "error": ""}
    return state.templates.TemplateResponse(request, "login.html", context)


@router.post("/login", **declare(Access.PUBLIC))
async def login(
    request: Request,
    state: StateDep,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the token; on success set the session cookie and go where the user was going."""
    gate: Gate = request.app.state.gate
    if gate.settings.mode != "token" or not _same(token, gate.settings.token):
        context = {"next": _local(next), "error": "That token is not right."}
        return state.templates.TemplateResponse(request, "login.html", context, status_code=401)
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        COOKIE,
        gate.new_session(),
        max_age=int(gate.settings.session_days * 86400),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", **declare(Access.PRIVATE))  # forgets a cookie: no write
async def logout() -> Response:
    """Forget the session."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _local(target: str) -> str:
    """Only same-site paths: a login link must not bounce users to another site."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _cookie(headers: Headers, name: str) -> str:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def _json(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)
