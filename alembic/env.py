"""Alembic environment: uses the connection memesearch hands over, else the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from memesearch.db.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # Batch mode lets later revisions alter SQLite tables (copy-and-move), harmless elsewhere.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against the connection given by `upgrade_schema`, or open one for the alembic CLI."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from memesearch.config import load_settings
    from memesearch.db.session import create_store_engine

    url = context.config.get_main_option("sqlalchemy.url") or load_settings().database.url
    engine = create_store_engine(url)
    with engine.connect() as connection:
        _run(connection)
        connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("memesearch migrations run online only: use `memesearch migrate`")
run_migrations_online()
