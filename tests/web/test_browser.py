"""The search page in a real headless Chromium against a real server: what a person would see."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memesearch.web.app import create_app
from memesearch.web.pages import PAGE_SIZE
from memesearch.web.urls import media_url
from tests.corpus import Corpus, make_corpus
from tests.web.conftest import app_settings

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)",
)
sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

N_GOOD = 80
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Site:
    """A running server over a generated library."""

    url: str
    corpus: Corpus

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def ranked(self, terms: list[dict[str, Any]], k: int = PAGE_SIZE) -> list[int]:
        answer = self.api("/api/search", {"terms": terms, "k": k})
        return [result["id"] for result in answer["results"]]

    def file_bytes(self, suffix: str) -> tuple[str, bytes]:
        path = next(p for p in self.corpus.good if p.endswith(suffix))
        return path, (self.corpus.root / path).read_bytes()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    corpus = make_corpus(root / "memes", n_good=N_GOOD)
    settings = app_settings(root, corpus.root, tiny_model_dir, thumbnails={"width": 256})
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    live = Site(f"http://127.0.0.1:{port}", corpus)
    try:
        _wait(lambda: server.started, "the server to start")
        _wait(lambda: _settled(live), "the library to be indexed")
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _settled(site: Site) -> bool:
    status = site.api("/api/status")
    return not status["indexing"] and status["indexed"] == N_GOOD


def _wait(ready: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        base_url=site.url,
        permissions=["clipboard-read", "clipboard-write"],
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def shot(page: Any, name: str, *, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def tile_ids(page: Any) -> list[int]:
    return [int(i) for i in page.locator(".tile").evaluate_all("ts => ts.map(t => t.dataset.id)")]


def first_tile_href(page: Any) -> str:
    href: str = page.locator(".tile-link").first.get_attribute("href")
    return href


def drop_file(page: Any, event: str, name: str, data: bytes) -> None:
    """Dispatch a synthetic paste or drag event carrying one image file, as a browser would."""
    page.evaluate(
        """([event, name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/png"}));
            const init = {bubbles: true, cancelable: true};
            const made = event === "paste"
                ? new ClipboardEvent("paste", {...init, clipboardData: transfer})
                : new DragEvent(event, {...init, dataTransfer: transfer});
            document.body.dispatchEvent(made);
        }""",
        [event, name, base64.b64encode(data).decode()],
    )


def test_type_a_query_and_see_ranked_results(page: Any, site: Site) -> None:
    page.goto("/")
    assert page.locator(".status-count").inner_text().startswith(f"{N_GOOD} memes indexed")
    shot(page, "01-home")
    page.locator(".term-text").first.fill("cat")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/\?t=text:1:cat$"))
    assert tile_ids(page) == site.ranked([{"text": "cat"}])
    assert page.title() == "cat · memesearch"
    # Every tile holds its image's aspect ratio before anything loads: no layout jumps.
    ratios = page.locator(".tile").evaluate_all(
        """ts => ts.map(t => {
            const r = t.getBoundingClientRect(), s = getComputedStyle(t);
            return [r.width / r.height, s.getPropertyValue('--w') / s.getPropertyValue('--h')];
        })"""
    )
    assert all(abs(shown - own) / own < 0.03 for shown, own in ratios)
    shot(page, "02-results")


def test_scrolling_loads_the_next_pages_until_the_end(page: Any, site: Site) -> None:
    page.goto("/?t=text:1:meme")
    assert len(tile_ids(page)) == PAGE_SIZE
    for expected in (2 * PAGE_SIZE, N_GOOD):
        page.mouse.wheel(0, 20_000)
        page.wait_for_function(f"document.querySelectorAll('.tile').length === {expected}")
    assert page.locator("#results-end").inner_text() == f"That’s all {N_GOOD} results."
    assert page.locator(".sentinel").count() == 0
    assert tile_ids(page) == site.ranked([{"text": "meme"}], k=N_GOOD)
    shot(page, "03-scrolled-to-the-end", full_page=True)


def test_a_negative_term_changes_the_order(page: Any, site: Site) -> None:
    page.goto("/?t=text:1:cat")
    before = tile_ids(page)
    page.get_by_role("button", name="Text").click()
    row = page.locator(".term").nth(1)
    row.locator(".term-text").fill("striped cartoon")
    row.locator("input[type=range]").fill("-1.5")
    assert row.locator("output").inner_text() == "−1.5"
    assert "negative" in (row.get_attribute("class") or "")
    shot(page, "04-negative-term")
    row.locator(".term-text").press("Enter")
    page.wait_for_url(re.compile(r"t=text:1:cat&t=text:-1\.5:striped\+cartoon$"))
    after = tile_ids(page)
    expected = site.ranked([{"text": "cat"}, {"text": "striped cartoon", "weight": -1.5}])
    assert after == expected and after != before

    page.reload()  # the URL holds the whole query: same builder, same results
    assert tile_ids(page) == after
    assert page.locator(".term-text").nth(1).input_value() == "striped cartoon"
    assert page.locator(".term output").nth(1).inner_text() == "−1.5"
    page.go_back()
    page.wait_for_url(re.compile(r"t=text:1:cat$"))
    assert tile_ids(page) == before


def test_a_pasted_image_becomes_a_term_and_finds_itself(page: Any, site: Site) -> None:
    path, data = site.file_bytes(".png")
    page.goto("/")
    drop_file(page, "paste", "pasted.png", data)
    page.wait_for_url(re.compile(r"/\?t=img:1:[0-9a-f]{64}$"))
    assert first_tile_href(page) == media_url(path)
    assert page.locator(".term[data-kind=img] .term-thumb").evaluate("i => i.naturalWidth") > 0
    shot(page, "05-pasted-image")


def test_a_dropped_image_adds_to_the_query(page: Any, site: Site) -> None:
    path, data = site.file_bytes(".png")
    page.goto("/?t=text:0.2:cat")
    drop_file(page, "dragenter", "dropped.png", data)
    assert page.locator("#drop-overlay").is_visible()
    shot(page, "06-drop-overlay")
    drop_file(page, "drop", "dropped.png", data)
    assert page.locator("#drop-overlay").is_hidden()
    page.wait_for_url(re.compile(r"/\?t=text:0.2:cat&t=img:1:[0-9a-f]{64}$"))
    assert first_tile_href(page) == media_url(path)


def test_more_like_this(page: Any, site: Site) -> None:
    page.goto("/?t=text:1:meme")
    tile = page.locator(".tile").nth(4)
    chosen = int(tile.get_attribute("data-id") or 0)
    tile.hover()
    tile.get_by_role("link", name="More like this").click()
    page.wait_for_url(re.compile(rf"t=text:1:meme&t=id:1:{chosen}$"))
    assert tile_ids(page) == site.ranked([{"text": "meme"}, {"image_id": chosen}])
    assert chosen in tile_ids(page)[:3]
    assert page.locator(".term[data-kind=id] .term-label").inner_text() == "Indexed image"


def test_copy_image_and_link(page: Any, site: Site) -> None:
    page.goto("/?t=text:1:meme")
    tile = page.locator(".tile").first
    tile.hover()
    tile.get_by_role("button", name="Copy link").click()
    page.wait_for_selector(".toast.show")
    assert page.locator("#toast").inner_text() == "Link copied"
    href = tile.locator(".tile-link").get_attribute("href")
    assert page.evaluate("navigator.clipboard.readText()") == site.url + href
    tile.get_by_role("button", name="Copy image").click()
    page.wait_for_function("document.getElementById('toast').textContent === 'Image copied'")
    types = page.evaluate("navigator.clipboard.read().then(items => items[0].types)")
    assert "image/png" in types
    shot(page, "07-copied")


def test_phone_width_has_no_horizontal_scroll(browser: Any, site: Site) -> None:
    context = browser.new_context(
        viewport={"width": 375, "height": 800},
        base_url=site.url,
        color_scheme="dark",
        has_touch=True,
        is_mobile=True,
    )
    page = context.new_page()
    try:
        page.goto("/?t=text:1:cat&t=text:-0.5:cartoon")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        text_box = page.locator(".term-text").first.bounding_box()
        slider_box = page.locator(".term input[type=range]").first.bounding_box()
        assert slider_box["y"] > text_box["y"] + text_box["height"] - 1  # the builder stacks
        heights = page.locator(".tile").evaluate_all(
            "ts => ts.slice(0, 6).map(t => t.getBoundingClientRect().height)"
        )
        assert max(heights) < 200  # smaller rows than on a desktop
        shot(page, "08-phone-dark")
        shot(page, "09-phone-dark-full", full_page=True)
    finally:
        context.close()


def test_plain_search_works_without_javascript(browser: Any, site: Site) -> None:
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, base_url=site.url, java_script_enabled=False
    )
    page = context.new_page()
    try:
        page.goto("/")
        assert page.get_by_role("button", name="Text").is_hidden()  # builder needs JavaScript
        page.locator("input[name=q]").fill("meme")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/\?q=meme$"))
        assert tile_ids(page) == site.ranked([{"text": "meme"}])
        page.get_by_role("link", name="Next page →").click()
        page.wait_for_url(re.compile(rf"offset={PAGE_SIZE}$"))
        second_page = site.ranked([{"text": "meme"}], k=N_GOOD)[PAGE_SIZE : 2 * PAGE_SIZE]
        assert tile_ids(page) == second_page
        shot(page, "10-no-javascript-page-2")
    finally:
        context.close()


def test_a_broken_link_explains_itself(page: Any) -> None:
    response = page.goto("/?t=id:1:999999&t=text:1:cat")
    assert response is not None and response.status == 404
    assert "No indexed image has id 999999" in page.get_by_role("alert").inner_text()
    placeholder = page.locator(".term[data-kind=id] .term-thumb")
    assert placeholder.get_attribute("src").startswith("data:image/svg+xml")
    assert page.locator(".term-text").first.input_value() == "cat"  # the query can be fixed
    shot(page, "11-friendly-error")
