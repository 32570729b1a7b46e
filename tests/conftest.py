"""Shared fixtures: a tiny real open_clip model, a config written to disk, a meme corpus."""

from __future__ import annotations

import os

# Any attempt to reach the hub must fail at once instead of retrying for a minute.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from memesearch.config import Settings, load_settings  # noqa: E402
from memesearch.testing import build_tiny_model, write_config  # noqa: E402

SettingsFactory = Callable[..., Settings]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings must come from what each test says, not from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("MEMESEARCH_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight SigLIP-style model folder, loaded via `local-dir:` like a real one."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with other weights and another dimension: a different vector space."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "other", seed=1, embed_dim=24)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """An empty library folder."""
    folder = tmp_path / "memes"
    folder.mkdir()
    return folder


@pytest.fixture
def config_file(tmp_path: Path, library: Path, tiny_model_dir: Path) -> Path:
    """A config.toml for the tiny model, a library in tmp_path and a SQLite file beside it."""
    return write_config(
        tmp_path / "config.toml",
        {
            "library": {"path": str(library), "max_file_mb": 2},
            "database": {"url": f"sqlite:///{tmp_path / 'data' / 'memesearch.db'}"},
            "model": {"name": f"local-dir:{tiny_model_dir}", "batch_size": 16},
            "indexer": {"workers": 2, "settle_seconds": 0},
        },
    )


@pytest.fixture
def settings(config_file: Path) -> Settings:
    """Settings loaded from `config_file` through the real loader."""
    return load_settings(config_file)
