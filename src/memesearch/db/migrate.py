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
        migrate(engine, "head")
    return str(head)


def migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    """Run the migrations up (or down) to `revision` in one transaction.

    On SQLite, foreign keys are off meanwhile: a migration that rebuilds a table (copy, drop,
    rename) must not cascade the drop into the rows that point at it. They are checked before
    the transaction commits.
    """
    config = alembic_config()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:  # only outside a transaction does SQLite take this pragma
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                (command.downgrade if down else command.upgrade)(config, revision)
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise StoreError(f"migrating to {revision} broke the links between tables")
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _known(script: ScriptDirectory) -> set[str]:
    return {rev.revision for rev in script.walk_revisions()}
