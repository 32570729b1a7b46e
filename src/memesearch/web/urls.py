"""URLs of originals and thumbnails, shared by the API and the pages."""

from __future__ import annotations

from urllib.parse import quote


def media_url(path: str) -> str:
    """Where the original file is served."""
    return "/media/" + quote(path)


def thumbnail_url(file_id: int, content_hash: str | None, extension: str) -> str:
    """Where the thumbnail is served; the hash makes the URL change when the content does."""
    version = f"?v={content_hash[:16]}" if content_hash else ""
    return f"/thumbs/{file_id}.{extension}{version}"
