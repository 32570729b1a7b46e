"""Photo-like test images for benchmarks: gradients, shapes and grain, 1–12 MP, JPEG and PNG.

Flat colours compress to nothing and decode in no time; these carry smooth light, edges and
sensor-like grain, so file sizes (about 0.3 bytes a pixel as JPEG, 1.5–2 as PNG) and decode
costs are those of camera photos. A set is generated once, in parallel, and kept in a folder
named by its count and seed; `photo_set` returns it at once when it is already complete.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

VERSION = 1  # bump when the pictures change, so cached sets are regenerated
ASPECTS = ((4, 3), (3, 2), (16, 9), (1, 1))
ROTATIONS = (6, 8, 3)  # EXIF orientations a phone writes: 90° either way, upside down


@dataclass(frozen=True, slots=True)
class PhotoPlan:
    """One photo to write: where, how big, in which format, with which EXIF orientation."""

    path: str  # relative to the set's folder
    width: int
    height: int
    format: str  # "JPEG" or "PNG"
    quality: int  # JPEG only
    orientation: int  # 1 = upright, no EXIF written
    seed: int


def plan_photos(count: int, seed: int, *, png_share: float = 0.15) -> list[PhotoPlan]:
    """`count` photos spread evenly over 1–12 MP, about `png_share` of them PNG, 5 % rotated."""
    rng = np.random.default_rng([seed, VERSION])
    plans = []
    for i in range(count):
        megapixels = 1.0 + 11.0 * (i + rng.random()) / count  # stratified: the full range
        long, short = ASPECTS[int(rng.integers(len(ASPECTS)))]
        portrait = rng.random() < 0.3
        width = int((megapixels * 1e6 * long / short) ** 0.5)
        height = int(width * short / long)
        if portrait:
            width, height = height, width
        fmt = "PNG" if rng.random() < png_share else "JPEG"
        rotated = fmt == "JPEG" and rng.random() < 0.05
        orientation = int(ROTATIONS[i % len(ROTATIONS)]) if rotated else 1
        suffix = ".png" if fmt == "PNG" else ".jpg"
        plans.append(
            PhotoPlan(
                path=f"roll{i % 20:02d}/IMG_{i:05d}{suffix}",
                width=width,
                height=height,
                format=fmt,
                quality=int(rng.integers(80, 96)),
                orientation=orientation,
                seed=int(rng.integers(2**31)),
            )
        )
    rng.shuffle(plans)  # sizes and formats interleave in the order files are listed
    return plans


def render(plan: PhotoPlan) -> Image.Image:
    """The picture: a smooth gradient, soft large-scale texture, a few shapes, fine grain."""
    rng = np.random.default_rng(plan.seed)
    size = (plan.width, plan.height)
    sky = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    image = Image.fromarray(sky).resize(size, Image.Resampling.BICUBIC)
    cells = (max(2, plan.height // 64), max(2, plan.width // 64), 3)
    texture = Image.fromarray(rng.integers(0, 256, cells, dtype=np.uint8))
    image = Image.blend(image, texture.resize(size, Image.Resampling.BICUBIC), 0.35)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        xs = sorted(rng.integers(0, plan.width, 2).tolist())
        ys = sorted(rng.integers(0, plan.height, 2).tolist())
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((xs[0], ys[0], xs[1], ys[1]), fill=fill)
    amplitude = int(rng.integers(6, 16))
    grain = rng.integers(128 - amplitude, 128 + amplitude, (plan.height, plan.width), np.uint8)
    noise = Image.fromarray(grain)
    return ImageChops.add(image, Image.merge("RGB", (noise, noise, noise)), 1.0, -128)


def write_photo(folder: Path, plan: PhotoPlan) -> int:
    """Write one photo; returns its size in bytes."""
    image = render(plan)
    target = folder / plan.path
    target.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, object] = {}
    if plan.format == "JPEG":
        options["quality"] = plan.quality
        if plan.orientation != 1:
            # Stored as the camera saw it; the EXIF tag says how to turn it upright.
            exif = Image.Exif()
            exif[0x0112] = plan.orientation
            options["exif"] = exif.tobytes()
    else:
        options["compress_level"] = 3  # zlib level 6 writes 3x slower for a 5 % smaller file
    image.save(target, plan.format, **options)
    return target.stat().st_size


def _write_one(job: tuple[str, PhotoPlan]) -> int:
    return write_photo(Path(job[0]), job[1])


def photo_set(workdir: Path, count: int, seed: int, *, workers: int = 0) -> tuple[Path, list[str]]:
    """The folder of a generated set and its files (relative paths), generating it if needed."""
    home = workdir / f"photos-n{count}-seed{seed}-v{VERSION}"
    manifest = home / "manifest.json"
    library = home / "photos"
    if manifest.exists():
        return library, json.loads(manifest.read_text(encoding="utf-8"))["files"]
    shutil.rmtree(home, ignore_errors=True)  # a half-written set from an interrupted run
    library.mkdir(parents=True)
    plans = plan_photos(count, seed)
    jobs = [(str(library), plan) for plan in plans]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        sizes = list(pool.map(_write_one, jobs, chunksize=4))
    files = [plan.path for plan in plans]
    summary = {"files": files, "bytes": sum(sizes), "plans": [asdict(p) for p in plans]}
    manifest.write_text(json.dumps(summary), encoding="utf-8")  # last: marks the set complete
    return library, files


def describe(workdir: Path, count: int, seed: int) -> dict[str, object]:
    """Counts, formats, megapixels and bytes of a generated set, for the report."""
    home = workdir / f"photos-n{count}-seed{seed}-v{VERSION}"
    data = json.loads((home / "manifest.json").read_text(encoding="utf-8"))
    plans = data["plans"]
    pixels = [p["width"] * p["height"] / 1e6 for p in plans]
    return {
        "files": len(plans),
        "jpeg": sum(p["format"] == "JPEG" for p in plans),
        "png": sum(p["format"] == "PNG" for p in plans),
        "rotated": sum(p["orientation"] != 1 for p in plans),
        "megapixels_min": round(min(pixels), 2),
        "megapixels_mean": round(sum(pixels) / len(pixels), 2),
        "megapixels_max": round(max(pixels), 2),
        "gigabytes": round(data["bytes"] / 1e9, 2),
    }
