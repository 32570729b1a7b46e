"""UploadCache: content-addressed, validated, atomic, bounded by least-recent use, never indexed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from memesearch.errors import ImageDecodeError
from memesearch.images.decode import DecodeLimits, content_hash
from memesearch.web.app import create_app
from memesearch.web.state import AppState
from memesearch.web.uploads import UploadCache, is_upload_hash, media_type
from tests.corpus import encode, picture, write_image
from tests.support import wait_idle
from tests.web.conftest import app_settings

LIMITS = DecodeLimits(max_file_bytes=1 << 20, max_pixels=4_000_000)


def png(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(picture(seed, size), "PNG")


def test_put_stores_by_content_hash_and_get_returns_the_bytes(tmp_path: Path) -> None:
    cache = UploadCache(tmp_path / "uploads", max_bytes=1 << 20)
    data = png(1)
    key = cache.put(data, LIMITS)
    assert key == content_hash(data) and is_upload_hash(key)
    assert cache.get(key) == data
    assert cache.put(data, LIMITS) == key
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [key]
    assert media_type(data) == "image/png"


def test_a_missing_entry_is_none_and_a_malformed_key_is_refused(tmp_path: Path) -> None:
    cache = UploadCache(tmp_path / "uploads", max_bytes=1 << 20)
    assert cache.get("0" * 64) is None
    for bad in ("../etc/passwd", "ABC", "g" * 64, "0" * 63, ""):
        with pytest.raises(ValueError, match="not an upload hash"):
            cache.get(bad)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"just some text, not a picture" * 10, "not a recognised"),
        (b"\x89PNG" + b"\x00" * (2 << 20), "over the 1 MB limit"),
    ],
)
def test_what_is_not_an_image_is_refused_and_not_stored(
    tmp_path: Path, data: bytes, fragment: str
) -> None:
    cache = UploadCache(tmp_path / "uploads", max_bytes=1 << 20)
    with pytest.raises(ImageDecodeError, match=fragment):
        cache.put(data, LIMITS)
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_the_least_recently_used_image_goes_first(tmp_path: Path) -> None:
    images = [png(seed, (120, 90)) for seed in range(4)]
    budget = sum(len(d) for d in images[:3])
    cache = UploadCache(tmp_path / "uploads", max_bytes=budget)
    first, second, third = (cache.put(d, LIMITS) for d in images[:3])
    assert cache.get(first) is not None  # now `second` is the least recently used
    fourth = cache.put(images[3], LIMITS)
    assert cache.get(second) is None
    for key in (first, third, fourth):
        assert cache.get(key) is not None
    total = sum(p.stat().st_size for p in (tmp_path / "uploads").iterdir())
    assert total <= budget


def test_the_newest_upload_survives_even_a_tiny_budget(tmp_path: Path) -> None:
    cache = UploadCache(tmp_path / "uploads", max_bytes=0)
    old = cache.put(png(1), LIMITS)
    new = cache.put(png(2), LIMITS)
    assert cache.get(old) is None
    assert cache.get(new) == png(2)


def test_leftover_temporary_files_are_invisible(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / ".half-written.tmp").write_bytes(b"\x89PNG")
    cache = UploadCache(folder, max_bytes=1 << 20)
    key = cache.put(png(3), LIMITS)
    assert cache.get(key) == png(3)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [key]


def test_uploads_kept_inside_the_library_are_never_indexed(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The upload cache and the indexer's exclusions are one derived path: they cannot disagree."""
    library = tmp_path / "memes"
    write_image(library / "a.png", seed=1)
    data = library / "memesearch-data"  # the data folder inside the library, not hidden
    settings = app_settings(
        tmp_path, library, tiny_model_dir, thumbnails={"folder": str(data / "thumbs")}
    )
    with TestClient(create_app(settings)) as client:
        state: AppState = client.app_state["app"]
        assert state.uploads.folder == settings.uploads_dir == data / "uploads"
        client.portal.call(wait_idle, state.live)  # type: ignore[union-attr]
        answer = client.post("/upload", files={"image": ("b.png", png(2), "image/png")})
        assert answer.status_code == 200 and (data / "uploads" / answer.json()["hash"]).is_file()
        client.post("/api/reindex")
        client.portal.call(wait_idle, state.live)  # type: ignore[union-attr]
        status = client.get("/api/status").json()
    assert (status["indexed"], status["failed"]) == (1, 0)  # a.png alone
