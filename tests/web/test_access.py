"""Route declarations: every route says who may call it, and the gate and OpenAPI obey them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from memesearch.config import Settings
from memesearch.web.access import Access, PublicMount, RouteRule, declare, rule_for, rules
from memesearch.web.app import create_app
from tests.web.conftest import Served, app_settings, served_app

# The writes a read-only instance refuses: what stores files or starts work.
WRITES = {("POST", "/api/reindex"), ("POST", "/api/search/upload"), ("POST", "/upload")}
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/login"), ("POST", "/login")}


def table(app: FastAPI) -> list[RouteRule]:
    return [rule for _, rule in rules(app.router.routes)]


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    yield from served_app(
        tmp_path_factory.mktemp("ro"), tiny_model_dir, n_good=4, auth={"read_only": True}
    )


def test_every_route_declares_its_access_where_it_is_declared() -> None:
    app = create_app(Settings())
    found = table(app)
    api_routes = [rule for rule in found if not rule.path.startswith("/static")]
    undeclared = [(rule.path, sorted(rule.methods)) for rule in api_routes if not rule.declared]
    assert undeclared == []  # a route nobody thought about must not slip through read-only
    writes = {(m, r.path) for r in found if r.access is Access.WRITE for m in r.methods}
    assert writes == WRITES
    public = {(m, r.path) for r in found if r.access is Access.PUBLIC for m in r.methods}
    assert public >= PUBLIC and ("GET", "/static") in public
    assert ("GET", "/metrics") not in public  # only with public_metrics
    pages = {r.path for r in found if r.page}
    assert pages == {"/", "/results", "/status", "/login"}


def test_every_non_get_route_is_declared_a_write_or_a_read() -> None:
    app = create_app(Settings())
    for route, rule in rules(app.router.routes):
        if isinstance(route, APIRoute) and rule.methods - {"GET", "HEAD"}:
            assert rule.declared, f"{route.path} {sorted(rule.methods)} declares no access"


def test_public_metrics_is_a_declaration_too() -> None:
    app = create_app(Settings.model_validate({"server": {"auth": {"public_metrics": True}}}))
    metrics = [rule for rule in table(app) if rule.path == "/metrics"]
    assert [rule.access for rule in metrics] == [Access.PUBLIC]


def test_an_undeclared_write_route_is_refused_in_read_only_mode(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = app_settings(
        tmp_path, tmp_path / "memes", tiny_model_dir, server={"auth": {"read_only": True}}
    )
    (tmp_path / "memes").mkdir()
    app = create_app(settings, start_indexer=False)
    extra = APIRouter()

    @extra.post("/api/forget-everything")
    async def forget() -> dict[str, str]:
        return {"forgot": "everything"}

    @extra.post("/api/peek", **declare(Access.PRIVATE))
    async def peek() -> dict[str, str]:
        return {"peeked": "yes"}

    app.include_router(extra)
    with TestClient(app) as client:
        refused = client.post("/api/forget-everything")
        assert refused.status_code == 403 and refused.json() == {
            "detail": "this instance is read-only"
        }
        assert client.post("/api/peek").json() == {"peeked": "yes"}
        schema = client.get("/openapi.json").json()
    assert "403" in schema["paths"]["/api/forget-everything"]["post"]["responses"]
    assert "403" not in schema["paths"]["/api/peek"]["post"]["responses"]


def test_read_only_refuses_exactly_the_declared_writes(read_only: Served) -> None:
    client = read_only.client
    for route, rule in rules(client.app.router.routes):  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute) or "POST" not in rule.methods:
            continue
        response = client.post(route.path, follow_redirects=False)
        refused = response.status_code == 403
        assert refused == (rule.access is Access.WRITE), (route.path, response.status_code)


def test_the_rule_of_a_request() -> None:
    routes = APIRouter()

    @routes.get("/things/{thing_id}", **declare(Access.PUBLIC))
    async def thing(thing_id: int) -> int:
        return thing_id

    @routes.delete("/things/{thing_id}")
    async def drop(thing_id: int) -> None:
        return None

    app = FastAPI()
    app.include_router(routes)
    app.router.routes.append(PublicMount("/assets", app=FastAPI(), name="assets"))
    app.router.routes.append(Mount("/private", app=FastAPI(), name="private"))
    found = rules(app.router.routes)

    def rule(method: str, path: str) -> RouteRule:
        return rule_for({"type": "http", "method": method, "path": path}, found)

    assert rule("GET", "/things/7").access is Access.PUBLIC
    assert rule("DELETE", "/things/7").access is Access.WRITE  # undeclared, so it writes
    assert not rule("DELETE", "/things/7").declared
    assert rule("PUT", "/things/7").path == "/things/{thing_id}"  # a 405 to come: same route
    assert rule("GET", "/assets/app.css").access is Access.PUBLIC
    assert rule("GET", "/private/x").access is Access.PRIVATE
    unknown = rule("GET", "/nowhere")
    assert unknown.access is Access.PRIVATE and not unknown.declared
