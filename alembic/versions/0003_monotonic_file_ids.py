"""File ids are never handed out twice (SQLite AUTOINCREMENT).

An id is public (`image_id` terms, `/thumbs/<id>` URLs, saved links): one given to a file that
was deleted must never name another file. SQLite reused the highest free rowid; with
AUTOINCREMENT it counts on from the highest id it ever gave. The table is rebuilt to get it
(`memesearch.db.migrate` runs migrations with foreign keys off, so the vectors that point at the
files stay). Other databases (PostgreSQL's identity columns) never reused ids: nothing to do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 11:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _rebuild_files(autoincrement=True)


def downgrade() -> None:
    _rebuild_files(autoincrement=False)


def _rebuild_files(*, autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "files", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass  # the copy keeps every id; AUTOINCREMENT starts counting from the highest
