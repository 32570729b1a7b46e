"""Access control: off, a bearer token (API) + login form and session cookie (UI), or HTTP basic.

One pure ASGI middleware guards every route but a small public set; a read-only mode refuses the
endpoints that change state or store files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from memesearch.config import AuthSettings
from memesearch.web.pages import templates

COOKIE = "memesearch_session"
PUBLIC_PATHS = ("/login", "/static/")  # plus /healthz always, /metrics when configured
READ_ONLY_REFUSED = ("/api/reindex", "/api/search/upload", "/upload")
_HTML_PATHS = ("/", "/results", "/status")

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
        if not expires.isdigit() or int(expires) < time.time():
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        settings = self.gate.settings
        if settings.read_only and scope["method"] == "POST" and path in READ_ONLY_REFUSED:
            response: Response = _json(403, "this instance is read-only")
        elif self._public(path) or self.gate.allows(headers):
            await self.app(scope, receive, send)
            return
        else:
            response = self._challenge(path, scope.get("query_string", b""), headers)
        await response(scope, receive, send)

    def _public(self, path: str) -> bool:
        settings = self.gate.settings
        if settings.mode == "off" or path == "/healthz" or path.startswith(PUBLIC_PATHS):
            return True
        return path == "/metrics" and settings.public_metrics

    def _challenge(self, path: str, query: bytes, headers: Headers) -> Response:
        if self.gate.settings.mode == "basic":
            response = _json(401, "authentication required")
            response.headers["WWW-Authenticate"] = 'Basic realm="memesearch", charset="UTF-8"'
            return response
        target = path + ("?" + query.decode("latin-1") if query else "")
        login = "/login?next=" + quote(target, safe="")
        if headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": login})
        if path in _HTML_PATHS and "text/html" in headers.get("accept", ""):
            return RedirectResponse(login, status_code=303)
        response = _json(401, "authentication required: send 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="memesearch"'
        return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/") -> Response:
    """The login page of token mode."""
    return templates.TemplateResponse(request, "login.html", {"next": _local(next), "error": ""})


@router.post("/login")
async def login(
    request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
) -> Response:
    """Check the token; on success set the session cookie and go where the user was going."""
    gate: Gate = request.app.state.gate
    if gate.settings.mode != "token" or not _same(token, gate.settings.token):
        context = {"next": _local(next), "error": "That token is not right."}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
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


@router.post("/logout")
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
