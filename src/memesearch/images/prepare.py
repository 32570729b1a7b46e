"""Per-file work of the decode workers: hash, decode, preprocess for the model, thumbnail."""

from __future__ import annotations

import os
from dataclasses import dataclass

from memesearch.images.decode import (
    SWAPS_AXES,
    DecodeLimits,
    Pixels,
    PreprocessSpec,
    check_file_size,
    content_hash,
    decode_errors,
    exif_orientation,
    load_image,
    open_image,
    read_file,
    resize_for_model,
    upright,
)
from memesearch.images.thumbnails import ThumbnailSpec, fit_to_serve, write_thumbnail


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """One decoded image, ready for the model, plus what the index records about it."""

    content_hash: str  # blake3 hex digest of the file bytes
    width: int  # of the original image, after EXIF orientation
    height: int
    format: str  # Pillow format name
    pixels: Pixels  # uint8 (spec.size[0], spec.size[1], 3), C-contiguous
    thumbnail: str | None = None  # extension of the thumbnail on disk; None: serve the original
    thumbnail_error: str | None = None  # why no thumbnail could be written, for the log


def prepare_bytes(
    data: bytes,
    spec: PreprocessSpec,
    limits: DecodeLimits,
    thumbnails: ThumbnailSpec | None = None,
) -> PreparedImage:
    """Hash, decode and preprocess one encoded image held in memory; thumbnail it if asked."""
    check_file_size(len(data), limits)
    digest = content_hash(data)
    thumbnail = error = None
    if thumbnails is not None and os.path.exists(thumbnails.path_for(digest)):
        # Renames and copies of known content reuse what is on disk, and need no bigger decode.
        thumbnail, thumbnails = thumbnails.extension, None
    with open_image(data, limits) as image:
        (width, height), image_format = image.size, image.format or "UNKNOWN"
        load_image(image, spec)
        orientation = exif_orientation(image)
        with decode_errors("image could not be processed"):
            displayed = upright(image, orientation)
            pixels = resize_for_model(displayed, spec)
        if thumbnails is not None:
            original = fit_to_serve(data, image_format, width, orientation, thumbnails)
            thumbnail, error = write_thumbnail(displayed, thumbnails, digest, original)
    if orientation in SWAPS_AXES:
        width, height = height, width
    return PreparedImage(digest, width, height, image_format, pixels, thumbnail, error)


def prepare_file(
    path: str | os.PathLike[str],
    spec: PreprocessSpec,
    limits: DecodeLimits,
    thumbnails: ThumbnailSpec | None = None,
) -> PreparedImage:
    """Read, hash, decode and preprocess one image file; thumbnail it if asked."""
    return prepare_bytes(read_file(path, limits), spec, limits, thumbnails)
