"""Bring the database schema to the newest Alembic revision shipped with this version."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from memesearch.errors import StoreError
from memesearch.resources import data_path


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(data_path("alembic")))
    return config


def upgrade_schema(engine: Engine) -> str:
    """Upgrade to head (idempotent) and return the revision now in place."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current is not None and current != head and current not in _known(script):
        raise StoreError(
            f"the database is at schema revision {current}, which this version of memesearch "
            "does not know; it was written by a newer version"
        )
    if current != head:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    return str(head)


def _known(script: ScriptDirectory) -> set[str]:
    return {rev.revision for rev in script.walk_revisions()}
