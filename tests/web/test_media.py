"""Originals and thumbnails over HTTP: caching headers, traversal attempts, cleanup."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from memesearch.web.app import create_app
from tests.corpus import write_image
from tests.support import wait_idle
from tests.web.conftest import Served, app_settings, served_app


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("media")
    (root / "secret.txt").write_text("top secret", encoding="utf-8")
    yield from served_app(root, tiny_model_dir, n_good=12)


def first_hit(served: Served) -> dict[str, object]:
    body = served.client.post("/api/search", json={"terms": [{"text": "x"}], "k": 1}).json()
    hit: dict[str, object] = body["results"][0]
    return hit


def test_originals_are_served_with_etag_and_revalidate(media: Served) -> None:
    path = media.corpus.good[1]
    response = media.client.get("/media/" + quote(path))
    assert response.status_code == 200
    assert response.content == (media.settings.library.path / path).read_bytes()
    assert response.headers["content-type"].startswith("image/")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "public, max-age=3600"  # auth off: any cache
    again = media.client.get(
        "/media/" + quote(path), headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""


def test_a_nul_byte_after_an_indexed_name_is_not_that_file(media: Served) -> None:
    good = quote(media.corpus.good[1])
    for suffix in ("%00", "%00.png", "%00/../../secret.txt"):
        response = media.client.get("/media/" + good + suffix)
        assert response.status_code == 404, suffix
        assert b"top secret" not in response.content


def test_non_ascii_and_spaced_names(media: Served) -> None:
    odd = next(p for p in media.corpus.good if "très" in p)
    assert media.client.get("/media/" + quote(odd)).status_code == 200


@pytest.mark.parametrize(
    "attempt",
    [
        "../secret.txt",
        "..%2fsecret.txt",
        "%2e%2e/secret.txt",
        "%2e%2e%2fsecret.txt",
        "..%5csecret.txt",
        "reactions/../../secret.txt",
        "/etc/passwd",
        "%2fetc%2fpasswd",
        "..%00/secret.txt",
        "%00../secret.txt",
        "secret.txt%00.png",
        "..\\secret.txt",
        "reactions\\..\\..\\secret.txt",
        "%5c..%5c..%5csecret.txt",
        "..%255csecret.txt",
        "\\etc\\passwd",
        "broken/empty.jpg",
        "reactions",
        "missing.png",
        "....//secret.txt",
    ],
)
def test_traversal_attempts_never_leave_the_library(media: Served, attempt: str) -> None:
    response = media.client.get("/media/" + attempt)
    assert response.status_code == 404
    assert b"top secret" not in response.content and b"root:" not in response.content


def test_a_symlink_pointing_outside_is_not_served(media: Served, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    write_image(outside, seed=5)
    link = media.settings.library.path / "sneaky.png"
    os.symlink(outside, link)
    try:
        assert media.client.get("/media/sneaky.png").status_code == 404
    finally:
        link.unlink()


def test_thumbnails_are_small_webp_and_versioned(media: Served) -> None:
    hit = first_hit(media)
    response = media.client.get(str(hit["thumbnail_url"]))
    assert response.status_code == 200
    assert "immutable" in response.headers["cache-control"]
    assert (
        media.client.get(f"/thumbs/{hit['id']}.webp").headers["cache-control"]
        != (response.headers["cache-control"])
    )
    assert media.client.get("/thumbs/999999.webp").status_code == 404


def test_big_images_get_a_thumbnail_small_ones_are_their_own(media: Served, tmp_path: Path) -> None:
    results = media.client.post("/api/search", json={"terms": [{"text": "x"}], "k": 12}).json()
    big = next(r for r in results["results"] if r["path"] == "photos/big photo.jpg")
    thumb = media.client.get(big["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/webp"
    saved = tmp_path / "t.webp"
    saved.write_bytes(thumb.content)
    with Image.open(saved) as image:
        assert image.width == 128  # [thumbnails] width in the test config
    assert len(thumb.content) < (media.settings.library.path / big["path"]).stat().st_size


def test_deleting_a_file_removes_its_thumbnail(media: Served) -> None:
    library = media.settings.library.path
    write_image(library / "doomed.jpg", seed=31337, size=(900, 600))
    media.client.post("/api/reindex")
    media.wait_idle()
    info = media.client.get(
        "/api/images/"
        + str(
            media.client.post(
                "/api/search", json={"terms": [{"image": _b64(library / "doomed.jpg")}], "k": 1}
            ).json()["results"][0]["id"]
        )
    ).json()
    assert info["path"] == "doomed.jpg"
    thumbs = list(media.settings.thumbnails.folder.rglob("*.webp"))
    before = len(thumbs)
    (library / "doomed.jpg").unlink()
    media.client.post("/api/reindex")
    media.wait_idle()
    assert len(list(media.settings.thumbnails.folder.rglob("*.webp"))) == before - 1
    assert media.client.get("/media/doomed.jpg").status_code == 404


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_files_indexed_through_a_followed_link_are_served(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    library, outside = tmp_path / "memes", tmp_path / "elsewhere"
    write_image(library / "own.png", seed=1)
    linked = write_image(outside / "linked.png", seed=2)
    (library / "shared").symlink_to(outside)
    settings = app_settings(tmp_path, library, tiny_model_dir, library={"follow_symlinks": True})
    with TestClient(create_app(settings)) as client:
        client.portal.call(wait_idle, client.app_state["app"].live)  # type: ignore[union-attr]
        assert client.get("/api/status").json()["indexed"] == 2
        response = client.get("/media/shared/linked.png")
        assert response.status_code == 200 and response.content == linked.read_bytes()
        assert client.get("/media/own.png").status_code == 200
