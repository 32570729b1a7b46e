"""Engine construction: SQLite gets WAL, foreign keys and a busy timeout on every connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from memesearch.config import sqlite_file
from memesearch.errors import StoreError


def create_store_engine(url: str) -> Engine:
    """Create the engine for `url`, making the SQLite file's folder if needed."""
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    database = sqlite_file(url)
    if database is not None:
        folder = database.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create database folder {folder}: {exc.strerror}") from exc
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    engine = create_engine(url, **kwargs)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Set before anything is written (a no-op on an existing file): a float16 vector row of a
    # 1152-d model is ~2.4 KB, one to a 4 KB page (4 KB on disk each); 8 KB pages hold three.
    cursor.execute("PRAGMA page_size=8192")
    # WAL lets searches read while the indexer writes; NORMAL sync is crash-safe under WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (rows are handed to other layers)."""
    return sessionmaker(engine, expire_on_commit=False)
