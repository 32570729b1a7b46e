"""Meme-like test images made with Pillow: varied formats, sizes, names, plus broken files."""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FORMATS = (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("GIF", ".gif"))
FOLDERS = ("", "reactions", "reactions/cats", "old memes", "日本語", "deep/er/than/that")


@dataclass
class Corpus:
    """What was written: good images (relative paths) and broken files with a reason fragment."""

    root: Path
    good: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    """A distinct image: a coloured background with random shapes and stripes."""
    rng = np.random.default_rng(seed)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(int(rng.integers(3, 9))):
        box = sorted(rng.integers(0, w, 2).tolist()), sorted(rng.integers(0, h, 2).tolist())
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = (box[0][0], box[1][0], box[0][1], box[1][1])
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=fill)
    return image


def encode(image: Image.Image, fmt: str) -> bytes:
    """Image → file bytes in `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buffer.getvalue()


def write_image(path: Path, seed: int, size: tuple[int, int] = (160, 120), fmt: str = "") -> Path:
    """Write one distinct image; the format follows the suffix unless given."""
    fmt = fmt or {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF"}[path.suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(picture(seed, size), fmt))
    return path


def _size(i: int) -> tuple[int, int]:
    sizes = ((32, 32), (64, 48), (120, 160), (200, 150), (300, 300), (90, 400), (640, 360))
    return sizes[i % len(sizes)]


def make_corpus(root: Path, n_good: int = 290, *, seed: int = 0) -> Corpus:
    """About `n_good` good images in nested folders plus ten broken files."""
    corpus = Corpus(root)
    for i in range(n_good - 2):
        fmt, ext = FORMATS[i % len(FORMATS)]
        name = f"meme {i:03d}{ext}" if i % 7 else f"mème très drôle №{i}{ext}"
        rel = "/".join(part for part in (FOLDERS[i % len(FOLDERS)], name) if part)
        write_image(root / rel, seed * 100_000 + i, _size(i), fmt)
        corpus.good.append(rel)
    # Two big photos: draft-mode JPEG decoding and a very wide PNG.
    for rel, size, fmt in (
        ("photos/big photo.jpg", (4000, 3000), "JPEG"),
        ("photos/panorama.png", (4000, 200), "PNG"),
    ):
        write_image(root / rel, seed * 100_000 + 50_000 + len(rel), size, fmt)
        corpus.good.append(rel)
    _write_broken(corpus)
    return corpus


def _write_broken(corpus: Corpus) -> None:
    root = corpus.root / "broken"
    root.mkdir(parents=True, exist_ok=True)
    jpeg = encode(picture(7, (200, 200)), "JPEG")
    png = encode(picture(8, (200, 200)), "PNG")
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")
    files = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "notes.png": (b"this is just some text, not a picture\n" * 20, "not a recognised"),
        "page.jpg": (b"<!doctype html><html><body>404</body></html>", "not a recognised"),
        "noise.webp": (np.random.default_rng(1).bytes(5000), "not a recognised"),
        "header only.gif": (b"GIF89a\x10\x00\x10\x00", ""),
        "bomb.png": (bomb.getvalue(), "over the limit"),
        "garbage.bmp": (b"BM" + b"\x00" * 60, ""),
        "huge.jpg": (jpeg + b"\x00" * (3 * 1024 * 1024), "MB"),
    }
    an_hour_ago = time.time_ns() - 3600 * 1_000_000_000
    for name, (data, reason) in files.items():
        (root / name).write_bytes(data)
        # Long since written: a fresh broken file would count as a copy still in progress.
        os.utime(root / name, ns=(an_hour_ago, an_hour_ago))
        corpus.broken[f"broken/{name}"] = reason
