"""Hostile and odd files in a real library: each is indexed correctly or listed with its reason."""

from __future__ import annotations

import base64
import io
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import ExifTags, Image

from memesearch.config import Settings, load_settings
from memesearch.ingest.pipeline import Phase, Progress
from memesearch.ingest.scan import ScanOptions, scan_library
from memesearch.services import open_services
from memesearch.testing import write_config
from memesearch.web.app import create_app
from tests.corpus import Corpus, encode, picture, write_image
from tests.support import index_once, stored_rows
from tests.web.conftest import Served


@dataclass(frozen=True)
class Indexed:
    """Searchable by its own bytes, and shown at this size (after EXIF orientation)."""

    width: int
    height: int


@dataclass(frozen=True)
class Failed:
    """Listed by /api/failures with a reason that contains `reason`."""

    reason: str


Outcome = Indexed | Failed


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header promises `width`×`height` pixels, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def animated(fmt: str, seed: int, size: tuple[int, int] = (120, 90)) -> bytes:
    """Three different frames in one GIF or WebP."""
    frames = [picture(seed + i, size) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buffer.getvalue()


def rotated_jpeg(seed: int, stored: tuple[int, int], orientation: int) -> bytes:
    """A photo stored sideways, with the EXIF orientation a phone writes."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    buffer = io.BytesIO()
    picture(seed, stored).save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def with_broken_exif(jpeg: bytes) -> bytes:
    """A JPEG with an APP1 EXIF segment full of nonsense right after its start marker."""
    payload = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(range(256)) * 2
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def sixteen_bit_png(size: tuple[int, int]) -> bytes:
    """A 16-bit greyscale gradient (mode I;16)."""
    width, height = size
    ramp = np.linspace(0, 65535, width * height, dtype=np.float64).reshape(height, width)
    return encode(Image.fromarray(ramp.astype(np.uint16)), "PNG")


def float_tiff(size: tuple[int, int]) -> bytes:
    """32-bit float greyscale (mode F), values far outside 0-1."""
    rng = np.random.default_rng(5)
    return encode(Image.fromarray(rng.normal(500, 200, size[::-1]).astype(np.float32)), "TIFF")


def palette_with_transparency(seed: int, size: tuple[int, int]) -> bytes:
    """An 8-bit palette PNG whose first palette entry is transparent."""
    image = picture(seed, size).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


JPEG = encode(picture(101, (200, 150)), "JPEG")
PNG = encode(picture(102, (180, 120)), "PNG")
# name → (the file's bytes, what must become of it). Names are kept odd on purpose.
HOSTILE: dict[str, tuple[Callable[[], bytes], Outcome]] = {
    "zero bytes.png": (lambda: b"", Failed("file is empty")),
    "truncated.jpg": (lambda: JPEG[: len(JPEG) // 2], Failed("truncated")),
    "truncated.png": (lambda: PNG[: len(PNG) // 2], Failed("truncated")),
    "text.png": (lambda: b"just some notes, no picture\n" * 40, Failed("not a recognised image")),
    "page.jpg": (lambda: b"<!doctype html><title>404</title>\n" * 9, Failed("not a recognised")),
    "noise.webp": (lambda: np.random.default_rng(3).bytes(4000), Failed("not a recognised image")),
    "header only.gif": (lambda: b"GIF89a\x10\x00\x10\x00", Failed("not a recognised image")),
    "bomb.png": (lambda: png_header(30_000, 30_000), Failed("900.0 MP), over the limit of 100")),
    "too big.png": (lambda: PNG + b"\x00" * (3 * 2**20), Failed("over the 2.0 MB limit")),
    "one pixel.png": (lambda: encode(picture(103, (1, 1)), "PNG"), Indexed(1, 1)),
    "strip.png": (lambda: encode(picture(104, (20_000, 20)), "PNG"), Indexed(20_000, 20)),
    "tower.png": (lambda: encode(picture(105, (12, 9000)), "PNG"), Indexed(12, 9000)),
    "cmyk.jpg": (
        lambda: encode(picture(106, (160, 120)).convert("CMYK"), "JPEG"),
        Indexed(160, 120),
    ),
    "sixteen bit.png": (lambda: sixteen_bit_png((150, 100)), Indexed(150, 100)),
    "float.tif": (lambda: float_tiff((90, 60)), Indexed(90, 60)),
    "palette alpha.png": (lambda: palette_with_transparency(107, (140, 100)), Indexed(140, 100)),
    "animated.gif": (lambda: animated("GIF", 108), Indexed(120, 90)),
    "animated.webp": (lambda: animated("WEBP", 111), Indexed(120, 90)),
    "rotated.jpg": (lambda: rotated_jpeg(114, (240, 160), orientation=6), Indexed(160, 240)),
    "broken exif.jpg": (
        lambda: with_broken_exif(encode(picture(115, (130, 70)), "JPEG")),
        Indexed(130, 70),
    ),
    "png named.jpg": (lambda: encode(picture(116, (100, 80)), "PNG"), Indexed(100, 80)),
    "trailing junk.jpg": (
        lambda: encode(picture(117, (110, 90)), "JPEG") + b"junk" * 500,
        Indexed(110, 90),
    ),
    "odd ?#%&+ 'name' ☃.png": (lambda: encode(picture(118, (64, 64)), "PNG"), Indexed(64, 64)),
    "folder.png/inside.png": (lambda: encode(picture(119, (70, 50)), "PNG"), Indexed(70, 50)),
}
# Names that are not UTF-8: listed as failed under a printable version of the name.
NOT_UTF8: dict[bytes, tuple[str, str]] = {
    b"caf\xe9 \xff.png": ("caf\\xe9 \\xff.png", "file name is not valid UTF-8"),
    b"d\xe9j\xe0/vu.png": ("d\\xe9j\\xe0/vu.png", "folder name is not valid UTF-8"),
}


def age(path: str | bytes | Path) -> None:
    """Make a file look long since written: a fresh broken file counts as a copy in progress."""
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(an_hour_ago, an_hour_ago), follow_symlinks=False)


def write_hostile_library(library: Path) -> Corpus:
    """Every hostile file, the odd names, a symlink loop and a dangling link."""
    corpus = Corpus(library)
    for name, (make, outcome) in HOSTILE.items():
        path = library / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make())
        age(path)
        if isinstance(outcome, Failed):
            corpus.broken[name] = outcome.reason
        else:
            corpus.good.append(name)
    for raw, (shown, reason) in NOT_UTF8.items():
        raw_path = os.path.join(os.fsencode(library), raw)
        os.makedirs(os.path.dirname(raw_path), exist_ok=True)
        with open(raw_path, "wb") as file:
            file.write(encode(picture(len(raw), (50, 50)), "PNG"))
        age(raw_path)
        corpus.broken[shown] = reason
    (library / "deep" / "er").mkdir(parents=True)
    write_image(library / "deep" / "er" / "real.png", seed=120)
    age(library / "deep" / "er" / "real.png")
    corpus.good.append("deep/er/real.png")
    os.symlink(library, library / "deep" / "er" / "loop")  # followed, it leads back to the top
    os.symlink(library / "missing.png", library / "dangling.png")
    return corpus


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("hostile")
    corpus = write_hostile_library(root / "memes")
    config = write_config(
        root / "config.toml",
        {
            "library": {"path": str(corpus.root), "max_file_mb": 2, "follow_symlinks": True},
            "database": {"url": f"sqlite:///{root / 'data' / 'db.sqlite'}"},
            "thumbnails": {"folder": str(root / "data" / "thumbs"), "width": 128},
            "model": {"name": f"local-dir:{tiny_model_dir}", "batch_size": 8},
            "indexer": {"workers": 2},
        },
    )
    settings = load_settings(config)
    with TestClient(create_app(settings)) as client:
        served = Served(client, client.app_state["app"], corpus, settings)
        served.wait_idle()
        yield served


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("cmyk.jpg", lambda image: image.mode == "CMYK"),
        ("sixteen bit.png", lambda image: image.mode == "I;16"),
        ("float.tif", lambda image: image.mode == "F"),
        ("palette alpha.png", lambda image: image.mode == "P" and "transparency" in image.info),
        ("animated.gif", lambda image: image.n_frames == 3),
        ("animated.webp", lambda image: image.n_frames == 3),
        ("rotated.jpg", lambda image: image.getexif()[ExifTags.Base.Orientation] == 6),
        ("strip.png", lambda image: image.size == (20_000, 20)),
    ],
)
def test_the_odd_files_really_are_what_they_claim(
    name: str, check: Callable[[Image.Image], bool]
) -> None:
    with Image.open(io.BytesIO(HOSTILE[name][0]())) as image:
        assert check(image)


def failures(served: Served) -> dict[str, str]:
    """Failed path → reason, as the API lists them."""
    listed = served.client.get("/api/failures").json()["failures"]
    return {item["path"]: item["error"] for item in listed}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@pytest.mark.parametrize("name", HOSTILE)
def test_each_file_is_indexed_correctly_or_listed_with_its_reason(
    hostile: Served, name: str
) -> None:
    data = (hostile.corpus.root / name).read_bytes()
    outcome = HOSTILE[name][1]
    if isinstance(outcome, Failed):
        assert outcome.reason in failures(hostile)[name]
        assert hostile.client.get("/media/" + quote(name)).status_code == 404
        return
    term = {"image": base64.b64encode(data).decode()}
    response = hostile.client.post("/api/search", json={"terms": [term], "k": 1})
    top = response.json()["results"][0]
    assert top["path"] == name and top["score"] > 0.999
    assert (top["width"], top["height"]) == (outcome.width, outcome.height)
    info = hostile.client.get(f"/api/images/{top['id']}").json()
    assert info["state"] == "ok" and (info["width"], info["height"]) == (
        outcome.width,
        outcome.height,
    )
    original = hostile.client.get(top["url"])
    assert original.status_code == 200 and original.content == data
    assert hostile.client.get(top["thumbnail_url"]).status_code == 200


def test_names_that_are_not_utf8_are_listed_under_a_printable_name(hostile: Served) -> None:
    listed = failures(hostile)
    for shown, reason in NOT_UTF8.values():
        assert listed[shown] == reason
        assert hostile.client.get("/media/" + quote(shown)).status_code == 404


def test_every_image_file_is_accounted_for_exactly_once(hostile: Served) -> None:
    status = hostile.client.get("/api/status").json()
    assert status["indexed"] == len(hostile.corpus.good)
    assert status["failed"] == len(hostile.corpus.broken)
    assert set(failures(hostile)) == set(hostile.corpus.broken)
    everything = hostile.client.post(
        "/api/search", json={"terms": [{"text": "anything"}], "k": 100}
    ).json()["results"]
    assert sorted(hit["path"] for hit in everything) == sorted(hostile.corpus.good)


def test_the_server_survives_and_a_second_pass_changes_nothing(hostile: Served) -> None:
    before = hostile.client.get("/api/status").json()
    assert hostile.client.post("/api/reindex").status_code == 202
    hostile.wait_idle()
    after = hostile.client.get("/api/status").json()
    assert after["last_error"] is None and after["indexing"] is False
    assert (after["indexed"], after["failed"]) == (before["indexed"], before["failed"])
    assert hostile.client.get("/healthz").json() == {"status": "ok"}
    assert set(failures(hostile)) == set(hostile.corpus.broken)  # the dangling link is no file


def test_a_real_file_named_like_a_printable_bad_name_keeps_its_place(tmp_path: Path) -> None:
    write_image(tmp_path / "caf\\xe9.png", seed=500)  # a backslash, an x, an e and a 9
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.png"), "wb") as file:
        file.write(b"x")
    result = scan_library(tmp_path, ScanOptions(extensions=frozenset({".png"})))
    assert list(result.files) == ["caf\\xe9.png"] and result.rejected == {}


# ---- races and permissions, through the indexer itself ------------------------------------


async def test_a_file_deleted_between_hashing_and_decoding_is_simply_gone(
    settings: Settings, library: Path
) -> None:
    for i in range(3):
        write_image(library / f"keep {i}.png", seed=200 + i)
    doomed = write_image(library / "doomed.png", seed=299)

    def delete_when_hashed(event: Progress) -> None:
        if event.phase is Phase.HASH and event.done == event.total and doomed.exists():
            doomed.unlink()

    async with open_services(settings) as services:
        report = await services.indexer().run(progress=delete_when_hashed)
    assert not doomed.exists()
    assert (report.added, report.failed, report.deferred) == (3, [], [])
    files, vectors = await stored_rows(settings)
    assert sorted(files) == [f"keep {i}.png" for i in range(3)] and len(vectors) == 3
    assert not (await index_once(settings)).report.changed


async def test_an_unreadable_file_is_listed_with_its_reason(
    settings: Settings, library: Path
) -> None:
    locked = write_image(library / "locked.png", seed=300)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            # CI runs as root, whom chmod 000 does not stop (CAP_DAC_OVERRIDE); run as a user,
            # or as root without it (setpriv --inh-caps=-dac_override,-dac_read_search ...).
            pytest.skip("this user reads every file (root): chmod 000 stops nothing")
        report = (await index_once(settings)).report
    finally:
        locked.chmod(0o644)
    assert report.failed == [("locked.png", "cannot read file: Permission denied")]


async def test_a_name_that_is_not_utf8_fails_once_and_clears_when_renamed(
    settings: Settings, library: Path
) -> None:
    write_image(library / "fine.png", seed=400)
    raw = os.path.join(os.fsencode(library), b"caf\xe9.png")
    with open(raw, "wb") as file:
        file.write(encode(picture(401, (40, 40)), "PNG"))

    first = (await index_once(settings)).report
    assert first.failed == [("caf\\xe9.png", "file name is not valid UTF-8")]
    assert first.scan_problems == []  # reported once, as the failed file it is
    again = (await index_once(settings)).report
    assert (again.still_failing, again.changed) == (1, False)

    os.rename(raw, library / "café.png")
    renamed = await index_once(settings)
    assert (renamed.report.added, renamed.report.removed) == (1, 1)
    files, _ = await stored_rows(settings)
    assert sorted(files) == ["café.png", "fine.png"]
