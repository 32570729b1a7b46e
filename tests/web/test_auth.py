"""Access control in each mode, proved route by route over the app's real route table."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount

from tests.web.conftest import Served, served_app

TOKEN = "correct-horse-battery-staple"
PUBLIC = {"/healthz", "/login"}


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
        if path in ("/healthz", "/metrics", "/login") or path.startswith("/static/"):
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
    from tests.conftest import write_config

    config = write_config(
        tmp_path / "c.toml", {"server": {"auth": {"mode": "token", "token": "123"}}}
    )
    with pytest.raises(ConfigError, match="server.auth") as caught:
        load_settings(config)
    assert "123" not in str(caught.value)  # secrets are never echoed
