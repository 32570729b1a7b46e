"""Typed settings: `config.toml` overlaid with `MEMESEARCH_SECTION__KEY` environment variables."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url

from memesearch.errors import ConfigError

ENV_PREFIX = "MEMESEARCH_"
CONFIG_ENV = "MEMESEARCH_CONFIG"
DEFAULT_CONFIG = Path("config.toml")
DEFAULT_MODEL = "hf-hub:timm/ViT-SO400M-14-SigLIP-384"
MIB: Final = 1024 * 1024  # what every `*_mb` key counts in
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jfif",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".avif",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LibrarySettings(_Section):
    """Where the memes are and which files count as images."""

    path: Path = Path("memes")
    extensions: tuple[str, ...] = Field(default=IMAGE_EXTENSIONS, validate_default=True)
    follow_symlinks: bool = False
    include_hidden: bool = False
    max_file_mb: float = Field(default=200.0, gt=0)
    max_image_megapixels: float = Field(default=100.0, gt=0)

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one extension is needed")
        return tuple(sorted({"." + ext.lower().lstrip(".") for ext in value}))

    @property
    def max_file_bytes(self) -> int:
        """`max_file_mb` in bytes."""
        return mebibytes(self.max_file_mb)

    @property
    def max_pixels(self) -> int:
        """`max_image_megapixels` in pixels."""
        return int(self.max_image_megapixels * 1_000_000)


class DatabaseSettings(_Section):
    """The SQLAlchemy URL of the store; SQLite by default."""

    url: str = "sqlite:///memesearch-data/memesearch.db"

    @field_validator("url")
    @classmethod
    def _parseable(cls, value: str) -> str:
        try:
            make_url(value)
        except Exception as exc:  # SQLAlchemy raises ArgumentError for garbage
            raise ValueError(f"not a database URL ({exc})") from exc
        return value

    @property
    def sqlite_file(self) -> Path | None:
        """The database file when the store is a SQLite file; None for a server or `:memory:`."""
        return sqlite_file(self.url)


class ModelSettings(_Section):
    """Which open_clip model embeds images and text, and how it runs."""

    name: str = Field(default=DEFAULT_MODEL, min_length=1)
    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    cache_dir: Path | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        base, _, index = value.partition(":")
        if base not in {"auto", "cpu", "cuda"} or (index and not index.isdigit()):
            raise ValueError("expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value


class IndexSettings(_Section):
    """The FAISS index built over the stored vectors."""

    kind: Literal["auto", "flat", "ivf"] = "auto"
    approximate_from: int = Field(default=50_000, ge=1_000)
    nprobe: int = Field(default=0, ge=0, le=65_536)
    retrain_growth: float = Field(default=4.0, ge=1.5, le=1_000)
    persist: bool = True
    file: Path | None = None
    save_interval_seconds: float = Field(default=300.0, ge=0)
    gpu: Literal["auto", "off"] = "auto"


class IndexerSettings(_Section):
    """How the library is scanned and decoded."""

    workers: int = Field(default=0, ge=0, le=256)
    prefetch_batches: int = Field(default=4, ge=1, le=64)
    watch: bool = True
    debounce_ms: int = Field(default=500, ge=0, le=60_000)
    rescan_minutes: float = Field(default=60.0, ge=0)
    settle_seconds: float = Field(default=10.0, ge=0, le=3600)
    mass_removal_share: float = Field(default=0.5, gt=0, le=1)

    def worker_count(self) -> int:
        """Decode processes to run: the configured number, or every core when 0."""
        return self.workers or max(1, os.cpu_count() or 1)


class ThumbnailSettings(_Section):
    """Thumbnails made at index time, kept in a cache folder keyed by content hash."""

    folder: Path = Path("memesearch-data/thumbnails")
    width: int = Field(default=512, ge=32, le=4096)
    format: Literal["webp", "avif"] = "webp"
    quality: int = Field(default=80, ge=1, le=100)


class AuthSettings(_Section):
    """Access control for instances reachable by others; off on a private box."""

    mode: Literal["off", "token", "basic"] = "off"
    token: str = ""
    username: str = "memesearch"
    password: str = ""
    public_metrics: bool = False
    read_only: bool = False
    session_days: float = Field(default=30.0, gt=0, le=3650)

    @model_validator(mode="after")
    def _credentials_present(self) -> AuthSettings:
        if self.mode == "token" and len(self.token) < 16:
            raise ValueError("mode 'token' needs a token of at least 16 characters")
        if self.mode == "basic" and (not self.username or len(self.password) < 8):
            raise ValueError("mode 'basic' needs a username and a password of 8+ characters")
        return self


class ServerSettings(_Section):
    """Where `memesearch serve` listens, and how much a request may carry."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_mb: float = Field(default=25.0, gt=0)
    max_terms: int = Field(default=16, ge=1, le=256)
    search_batch_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    upload_cache_mb: float = Field(default=256.0, ge=0)
    max_query_megapixels: float = Field(default=50.0, gt=0)
    query_decodes: int = Field(default=2, ge=1, le=64)
    auth: AuthSettings = AuthSettings()

    @property
    def max_body_bytes(self) -> int:
        """`max_body_mb` in bytes."""
        return mebibytes(self.max_body_mb)

    @property
    def max_query_pixels(self) -> int:
        """`max_query_megapixels` in pixels."""
        return int(self.max_query_megapixels * 1_000_000)

    @property
    def upload_cache_bytes(self) -> int:
        """`upload_cache_mb` in bytes."""
        return mebibytes(self.upload_cache_mb)


