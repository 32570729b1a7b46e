"""Shared by the images tests: a small spec and limits, colours, and Pillow-made files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from memesearch.images.decode import DecodeLimits, PreprocessSpec

SPEC = PreprocessSpec((32, 32))
LIMITS = DecodeLimits()
RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def save(path: Path, image: Image.Image, **params: Any) -> Path:
    """Write `image` to `path` and return the path."""
    image.save(path, **params)
    return path


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """`image` encoded in memory."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def colours(pixels: np.ndarray) -> set[tuple[int, ...]]:
    """The distinct RGB colours of a (h, w, 3) array."""
    return {tuple(int(v) for v in c) for c in np.unique(pixels.reshape(-1, 3), axis=0)}


def near(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 6) -> bool:
    """Whether one RGB pixel is within `tolerance` of `colour` in every channel."""
    return bool(np.abs(pixel.astype(int) - np.array(colour)).max() <= tolerance)


def oriented(fmt: str, orientation: int) -> bytes:
    """A 60x40 blue image, red in its stored top-left corner, tagged with `orientation`."""
    image = Image.new("RGB", (60, 40), BLUE)
    image.paste(RED, (0, 0, 20, 12))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, fmt, exif=exif.tobytes())


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Random pixels, which no lossless format compresses: originals always outweigh thumbnails."""
    bands = len(mode)
    array = np.random.default_rng(width * height).integers(0, 256, (height, width, bands))
    return Image.fromarray(array.astype(np.uint8).squeeze(), mode)
