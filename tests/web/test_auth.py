"""Access control in each mode, proved route by route over the app's real route table."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount

from memesearch.config import AuthSettings
from memesearch.web.access import Access, RouteRule
from memesearch.web.auth import Gate, document_access
from memesearch.web.schemas import ErrorResponse
from tests.web.conftest import Served, served_app

TOKEN = "correct-horse-battery-staple"
PUBLIC = {"/healthz", "/readyz", "/login"}


def flatten(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Routes of included routers too (our routers carry their prefix themselves)."""
    flat: list[BaseRoute] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        flat += flatten(included.routes) if included is not None else [route]
    return flat


def routes(served: Served) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the app serves."""
    found = []
    media_path = served.corpus.good[0]
    for route in flatten(served.client.app.routes):  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            found.append(("GET", route.path + "/app.css"))
            continue
        path = getattr(route, "path", "")
        path = path.replace("{path:path}", media_path).replace("{image_id}", "1")
        path = path.replace("{extension}", "webp").replace("{hash}", "a" * 64)
        methods = route.methods if isinstance(route, APIRoute) else getattr(route, "methods", None)
        for method in sorted(methods or {"GET"}):
            if method != "HEAD":
                found.append((method, path))
    return found


@pytest.fixture(scope="module")
def token_mode(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    yield from served_app(
        tmp_path_factory.mktemp("token"),
        tiny_model_dir,
        n_good=6,
        auth={"mode": "token", "token": TOKEN},
    )


@pytest.fixture(scope="module")
def basic_mode(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    yield from served_app(
        tmp_path_factory.mktemp("basic"),
        tiny_model_dir,
        n_good=6,
        auth={
            "mode": "basic",
            "username": "meme",
            "password": "lord of memes",
            "public_metrics": True,
        },
    )


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    yield from served_app(
        tmp_path_factory.mktemp("ro"),
        tiny_model_dir,
        n_good=6,
        auth={"read_only": True},
    )


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_token_mode_guards_every_route_but_health_login_and_static(token_mode: Served) -> None:
    client = token_mode.client
    checked = 0
    for method, path in routes(token_mode):
        response = client.request(method, path, follow_redirects=False)
        public = path in PUBLIC or path.startswith("/static/")
        if public:  # the gate lets it through (the route itself may still say no)
            assert "www-authenticate" not in response.headers, (method, path)
        else:
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["www-authenticate"].startswith("Bearer")
            checked += 1
    assert checked >= 12  # the API, media, pages, metrics, docs …


def test_token_mode_accepts_the_bearer_token_and_rejects_others(token_mode: Served) -> None:
    client = token_mode.client
    body = {"terms": [{"text": "cat"}], "k": 2}
    ok = client.post("/api/search", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    for wrong in (f"Bearer {TOKEN}x", "Bearer ", f"bearer {TOKEN[:-1]}", f"Basic {TOKEN}"):
        assert (
            client.post("/api/search", json=body, headers={"Authorization": wrong}).status_code
            == 401
        )


def test_pages_redirect_to_the_login_form_and_the_session_cookie_works(token_mode: Served) -> None:
    client = token_mode.client
    page = client.get("/?q=cat", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F%3Fq%3Dcat"
    partial = client.get("/results?q=cat", headers={"HX-Request": "true"}, follow_redirects=False)
    assert partial.status_code == 401 and partial.headers["hx-redirect"].startswith("/login")
    form = client.get("/login?next=/%3Fq%3Dcat")
    assert form.status_code == 200 and 'name="token"' in form.text
    wrong = client.post("/login", data={"token": "nope", "next": "/"}, follow_redirects=False)
    assert wrong.status_code == 401 and "not right" in wrong.text
    signed = client.post("/login", data={"token": TOKEN, "next": "/?q=cat"}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/?q=cat"
    cookie = signed.cookies["memesearch_session"]
    assert "httponly" in signed.headers["set-cookie"].lower()
    try:
        client.cookies.set("memesearch_session", cookie)
        assert client.get("/?q=cat").status_code == 200
        assert client.get(f"/media/{token_mode.corpus.good[0]}").status_code == 200
        client.cookies.set("memesearch_session", re.sub(r"^\d+", "99999999999", cookie))
        assert client.get("/api/status").status_code == 401  # a forged expiry fails the signature
    finally:
        client.cookies.clear()
    out = client.post("/logout", follow_redirects=False)
    assert out.status_code in (303, 401)


@pytest.mark.parametrize(
    "cookie", ["²³.x", "¹²³.sig", "1" * 5000 + ".x", ".", "", "-5.x", "99999999999.", "x" * 10_000]
)
def test_a_malformed_session_cookie_is_a_plain_401(token_mode: Served, cookie: str) -> None:
    # Raw latin-1 bytes, as a hostile client sends them (a cookie jar would refuse "²").
    header = (b"cookie", f"memesearch_session={cookie}".encode("latin-1"))
    response = token_mode.client.get("/api/status", headers=[header])
    assert response.status_code == 401
    assert response.json()["detail"].startswith("authentication required")


def test_private_responses_are_not_for_shared_caches(token_mode: Served) -> None:
    client = token_mode.client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"terms": [{"text": "cat"}], "k": 1}
    hit = client.post("/api/search", json=body, headers=auth).json()["results"][0]
    image = (token_mode.settings.library.path / hit["path"]).read_bytes()
    key = client.post("/upload", files={"image": ("a.png", image)}, headers=auth).json()["hash"]
    for url in (hit["url"], hit["thumbnail_url"], f"/uploads/{key}"):
        response = client.get(url, headers=auth)
        assert response.status_code == 200, url
        assert response.headers["cache-control"].startswith("private, max-age="), url
    assert client.get("/static/app.css").headers.get("cache-control", "") == ""  # public


def test_login_never_redirects_off_site(token_mode: Served) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = token_mode.client.post(
            "/login", data={"token": TOKEN, "next": target}, follow_redirects=False
        )
        assert response.headers["location"] == "/"
    token_mode.client.cookies.clear()


def test_basic_mode_challenges_and_admits(basic_mode: Served) -> None:
    client = basic_mode.client
    for method, path in routes(basic_mode):
        response = client.request(method, path, follow_redirects=False)
        if path in ("/healthz", "/readyz", "/metrics", "/login") or path.startswith("/static/"):
            assert "www-authenticate" not in response.headers, (method, path)
        else:
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Basic")
    good = basic("meme", "lord of memes")
    assert client.get("/api/status", headers=good).status_code == 200
    assert client.get("/", headers={**good, "Accept": "text/html"}).status_code == 200
    for user, password in (("meme", "lord of meme"), ("Meme", "lord of memes"), ("", "")):
        assert client.get("/api/status", headers=basic(user, password)).status_code == 401
    assert client.get("/api/status", headers={"Authorization": "Basic %%%"}).status_code == 401
    assert "memesearch_files_indexed" in client.get("/metrics").text  # opened separately


def test_read_only_mode_refuses_changes_and_uploads_but_searches(read_only: Served) -> None:
    client = read_only.client
    assert client.post("/api/reindex").status_code == 403
    image = (read_only.settings.library.path / read_only.corpus.good[0]).read_bytes()
    assert (
        client.post("/api/search/upload", files=[("images", ("a.png", image))]).status_code == 403
    )
    assert client.post("/upload", files=[("image", ("a.png", image))]).status_code == 403
    assert client.post("/api/search", json={"terms": [{"text": "cat"}]}).status_code == 200
    assert client.get("/api/status").status_code == 200


def test_weak_credentials_are_refused_at_start(tmp_path: Path) -> None:
    from memesearch.config import load_settings
    from memesearch.errors import ConfigError
    from memesearch.testing import write_config

    config = write_config(
        tmp_path / "c.toml", {"server": {"auth": {"mode": "token", "token": "123"}}}
    )
    with pytest.raises(ConfigError, match="server.auth") as caught:
        load_settings(config)
    assert "123" not in str(caught.value)  # secrets are never echoed


def operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every documented operation of an OpenAPI schema, by (method, path)."""
    return {
        (method, path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


def authorization(scheme: dict[str, str], credentials: str) -> dict[str, str]:
    """The header Swagger UI's "Authorize" dialog sends for an OpenAPI http scheme."""
    assert scheme["type"] == "http"
    return {"Authorization": f"{scheme['scheme'].capitalize()} {credentials}"}


def error_body(response: dict[str, Any]) -> Any:
    return response["content"]["application/json"]["schema"]


def test_openapi_asks_for_the_bearer_token_in_token_mode(token_mode: Served) -> None:
    client = token_mode.client
    assert client.get("/openapi.json").status_code == 401  # the schema stays behind the gate
    assert client.get("/docs").status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    docs = client.get("/docs", headers=bearer)
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    schema = client.get("/openapi.json", headers=bearer).json()
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    documented = operations(schema)
    assert ("post", "/api/search") in documented and len(documented) >= 7
    for key, operation in documented.items():
        assert operation["security"] == [{"bearerAuth": []}], key
        unauthorized = operation["responses"]["401"]
        assert error_body(unauthorized) == {"$ref": "#/components/schemas/ErrorResponse"}, key
        assert "WWW-Authenticate" in unauthorized["headers"]
        assert "403" not in operation["responses"], key  # writable instance
    # What /docs does after "Authorize": the scheme's header, on a documented operation.
    assert client.get("/api/status", headers=authorization(scheme, TOKEN)).status_code == 200
    refused = client.get("/api/status")
    assert refused.status_code == 401
    assert ErrorResponse.model_validate(refused.json()).detail == (
        "authentication required: send 'Authorization: Bearer <token>'"
    )


def test_openapi_asks_for_a_password_in_basic_mode(basic_mode: Served) -> None:
    credentials = base64.b64encode(b"meme:lord of memes").decode()
    client = basic_mode.client
    schema = client.get("/openapi.json", headers={"Authorization": f"Basic {credentials}"}).json()
    assert set(schema["components"]["securitySchemes"]) == {"basicAuth"}
    scheme = schema["components"]["securitySchemes"]["basicAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "basic"
    for key, operation in operations(schema).items():
        assert operation["security"] == [{"basicAuth": []}], key
        assert "401" in operation["responses"], key
    assert client.get("/api/status", headers=authorization(scheme, credentials)).status_code == 200


def test_openapi_claims_no_credentials_when_auth_is_off_and_403_where_read_only_refuses(
    read_only: Served,
) -> None:
    client = read_only.client
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema["components"] and "security" not in schema
    documented = operations(schema)
    refused = {key for key, operation in documented.items() if "403" in operation["responses"]}
    assert refused == {("post", "/api/reindex"), ("post", "/api/search/upload")}
    for key, operation in documented.items():
        assert "security" not in operation and "401" not in operation["responses"], key
    forbidden = documented[("post", "/api/reindex")]["responses"]["403"]
    assert error_body(forbidden) == {"$ref": "#/components/schemas/ErrorResponse"}
    response = client.post("/api/reindex")
    assert response.status_code == 403
    assert ErrorResponse.model_validate(response.json()).detail == "this instance is read-only"
    assert client.get("/docs").status_code == 200


def test_documented_refusals_bring_their_error_body_along() -> None:
    settings = AuthSettings(mode="token", token=TOKEN, read_only=True)
    reindex = RouteRule("/api/reindex", frozenset({"POST"}), Access.WRITE)
    paths: dict[str, Any] = {"/api/reindex": {"post": {"responses": {}}}}
    schema = document_access({"paths": paths}, [reindex], settings)
    schemas = schema["components"]["schemas"]
    assert schemas["ErrorResponse"]["properties"]["detail"]  # a valid $ref without /api routes
    assert "ValidationIssue" in schemas
    responses = schema["paths"]["/api/reindex"]["post"]["responses"]
    assert set(responses) == {"401", "403"}


@pytest.mark.parametrize("value", ["²³.x", "٣٣٣.x", "1" * 5000 + ".x", "1e9.x", " 1.x"])
def test_the_gate_reads_only_ascii_timestamps(value: str) -> None:
    gate = Gate(AuthSettings(mode="token", token=TOKEN))
    assert gate.session_ok(value) is False  # not a ValueError that would become a 500
    assert gate.session_ok(gate.new_session()) is True