class Settings(BaseSettings):
    """Every setting of memesearch; build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    library: LibrarySettings = LibrarySettings()
    database: DatabaseSettings = DatabaseSettings()
    model: ModelSettings = ModelSettings()
    index: IndexSettings = IndexSettings()
    indexer: IndexerSettings = IndexerSettings()
    thumbnails: ThumbnailSettings = ThumbnailSettings()
    server: ServerSettings = ServerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The config file's values arrive as init values; the environment overrides them."""
        return env_settings, init_settings

    @property
    def data_dir(self) -> Path:
        """Where memesearch keeps its own files besides the database: above the thumbnails."""
        return self.thumbnails.folder.parent

    @property
    def uploads_dir(self) -> Path:
        """The cache of example images added to queries in the web page."""
        return self.data_dir / "uploads"

    @property
    def index_file(self) -> Path:
        """Where the index is saved: `[index] file`, else beside the SQLite file (or the data)."""
        if self.index.file is not None:
            return self.index.file
        database = self.database.sqlite_file
        return database.with_suffix(".faiss") if database else self.data_dir / "index.faiss"

    @property
    def own_paths(self) -> tuple[Path, ...]:
        """What memesearch writes, never indexed or watched even inside the library folder."""
        paths = [self.thumbnails.folder, self.uploads_dir, self.index_file]  # index: + temp files
        database = self.database.sqlite_file
        if database is not None:
            paths.append(database)  # the file (and its -wal/-shm), never its folder
        return tuple(paths)

    def resolved(self, base_dir: Path) -> Settings:
        """A copy whose relative paths are anchored at `base_dir`, the config file's folder."""
        library = self.library.model_copy(update={"path": _anchor(self.library.path, base_dir)})
        model_updates: dict[str, Any] = {"name": _anchor_model_name(self.model.name, base_dir)}
        if self.model.cache_dir is not None:
            model_updates["cache_dir"] = _anchor(self.model.cache_dir, base_dir)
        thumbnails = self.thumbnails.model_copy(
            update={"folder": _anchor(self.thumbnails.folder, base_dir)}
        )
        index = self.index
        if index.file is not None:
            index = index.model_copy(update={"file": _anchor(index.file, base_dir)})
        return self.model_copy(
            update={
                "library": library,
                "thumbnails": thumbnails,
                "index": index,
                "database": DatabaseSettings(url=_anchor_sqlite(self.database.url, base_dir)),
                "model": self.model.model_copy(update=model_updates),
            }
        )


def _anchor(path: Path, base_dir: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def mebibytes(megabytes: float) -> int:
    """A `*_mb` setting in bytes."""
    return int(megabytes * MIB)


def megabytes(count: int) -> str:
    """A byte count as the `*_mb` settings write it, for messages: "25 MB", "1.5 MB"."""
    return f"{count / MIB:g} MB"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _anchor_sqlite(url: str, base_dir: Path) -> str:
    database = sqlite_file(url)
    if database is None:
        return url
    anchored = str(_anchor(database, base_dir))
    return make_url(url).set(database=anchored).render_as_string(hide_password=False)


def _anchor_model_name(name: str, base_dir: Path) -> str:
    if name.startswith("local-dir:"):
        return "local-dir:" + str(_anchor(Path(name.removeprefix("local-dir:")), base_dir))
    if name.startswith("hf-hub:"):
        return name
    candidate = _anchor(Path(name), base_dir)
    # A bare directory is a model folder; anything else is an open_clip built-in name.
    return "local-dir:" + str(candidate) if candidate.is_dir() else name


def config_path_from(explicit: Path | None) -> Path | None:
    """The config file: `--config`, else `$MEMESEARCH_CONFIG`, else `./config.toml` if present."""
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: Path | None = None) -> Settings:
    """Read the config file, apply environment overrides, validate, and anchor relative paths."""
    config_path = config_path_from(path)
    file_data = _read_toml(config_path) if config_path is not None else {}
    try:
        settings = Settings(**file_data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_path)) from exc
    base_dir = config_path.resolve().parent if config_path is not None else Path.cwd()
    return settings.resolved(base_dir)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc


def _describe(exc: ValidationError, path: Path | None) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc)
        variable = ENV_PREFIX + "__".join(loc).upper()
        if variable in os.environ:
            where = f"environment variable {variable}"
        else:
            where = str(path) if path is not None else "defaults"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        # Never echo credentials into logs or terminals.
        got = "" if key.startswith("server.auth") else f"; got {error.get('input')!r}"
        lines.append(f"  {key} ({where}): {message}{got}")
    return "\n".join(lines)
