"""The HTML pages: the same results as the API, a URL that holds the query, friendly failures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from memesearch.web.pages import PAGE_SIZE
from tests.corpus import encode, picture
from tests.web.conftest import Served, served_app

N_GOOD = 40


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    yield from served_app(tmp_path_factory.mktemp("pages"), tiny_model_dir, n_good=N_GOOD)


def api_ids(
    site: Served, terms: list[dict[str, Any]], *, k: int = PAGE_SIZE, offset: int = 0
) -> list[int]:
    body = {"terms": terms, "k": k, "offset": offset}
    response = site.client.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def tile_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<figure class="tile"[^>]*data-id="(\d+)"', html)]


def test_a_text_query_shows_the_api_results_in_the_same_order(site: Served) -> None:
    response = site.client.get("/?q=cat")
    assert response.status_code == 200
    expected = api_ids(site, [{"text": "cat"}])
    assert [tile.id for tile in response.context["tiles"]] == expected  # type: ignore[attr-defined]
    assert tile_ids(response.text) == expected
    first = response.context["tiles"][0]  # type: ignore[attr-defined]
    assert f'style="--w:{first.width};--h:{first.height}"' in response.text
    assert f'href="{first.url}" target="_blank"' in response.text
    assert f'src="{first.thumb}"' in response.text and 'loading="lazy"' in response.text
    assert f'href="/?t=text:1:cat&amp;t=id:1:{first.id}"' in response.text  # more like this
    assert f'download="{first.name}"' in response.text
    assert "<title>cat · memesearch</title>" in response.text


def test_weighted_terms_with_negative_weights_and_ids(site: Served) -> None:
    like = api_ids(site, [{"text": "meme"}])[5]
    url = f"/?t=text:1:cat+photo&t=text:-0.5:cartoon&t=id:0.7:{like}"
    response = site.client.get(url)
    assert response.status_code == 200
    expected = api_ids(
        site,
        [
            {"text": "cat photo"},
            {"text": "cartoon", "weight": -0.5},
            {"image_id": like, "weight": 0.7},
        ],
    )
    assert tile_ids(response.text) == expected
    assert response.context["query"] == url.removeprefix("/?")  # type: ignore[attr-defined]
    terms = response.context["terms"]  # type: ignore[attr-defined]
    assert [(t.kind, t.value, t.weight) for t in terms] == [
        ("text", "cat photo", 1.0),
        ("text", "cartoon", -0.5),
        ("id", str(like), 0.7),
    ]
    assert 'class="term negative"' in response.text and "−0.5" in response.text
    assert f'src="/thumbs/{like}.webp"' in response.text  # the id term shows its image


def test_infinite_scroll_partial_has_a_sentinel_until_the_last_page(site: Served) -> None:
    hx = {"HX-Request": "true"}
    first = site.client.get("/results?t=text:1:meme&offset=0", headers=hx)
    assert first.status_code == 200 and "<html" not in first.text
    assert tile_ids(first.text) == api_ids(site, [{"text": "meme"}])
    sentinel = re.search(
        r'<div class="sentinel" hx-get="([^"]+)" hx-trigger="revealed"', first.text
    )
    assert sentinel and sentinel.group(1) == f"/results?t=text:1:meme&amp;offset={PAGE_SIZE}"
    assert 'hx-swap="outerHTML"' in first.text

    last = site.client.get(f"/results?t=text:1:meme&offset={PAGE_SIZE}", headers=hx)
    assert tile_ids(last.text) == api_ids(site, [{"text": "meme"}], offset=PAGE_SIZE)
    assert len(tile_ids(last.text)) == N_GOOD - PAGE_SIZE
    assert "sentinel" not in last.text
    assert f"That’s all {N_GOOD} results." in last.text and 'hx-swap-oob="true"' in last.text

    whole = site.client.get("/results?t=text:1:meme")  # no HX-Request: a shareable full page
    assert "<html" in whole.text and tile_ids(whole.text) == tile_ids(first.text)


def test_search_works_without_javascript(site: Served) -> None:
    home = site.client.get("/")
    assert home.status_code == 200
    assert re.search(r'<form id="search"[^>]*method="get" action="/"', home.text)
    assert 'name="q"' in home.text and 'type="submit"' in home.text
    assert home.context["tiles"] == [] and "Find that meme" in home.text  # type: ignore[attr-defined]

    page_one = site.client.get("/", params={"q": "meme"})
    assert len(tile_ids(page_one.text)) == PAGE_SIZE
    assert re.search(r'name="q"[^>]*|value="meme"', page_one.text)
    next_link = re.search(r'<noscript>.*?href="([^"]+)"', page_one.text, re.S)
    assert next_link and next_link.group(1) == f"/?t=text:1:meme&amp;offset={PAGE_SIZE}"
    page_two = site.client.get(next_link.group(1).replace("&amp;", "&"))
    assert tile_ids(page_two.text) == api_ids(site, [{"text": "meme"}], offset=PAGE_SIZE)
    assert f"Results {PAGE_SIZE + 1}–{N_GOOD}" in page_two.text


def test_empty_queries_and_pages_past_the_end_explain_themselves(site: Served) -> None:
    blank = site.client.get("/?q=++")
    assert blank.status_code == 200 and "Find that meme" in blank.text
    assert 'class="notice is-error"' not in blank.text
    past = site.client.get("/?q=meme&offset=500")
    assert past.status_code == 200 and tile_ids(past.text) == []
    assert "No more results past number 500" in past.text


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ("t=cat", 422, "should look like kind:weight:value"),
        ("t=sound:1:meow", 422, "unknown kind"),
        ("t=text:heavy:cat", 422, "is not a number"),
        ("t=text:nan:cat", 422, "finite"),
        ("t=text:1:+", 422, "text is empty"),
        ("t=text:0:cat", 422, "weight 0"),
        ("t=id:1:abc", 422, "whole number"),
        ("t=id:1:987654", 404, "no indexed image has id 987654"),
        ("t=img:1:not-a-hash", 422, "not the hash of an uploaded image"),
        (f"t=img:1:{'0' * 64}", 422, "expired"),
        ("q=cat&offset=-3", 422, "offset must be a whole number"),
        ("q=cat&offset=lots", 422, "offset must be a whole number"),
        ("t=text:1:a&t=text:1:cancel&t=text:-1:cancel&t=text:-1:a", 422, "cancel"),
        ("&".join(["t=text:1:cat"] * 17), 422, "at most 16 terms"),
    ],
)
def test_bad_parameters_give_a_friendly_message(
    site: Served, query: str, status: int, fragment: str
) -> None:
    response = site.client.get("/?" + query)
    assert response.status_code == status
    assert 'class="notice is-error"' in response.text
    assert fragment.lower() in response.text.lower()
    assert '<form id="search"' in response.text  # the page stays usable
    partial = site.client.get("/results?" + query, headers={"HX-Request": "true"})
    assert partial.status_code == 200  # HTMX only swaps 2xx answers
    assert "Could not load more results" in partial.text
    assert fragment.lower() in partial.text.lower()


def test_an_uploaded_image_becomes_an_img_term_that_finds_itself(site: Served) -> None:
    path = site.corpus.good[7]
    data = (site.settings.library.path / path).read_bytes()
    answer = site.client.post("/upload", files={"image": ("meme.bin", data)})
    assert answer.status_code == 200
    key = answer.json()["hash"]
    assert answer.json() == {"hash": key, "thumbnail": f"/uploads/{key}"}
    served = site.client.get(f"/uploads/{key}")
    assert served.content == data and served.headers["content-type"].startswith("image/")
    assert "immutable" in served.headers["cache-control"]

    response = site.client.get(f"/?t=img:1:{key}&t=text:-0.2:dog")
    assert response.status_code == 200
    assert response.context["tiles"][0].path == path  # type: ignore[attr-defined]
    assert f'src="/uploads/{key}"' in response.text  # the builder shows the image


def test_upload_refuses_what_is_not_an_image(site: Served) -> None:
    answer = site.client.post("/upload", files={"image": ("x.png", b"not really a png")})
    assert answer.status_code == 422 and "not a recognised" in answer.json()["detail"]
    assert site.client.post("/upload").status_code == 422
    big = encode(picture(1, (1200, 1200)), "BMP")  # over the 1 MB body limit of this app
    assert site.client.post("/upload", files={"image": ("big.bmp", big)}).status_code == 413
    assert site.client.get("/uploads/" + "f" * 64).status_code == 404
    assert site.client.get("/uploads/../../etc/passwd").status_code == 404


def test_status_polls_only_while_indexing(site: Served) -> None:
    idle = site.client.get("/status")
    assert idle.status_code == 200
    assert f"<strong>{N_GOOD}</strong> memes indexed" in idle.text
    assert "hx-trigger" not in idle.text  # the last answer of a poll ends the polling
    assert "unreadable" in idle.text  # the corpus has broken files

    live = site.state.live
    before = live.status
    live.status = replace(before, indexing=True, phase="embed", done=3, total=10)
    try:
        busy = site.client.get("/status")
        home = site.client.get("/")
    finally:
        live.status = before
    assert 'hx-get="/status" hx-trigger="every 2s" hx-swap="outerHTML"' in busy.text
    assert "Embedding 3 / 10" in busy.text and 'value="3"' in busy.text
    assert 'hx-trigger="every 2s"' in home.text
