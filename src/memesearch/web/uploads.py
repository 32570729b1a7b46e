"""UploadCache: example images added to queries, kept by content hash, least recently used out."""

from __future__ import annotations

import os
import re
import time
from contextlib import suppress
from io import BytesIO
from pathlib import Path

from PIL import Image

from memesearch.config import megabytes
from memesearch.errors import ImageDecodeError
from memesearch.files import write_atomically
from memesearch.images.decode import DecodeLimits, content_hash, open_image

_HASH = re.compile(r"[0-9a-f]{64}")
_STALE_TEMPORARY_S = 3600  # a temporary file this old was left by a crashed write


def is_upload_hash(value: str) -> bool:
    """Whether `value` looks like a key of the cache (a blake3 hex digest)."""
    return bool(_HASH.fullmatch(value))


def media_type(data: bytes) -> str:
    """The MIME type of image bytes that `UploadCache.put` accepted."""
    with Image.open(BytesIO(data)) as image:
        return Image.MIME.get(image.format or "", "application/octet-stream")


class UploadCache:
    """A folder of uploaded images named by their hash, bounded to `max_bytes` in total."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def put(self, data: bytes, limits: DecodeLimits) -> str:
        """Store an image (ImageDecodeError if it is not one) and return its hash."""
        if len(data) > limits.max_file_bytes:
            raise ImageDecodeError(f"image is over the {megabytes(limits.max_file_bytes)} limit")
        open_image(data, limits).close()
        key = content_hash(data)
        target = self.folder / key
        try:
            _touch(target)  # already here: only make it the most recently used
        except FileNotFoundError:
            write_atomically(target, data)
            _touch(target)
        self._evict(keep=key)
        return key

    def get(self, key: str) -> bytes | None:
        """The image stored under `key`, or None once it has been evicted."""
        if not is_upload_hash(key):
            raise ValueError(f"not an upload hash: {key!r}")
        path = self.folder / key
        try:
            data = path.read_bytes()
            _touch(path)
        except FileNotFoundError:
            return None
        return data

    def _evict(self, *, keep: str) -> None:
        entries: list[tuple[int, int, Path]] = []
        stale_before = time.time() - _STALE_TEMPORARY_S
        with os.scandir(self.folder) as found:
            for entry in found:
                with suppress(FileNotFoundError):
                    stat = entry.stat()
                    if entry.name.startswith("."):
                        if stat.st_mtime < stale_before:
                            os.unlink(entry.path)
                    elif is_upload_hash(entry.name):
                        entries.append((stat.st_mtime_ns, stat.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path.name != keep:
                with suppress(FileNotFoundError):
                    path.unlink()
                total -= size


def _touch(path: Path) -> None:
    # The kernel stamps files from a coarse clock; uploads a few ms apart must still be ordered.
    now = time.time_ns()
    os.utime(path, ns=(now, now))
