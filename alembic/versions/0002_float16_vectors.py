"""Store vectors as float16: half the bytes, the same rankings.

Converts every float32 vector in place, in pages, inside the migration's one transaction: an
interrupted upgrade leaves the store as it was. The store's generation is bumped, so that a saved
index (built from the float32 values) is rebuilt from the converted ones. SQLite gives the freed
pages back to the file system only on `VACUUM`; until then they are reused by later writes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 17:30:00.000000
"""

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)
_PAGE = 2000
_DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}

vectors = sa.table(
    "vectors",
    sa.column("file_id", sa.Integer),
    sa.column("model_id", sa.String),
    sa.column("dtype", sa.String),
    sa.column("vector", sa.LargeBinary),
)
store_meta = sa.table("store_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    _convert("float32", "float16")


def downgrade() -> None:
    _convert("float16", "float32")  # widening: exact


def _convert(source: str, target: str) -> None:
    """Rewrite every `source` vector as `target`, a page at a time in (file_id, model_id) order."""
    connection = op.get_bind()
    rewrite = (
        sa.update(vectors)
        .where(
            vectors.c.file_id == sa.bindparam("b_file"),
            vectors.c.model_id == sa.bindparam("b_model"),
        )
        .values(vector=sa.bindparam("b_vector"), dtype=target)
    )
    after: tuple[int, str] | None = None
    converted = 0
    while True:
        page = sa.select(vectors.c.file_id, vectors.c.model_id, vectors.c.vector).where(
            vectors.c.dtype == source
        )
        if after is not None:
            page = page.where(
                sa.or_(
                    vectors.c.file_id > after[0],
                    sa.and_(vectors.c.file_id == after[0], vectors.c.model_id > after[1]),
                )
            )
        rows = connection.execute(
            page.order_by(vectors.c.file_id, vectors.c.model_id).limit(_PAGE)
        ).all()
        if not rows:
            break
        connection.execute(
            rewrite,
            [
                {
                    "b_file": file_id,
                    "b_model": model_id,
                    "b_vector": _recast(blob, source, target),
                }
                for file_id, model_id, blob in rows
            ],
        )
        converted += len(rows)
        after = (rows[-1][0], rows[-1][1])
        if converted % (_PAGE * 50) == 0:
            log.info("vectors converted to %s: %d", target, converted)
    if converted:
        _bump_generation(connection)
        log.info("vectors converted to %s: %d in all", target, converted)


def _recast(blob: bytes, source: str, target: str) -> bytes:
    return np.frombuffer(blob, _DTYPES[source]).astype(_DTYPES[target]).tobytes()


def _bump_generation(connection: sa.Connection) -> None:
    value = connection.scalar(sa.select(store_meta.c.value).where(store_meta.c.key == "generation"))
    if value is None:
        connection.execute(sa.insert(store_meta).values(key="generation", value="1"))
    else:
        connection.execute(
            sa.update(store_meta)
            .where(store_meta.c.key == "generation")
            .values(value=str(int(value) + 1))
        )
