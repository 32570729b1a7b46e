"""Domain errors: library code raises these; the CLI and the web layer map them once."""

from __future__ import annotations


class MemesearchError(Exception):
    """Base class of every error memesearch raises on purpose."""


class ConfigError(MemesearchError):
    """The configuration is invalid; the message names the key, the source and what is expected."""


class LibraryError(MemesearchError):
    """The library folder itself is missing or unreadable; nothing is changed in the store."""


class ImageDecodeError(MemesearchError):
    """A file or upload is not an image we can use; the message says why."""


class ModelLoadError(MemesearchError):
    """The configured model could not be loaded."""


class ModelNotReady(MemesearchError):
    """The model is still loading or has been shut down."""


class QueryError(MemesearchError):
    """A search request is malformed: empty, inconsistent, or numerically unusable."""


class UnknownImageError(QueryError):
    """A query names an image id that is not in the index."""

    def __init__(self, image_id: int) -> None:
        super().__init__(f"no indexed image has id {image_id}")
        self.image_id = image_id


class StoreError(MemesearchError):
    """The database is unusable (wrong schema, another model's vectors where not expected …)."""
