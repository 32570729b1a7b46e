"""Settings: file + environment, relative paths, and errors that name key, source and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from memesearch.config import DEFAULT_MODEL, MIB, Settings, load_settings, sqlite_file
from memesearch.embed.model import describe_model
from memesearch.errors import ConfigError, ModelLoadError
from memesearch.testing import write_config


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.model.name == DEFAULT_MODEL
    assert settings.model.device == "auto" and settings.model.precision == "auto"
    assert settings.library.path == tmp_path / "memes"
    assert settings.database.url == f"sqlite:///{tmp_path}/memesearch-data/memesearch.db"


def test_relative_paths_are_anchored_at_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf" / "model").mkdir(parents=True)
    config = write_config(
        tmp_path / "conf" / "config.toml",
        {
            "library": {"path": "../memes"},
            "database": {"url": "sqlite:///state/db.sqlite"},
            "model": {"name": "model"},
        },
    )
    settings = load_settings(config)
    assert settings.library.path == tmp_path / "memes"
    assert settings.database.url == f"sqlite:///{tmp_path}/conf/state/db.sqlite"
    assert settings.model.name == f"local-dir:{tmp_path}/conf/model"  # a plain folder


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "config.toml", {"model": {"batch_size": 8, "device": "cpu"}})
    monkeypatch.setenv("MEMESEARCH_MODEL__BATCH_SIZE", "64")
    monkeypatch.setenv("MEMESEARCH_LIBRARY__EXTENSIONS", '["JPG", ".png"]')
    monkeypatch.setenv("MEMESEARCH_SERVER__PORT", "9000")
    settings = load_settings(config)
    assert settings.model.batch_size == 64 and settings.model.device == "cpu"
    assert settings.library.extensions == (".jpg", ".png")
    assert settings.server.port == 9000


def test_config_file_chosen_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "elsewhere.toml", {"server": {"port": 8123}})
    monkeypatch.setenv("MEMESEARCH_CONFIG", str(config))
    settings = load_settings()
    assert settings.server.port == 8123


@pytest.mark.parametrize(
    ("sections", "fragments"),
    [
        ({"model": {"batch_size": 0}}, ["model.batch_size", "greater than or equal to 1"]),
        ({"model": {"device": "tpu"}}, ["model.device", "'auto', 'cpu', 'cuda' or 'cuda:N'"]),
        ({"model": {"precision": "fp8"}}, ["model.precision", "'auto', 'fp32', 'fp16' or 'bf16'"]),
        ({"server": {"port": "http"}}, ["server.port", "valid integer"]),
        ({"database": {"url": "::not a url::"}}, ["database.url", "not a database URL"]),
        ({"library": {"extensions": []}}, ["library.extensions", "at least one"]),
        ({"modle": {"name": "x"}}, ["modle", "unknown key"]),
        ({"index": {"kind": "magic"}}, ["index.kind", "'flat'"]),
    ],
)
def test_bad_values_name_the_key_the_file_and_the_expectation(
    tmp_path: Path, sections: dict[str, dict[str, object]], fragments: list[str]
) -> None:
    config = write_config(tmp_path / "config.toml", sections)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert str(config) in message
    for fragment in fragments:
        assert fragment in message


def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMESEARCH_MODEL__BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="environment variable MEMESEARCH_MODEL__BATCH_SIZE"):
        load_settings()
    monkeypatch.setenv("MEMESEARCH_MODEL__BATCH_SIZE", "8")
    monkeypatch.setenv("MEMESEARCH_MODEL__BATHSIZE", "8")
    with pytest.raises(ConfigError, match="model.bathsize .*unknown key"):
        load_settings()


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nname = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_the_shipped_example_config_is_valid(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "config.toml"
    settings = load_settings(shipped)
    assert settings.model.name == DEFAULT_MODEL


def test_a_bare_architecture_name_is_refused_not_silently_random(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "config.toml", {"model": {"name": "ViT-B-16-SigLIP"}})
    settings = load_settings(config)
    with pytest.raises(ModelLoadError, match="random weights"):
        describe_model(settings.model)
    monkeypatch.setenv("MEMESEARCH_MODEL__NAME", "local-dir:/nope")
    missing = load_settings(config)
    with pytest.raises(ModelLoadError, match="does not exist"):
        describe_model(missing.model)


def test_values_derived_from_the_settings(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml",
        {
            "library": {"max_file_mb": 1.5, "max_image_megapixels": 2.5},
            "database": {"url": "sqlite:///state/memes.db"},
            "thumbnails": {"folder": "cache/thumbs"},
            "server": {"max_body_mb": 3, "upload_cache_mb": 0.5},
        },
    )
    settings = load_settings(config)
    assert settings.library.max_file_bytes == int(1.5 * MIB) == 1_572_864
    assert settings.library.max_pixels == 2_500_000
    assert settings.server.max_body_bytes == 3 * MIB
    assert settings.server.upload_cache_bytes == MIB // 2
    assert settings.data_dir == tmp_path / "cache"
    assert settings.uploads_dir == tmp_path / "cache" / "uploads"
    assert settings.database.sqlite_file == tmp_path / "state" / "memes.db"
    assert settings.index_file == tmp_path / "state" / "memes.faiss"  # beside the database
    assert settings.own_paths == (
        tmp_path / "cache" / "thumbs",
        tmp_path / "cache" / "uploads",
        tmp_path / "state" / "memes.faiss",
        tmp_path / "state" / "memes.db",
    )


def test_the_index_file_without_a_sqlite_file(tmp_path: Path) -> None:
    server = Settings.model_validate(
        {
            "database": {"url": "postgresql+psycopg://u:p@db/memes"},
            "thumbnails": {"folder": str(tmp_path / "data" / "thumbs")},
        }
    )
    assert server.database.sqlite_file is None
    assert server.index_file == tmp_path / "data" / "index.faiss"
    assert tmp_path / "data" / "index.faiss" in server.own_paths
    assert len(server.own_paths) == 3  # no database file to keep out of the library
    chosen = Settings.model_validate({"index": {"file": str(tmp_path / "x.faiss")}})
    assert chosen.index_file == tmp_path / "x.faiss"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///relative/db.sqlite", Path("relative/db.sqlite")),
        ("sqlite:////abs/db.sqlite", Path("/abs/db.sqlite")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql://u@host/db", None),
    ],
)
def test_which_urls_name_a_sqlite_file(url: str, expected: Path | None) -> None:
    assert sqlite_file(url) == expected
