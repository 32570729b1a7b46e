"""Missing thumbnails (cache deleted, format changed, old index) are made again when asked for."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from memesearch.images.decode import DecodeLimits, content_hash
from memesearch.images.thumbnails import ThumbnailSpec
from memesearch.records import EmbeddedFile, FileInfo, FileRow
from memesearch.web.app import create_app
from memesearch.web.thumbnailer import ThumbnailBackfill
from memesearch.web.urls import thumbnail_url
from tests.corpus import encode, make_corpus, picture, write_image
from tests.web.conftest import Served, app_settings

BIG = "photos/big photo.jpg"  # 4000x3000: decoded at full size it weighs 36 MB
SMALL_WEBP = "small.webp"  # 120x90 at quality 20: lighter than any thumbnail of it


@dataclass
class Library:
    """A served library, and which files indexing gave a thumbnail before any was deleted."""

    served: Served
    thumbnailed_at_index: set[str]

    @property
    def library(self) -> Path:
        return self.served.settings.library.path

    @property
    def cache(self) -> Path:
        return self.served.settings.thumbnails.folder

    def row(self, path: str) -> FileRow:
        row = self.served.state.services.repo.file_by_path(path=path)
        assert row is not None and row.content_hash is not None
        return row

    def thumb_path(self, path: str) -> Path:
        digest = self.row(path).content_hash
        assert digest is not None
        return self.served.state.thumbnailer.thumbnails.path_for(digest)

    def url(self, path: str) -> str:
        row = self.row(path)
        return thumbnail_url(row.id, row.content_hash, "webp")

    @property
    def decodes(self) -> int:
        return self.served.state.thumbnailer.decodes


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Library]:
    root = tmp_path_factory.mktemp("backfill")
    corpus = make_corpus(root / "memes", n_good=8)
    (corpus.root / SMALL_WEBP).write_bytes(encode_webp(picture(3, (120, 90)), quality=20))
    # Nothing re-indexes behind the tests' back: files they change stay as indexed in the store.
    # Four workers allow two backfill decodes at once, so only single-flight makes it one.
    indexer: dict[str, object] = {"watch": False, "rescan_minutes": 0, "workers": 4}
    settings = app_settings(root, corpus.root, tiny_model_dir, indexer=indexer)
    with TestClient(create_app(settings)) as client:
        served = Served(client, client.app_state["app"], corpus, settings)
        served.wait_idle()
        paths = [*corpus.good, SMALL_WEBP]
        library = Library(served, set())
        library.thumbnailed_at_index = {p for p in paths if library.thumb_path(p).is_file()}
        yield library


def encode_webp(image: Image.Image, quality: int) -> bytes:
    buffer = BytesIO()
    image.save(buffer, "WEBP", quality=quality)
    return buffer.getvalue()


def test_a_deleted_cache_is_made_again_by_the_first_request(lib: Library) -> None:
    shutil.rmtree(lib.cache)
    before = lib.decodes
    response = lib.served.client.get(lib.url(BIG))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert "immutable" in response.headers["cache-control"]  # the versioned URL, as before
    original = (lib.library / BIG).read_bytes()
    assert response.content != original and len(response.content) < len(original) // 10
    with Image.open(BytesIO(response.content)) as image:
        assert image.format == "WEBP" and image.width == 128  # [thumbnails] width in the tests
        assert image.size == (128, 96)
    assert lib.thumb_path(BIG).read_bytes() == response.content
    assert lib.decodes == before + 1


def test_the_next_request_serves_the_stored_thumbnail(lib: Library) -> None:
    first = lib.served.client.get(lib.url(BIG))
    stored = lib.thumb_path(BIG).stat()
    before = lib.decodes
    again = lib.served.client.get(lib.url(BIG))
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    after = lib.thumb_path(BIG).stat()
    assert (after.st_ino, after.st_mtime_ns) == (stored.st_ino, stored.st_mtime_ns)
    assert lib.decodes == before
    revalidated = lib.served.client.get(
        lib.url(BIG), headers={"If-None-Match": first.headers["etag"]}
    )
    assert revalidated.status_code == 304


def test_concurrent_requests_for_one_missing_thumbnail_decode_it_once(lib: Library) -> None:
    lib.thumb_path("photos/panorama.png").unlink(missing_ok=True)
    before = lib.decodes
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda _: lib.served.client.get(lib.url("photos/panorama.png")), range(8))
        )
    assert {r.status_code for r in responses} == {200}
    assert {r.headers["content-type"] for r in responses} == {"image/webp"}
    assert len({r.content for r in responses}) == 1
    assert lib.decodes == before + 1


def test_small_originals_are_still_their_own_thumbnail(lib: Library) -> None:
    assert SMALL_WEBP not in lib.thumbnailed_at_index  # indexing serves it as itself too
    shutil.rmtree(lib.cache, ignore_errors=True)
    small = [p for p in [*lib.served.corpus.good, SMALL_WEBP] if not p.startswith("photos/")]
    for path in small:
        response = lib.served.client.get(lib.url(path))
        assert response.status_code == 200, path
        if path in lib.thumbnailed_at_index:
            assert response.headers["content-type"] == "image/webp", path
            assert lib.thumb_path(path).read_bytes() == response.content, path
        else:
            assert response.content == (lib.library / path).read_bytes(), path
            assert not lib.thumb_path(path).exists(), path
    before = lib.decodes
    again = lib.served.client.get(lib.url(SMALL_WEBP))
    assert again.content == (lib.library / SMALL_WEBP).read_bytes()
    assert lib.decodes == before  # the decision is remembered, not decoded again


def test_a_corrupt_original_falls_back_to_itself_and_warns_once(
    lib: Library, caplog: pytest.LogCaptureFixture
) -> None:
    data = encode(picture(11, (600, 400)), "PNG")[:2000]  # truncated: its header still reads
    path = lib.library / "corrupt.png"
    path.write_bytes(data)
    # Indexed by a version (or limits) that could read it: stored OK under its real hash.
    services = lib.served.state.services
    vector = np.ones(services.space.dim, dtype=np.float32) / np.sqrt(services.space.dim)
    info = FileInfo("corrupt.png", len(data), path.stat().st_mtime_ns)
    stored = EmbeddedFile(info, content_hash(data), 600, 400, "PNG", vector)
    services.repo.write_batch(embedded=[stored], failed=[], space=services.space)
    before = lib.decodes
    with caplog.at_level(logging.WARNING, logger="memesearch.web.thumbnailer"):
        responses = [lib.served.client.get(lib.url("corrupt.png")) for _ in range(2)]
    for response in responses:
        assert response.status_code == 200 and response.content == data
        assert response.headers["content-type"] == "image/png"
    assert not lib.thumb_path("corrupt.png").exists()
    assert not [p for p in lib.cache.rglob("*") if p.is_file() and p.suffix == ".tmp"]
    warnings = [r for r in caplog.records if "corrupt.png" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert lib.decodes == before + 1


def test_a_file_changed_since_indexing_gets_no_thumbnail_under_the_old_hash(
    lib: Library,
) -> None:
    path = lib.library / "photos" / "changed.jpg"
    write_image(path, seed=77, size=(800, 600))
    lib.served.client.post("/api/reindex")
    lib.served.wait_idle()
    url, thumb = lib.url("photos/changed.jpg"), lib.thumb_path("photos/changed.jpg")
    thumb.unlink()
    indexed = path.stat()
    write_image(path, seed=78, size=(800, 600))  # other content, same name, same time
    os.utime(path, ns=(indexed.st_atime_ns, indexed.st_mtime_ns))
    response = lib.served.client.get(url)
    assert response.status_code == 200 and response.content == path.read_bytes()
    assert not thumb.exists()


def test_a_vanished_original_is_not_found(lib: Library) -> None:
    path = lib.library / "gone.png"
    write_image(path, seed=99, size=(400, 300))
    lib.served.client.post("/api/reindex")
    lib.served.wait_idle()
    url = lib.url("gone.png")
    lib.thumb_path("gone.png").unlink()
    path.unlink()
    assert lib.served.client.get(url).status_code == 404


async def test_a_full_disk_is_retried_not_remembered(tmp_path: Path) -> None:
    """A thumbnail that cannot be stored leaves the image to its original only for a while."""
    image = write_image(tmp_path / "photo.jpg", seed=5, size=(900, 700), fmt="JPEG")
    digest = content_hash(image.read_bytes())
    spec = ThumbnailSpec(folder=tmp_path / "thumbs", width=128)
    backfill = ThumbnailBackfill(spec, DecodeLimits(), max_decodes=1, retry_writes_after=3600)
    blocker = spec.path_for(digest).parent  # a file where its folder should be: ENOTDIR
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")
    assert await backfill.ensure(image, digest) is False  # served as the original meanwhile
    assert await backfill.ensure(image, digest) is False and backfill.decodes == 1  # no retry yet
    blocker.unlink()  # space is back
    backfill._writes_blocked_until = 0.0  # the hour is over
    assert await backfill.ensure(image, digest) is True
    assert spec.path_for(digest).is_file() and backfill.decodes == 2
