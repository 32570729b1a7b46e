"""Which library files may be served, and how to describe them: pure stdlib, no web framework."""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from memesearch.errors import MemesearchError

# Python's table lacks these on some versions, and /etc/mime.types may lack them too.
_FALLBACK_TYPES: Final = {".webp": "image/webp", ".avif": "image/avif"}
_DEFAULT_TYPE: Final = "application/octet-stream"
_DRIVE: Final = re.compile(r"[A-Za-z]:")


class UnsafePathError(MemesearchError):
    """A requested media path is not a servable file inside the library; the message says why."""


def library_file(
    root: Path,
    relative: str,
    *,
    allow_hidden: bool = False,
    follow_symlinks: bool = False,
    indexed_as: tuple[int, int] | None = None,
) -> Path:
    """Real path of an existing regular file of the library, named by a '/'-separated path.

    A path that leads out of `root` through a symlink is refused, unless the library follows
    symlinks (the indexer went there on purpose) and the file is still the one that was
    indexed: `indexed_as` is its (size, mtime_ns) then, and a link turned elsewhere since, or a
    file changed since, is refused until the indexer has looked at it again.
    """
    segments = _checked_segments(relative, allow_hidden)
    base = Path(os.path.realpath(root))
    # realpath follows every symlink, so a link inside the library that leads out is caught here.
    resolved = Path(os.path.realpath(base.joinpath(*segments)))
    inside = resolved.is_relative_to(base)
    if not inside and (not follow_symlinks or indexed_as is None):
        raise UnsafePathError(f"{relative!r} resolves outside the library")
    if inside and not allow_hidden and _has_hidden(resolved.relative_to(base).parts):
        raise UnsafePathError(f"{relative!r} resolves to a hidden file")
    try:
        info = os.stat(resolved)
    except OSError as exc:
        raise UnsafePathError(f"{relative!r} cannot be read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePathError(f"{relative!r} is not a regular file")
    if not inside and (info.st_size, info.st_mtime_ns) != indexed_as:
        raise UnsafePathError(f"{relative!r} leads out of the library to a file not indexed")
    return resolved


def etag_for(path: Path) -> str:
    """Strong, quoted ETag that changes whenever the file is replaced or rewritten."""
    info = path.stat()
    return f'"{info.st_size:x}-{info.st_mtime_ns:x}-{info.st_ino:x}"'


def content_type_for(path: Path) -> str:
    """MIME type from the file's extension; application/octet-stream when unknown."""
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or _FALLBACK_TYPES.get(path.suffix.lower(), _DEFAULT_TYPE)


def _checked_segments(relative: str, allow_hidden: bool) -> list[str]:
    """The path's segments, refusing anything that could name a file outside the library."""
    if not relative:
        raise UnsafePathError("empty path")
    # Refused outright rather than normalised: the caller decoded the URL once, and anything a
    # second decoding or another OS would read differently must not get a second chance.
    if "\x00" in relative:
        raise UnsafePathError("path contains a NUL byte")
    if "\\" in relative:
        raise UnsafePathError(f"{relative!r} contains a backslash")
    if relative.startswith("/"):
        raise UnsafePathError(f"{relative!r} is absolute")
    if _DRIVE.match(relative):
        raise UnsafePathError(f"{relative!r} starts with a drive letter")
    segments = relative.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise UnsafePathError(f"{relative!r} has an empty, '.' or '..' segment")
    if not allow_hidden and _has_hidden(segments):
        raise UnsafePathError(f"{relative!r} names a hidden file or folder")
    return segments


def _has_hidden(segments: Sequence[str]) -> bool:
    """Whether any segment is hidden, i.e. starts with a dot."""
    return any(segment.startswith(".") for segment in segments)
