"""Locate templates, static files and migrations in a wheel install or a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """Folder `name` ("alembic", "templates", "static"), wherever this install keeps it."""
    # A wheel carries them in memesearch/_data; an editable install reads the repository root.
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"memesearch data folder {name!r} is missing from this installation")
