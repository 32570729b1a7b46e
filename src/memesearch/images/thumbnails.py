"""Thumbnails: spec, encoding, atomic writes into a hash-keyed cache, one made from a file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any, Final

from PIL import Image

from memesearch.errors import ImageDecodeError, MemesearchError
from memesearch.files import write_atomically
from memesearch.images.decode import (
    PILLOW_ERRORS,
    WIDE_GREY_MODES,
    DecodeLimits,
    PreprocessSpec,
    content_hash,
    decode_errors,
    exif_orientation,
    is_int,
    is_positive_int,
    load_image,
    open_image,
    read_file,
    to_rgb,
    to_rgba,
    upright,
)

THUMBNAIL_FORMATS: Final = ("WEBP", "AVIF")
# What every current browser shows in an <img>; an MPO is a JPEG with more pictures appended.
BROWSER_FORMATS: Final = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "AVIF"})
# Modes whose ICC profile (if any) describes RGB, so it still fits the converted thumbnail.
_RGB_PROFILE_MODES: Final = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"})
# WebP cannot encode a longer side; a hairline strip is shrunk to fit rather than left without.
_MAX_THUMBNAIL_SIDE: Final = 16383
_HEX_DIGEST: Final = re.compile(r"[0-9a-f]{2,128}")
_THUMBNAIL_ERRORS: Final[tuple[type[BaseException], ...]] = (ImageDecodeError, *PILLOW_ERRORS)


@dataclass(frozen=True, slots=True)
class ThumbnailSpec:
    """Where and how the indexer writes thumbnails, one file per content hash."""

    folder: Path  # cache root; files live at folder / hash[:2] / f"{hash}.{extension}"
    width: int = 512  # the most a thumbnail is wide; never upscaled, the height keeps the aspect
    format: str = "WEBP"  # one of THUMBNAIL_FORMATS that this Pillow build can encode
    quality: int = 80

    def __post_init__(self) -> None:
        """Reject sizes and qualities the encoders refuse, and formats this Pillow cannot write."""
        if not is_positive_int(self.width):
            raise ValueError(f"thumbnail width must be a positive integer, got {self.width!r}")
        if not is_int(self.quality) or not 0 <= self.quality <= 100:
            raise ValueError(f"thumbnail quality must be an integer 0-100, got {self.quality!r}")
        if self.format not in THUMBNAIL_FORMATS:
            raise ValueError(
                f"thumbnail format must be one of {THUMBNAIL_FORMATS}, got {self.format!r}"
            )
        if self.format not in (supported := thumbnail_supported_formats()):
            raise ValueError(
                f"this Pillow build cannot encode {self.format} thumbnails; "
                f"it can encode: {', '.join(supported) or 'none of them'}"
            )

    @property
    def extension(self) -> str:
        """File extension of the thumbnails: "webp" or "avif"."""
        return self.format.lower()

    def path_for(self, content_hash: str) -> Path:
        """Where the thumbnail of the image with this content hash lives."""
        # The hash becomes part of a path, so anything but a hex digest could escape the folder.
        if not isinstance(content_hash, str) or not _HEX_DIGEST.fullmatch(content_hash):
            raise ValueError(f"not a content hash: {content_hash!r}")
        return self.folder / content_hash[:2] / f"{content_hash}.{self.extension}"


@cache
def thumbnail_supported_formats() -> tuple[str, ...]:
    """Which of THUMBNAIL_FORMATS this Pillow build can encode."""
    Image.init()
    return tuple(name for name in THUMBNAIL_FORMATS if name in Image.SAVE)


def fit_to_serve(
    data: bytes, image_format: str, width: int, orientation: int, thumbnails: ThumbnailSpec
) -> bytes | None:
    """`data` if the original may stand in for its thumbnail (when no heavier), else None."""
    # Served untouched, the original must look the same: browsers differ on EXIF.
    serves_itself = image_format in BROWSER_FORMATS and orientation == 1
    return data if serves_itself and width <= thumbnails.width else None


class ThumbnailWriteError(MemesearchError):
    """A thumbnail was made but could not be stored (disk full, folder gone): worth a retry."""


def write_thumbnail(
    image: Image.Image, thumbnails: ThumbnailSpec, digest: str, original: bytes | None
) -> tuple[str | None, str | None]:
    """Write the thumbnail unless `original` (fit to serve as is) weighs no more: (ext, error)."""
    try:
        return store_thumbnail(image, thumbnails, digest, original), None
    except (ImageDecodeError, ThumbnailWriteError) as exc:
        return None, str(exc)


def store_thumbnail(
    image: Image.Image, thumbnails: ThumbnailSpec, digest: str, original: bytes | None
) -> str | None:
    """Like `write_thumbnail`, raising: ImageDecodeError for the image, ThumbnailWriteError for
    the disk; the extension written, or None when the original serves as its own thumbnail."""
    try:
        encoded = _encode_thumbnail(image, thumbnails)
    except MemoryError as exc:
        raise ImageDecodeError("cannot make thumbnail: not enough memory") from exc
    except _THUMBNAIL_ERRORS as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise ImageDecodeError(f"cannot make thumbnail: {detail}") from exc
    if original is not None and len(original) <= len(encoded):
        return None
    target = thumbnails.path_for(digest)
    try:
        write_atomically(target, encoded)
    except OSError as exc:
        raise ThumbnailWriteError(
            f"cannot write thumbnail {target}: {exc.strerror or exc}"
        ) from exc
    return thumbnails.extension


def _encode_thumbnail(image: Image.Image, thumbnails: ThumbnailSpec) -> bytes:
    """The encoded thumbnail of a decoded, upright image."""
    shrunk = _shrink(_to_display_mode(image), thumbnails.width)
    profile = image.info.get("icc_profile")
    # A grey or CMYK profile would misdescribe the converted pixels; an RGB one keeps P3 photos
    # from looking washed out. EXIF is left out: the pixels are already upright.
    options: dict[str, Any] = {
        "quality": thumbnails.quality,
        "icc_profile": profile if image.mode in _RGB_PROFILE_MODES else None,
    }
    if thumbnails.format == "AVIF":
        options["max_threads"] = 1  # the worker pool is the parallelism already
    buffer = BytesIO()
    shrunk.save(buffer, thumbnails.format, **options)
    return buffer.getvalue()


def _to_display_mode(image: Image.Image) -> Image.Image:
    """8-bit RGB, or RGBA when the image has any transparency."""
    if image.mode in WIDE_GREY_MODES or image.mode == "F" or not image.has_transparency_data:
        return to_rgb(image)
    return to_rgba(image)


def _shrink(image: Image.Image, width: int) -> Image.Image:
    """The image at most `width` wide, never upscaled, keeping its aspect ratio."""
    scale = min(1.0, width / image.width, _MAX_THUMBNAIL_SIDE / image.height)
    if scale == 1.0:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


class Backfilled(StrEnum):
    """What `make_thumbnail` did for a file whose thumbnail was missing."""

    WRITTEN = "written"  # the thumbnail is on disk now
    ORIGINAL = "original"  # the original weighs no more than a thumbnail: it is its own
    CHANGED = "changed"  # the file no longer holds the content it was indexed with


def make_thumbnail(
    path: str | os.PathLike[str], digest: str, thumbnails: ThumbnailSpec, limits: DecodeLimits
) -> Backfilled:
    """Make the thumbnail of the file at `path` as indexing does, if it still hashes to `digest`.

    ImageDecodeError (FileVanishedError when it is gone) if it cannot be read or decoded,
    ThumbnailWriteError if the thumbnail cannot be stored.
    """
    data = read_file(path, limits)
    # A thumbnail of other content stored under this hash would sit behind an immutable URL;
    # hashing costs milliseconds next to the decode.
    if content_hash(data) != digest:
        return Backfilled.CHANGED
    with open_image(data, limits) as image:
        (width, _), image_format = image.size, image.format or "UNKNOWN"
        # load_image drafts a JPEG down to a box of the spec's size: here, the thumbnail's.
        load_image(image, PreprocessSpec(size=(thumbnails.width, thumbnails.width)))
        orientation = exif_orientation(image)
        with decode_errors("image could not be processed"):
            displayed = upright(image, orientation)
        original = fit_to_serve(data, image_format, width, orientation, thumbnails)
        extension = store_thumbnail(displayed, thumbnails, digest, original)
    return Backfilled.ORIGINAL if extension is None else Backfilled.WRITTEN
