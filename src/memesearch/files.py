"""Small file-system helpers shared by the caches (thumbnails, uploads)."""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from pathlib import Path


def write_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a temporary file, so readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several writers may store the same content at once; each needs its own temporary name.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        with suppress(OSError):
            temporary.unlink()
        raise
