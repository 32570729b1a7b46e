"""Vectors on disk: float16, half the bytes of float32, the same results; old rows upgrade."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, insert, select, text

from memesearch.db.migrate import migrate, upgrade_schema
from memesearch.db.models import ImageFile, StoreMeta, Vector
from memesearch.db.repo import Repository
from memesearch.db.session import create_store_engine
from memesearch.records import EmbeddedFile, FileInfo, FileState, VectorSpace
from memesearch.testing import clustered_vectors

SPACE = VectorSpace("model-a", 64)


def unit_vectors(count: int, draw: int = 1) -> np.ndarray:
    """Clustered unit vectors; another `draw` samples the same mixture again."""
    mixture = clustered_vectors(count, SPACE.dim, clusters=20, draw_seed=draw)
    return np.concatenate(list(mixture))


def embedded(i: int, vector: np.ndarray) -> EmbeddedFile:
    return EmbeddedFile(
        info=FileInfo(f"m{i:04d}.png", 10, 1),
        content_hash=f"h{i}",
        width=4,
        height=3,
        format="PNG",
        vector=vector,
    )


def migrate_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    migrate(engine, revision, down=down)


def insert_float32_rows(engine: Engine, vectors: np.ndarray) -> None:
    """Rows as a version before float16 storage wrote them."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(ImageFile),
            [
                {
                    "id": i + 1,
                    "path": f"old{i}.png",
                    "size": 10,
                    "mtime_ns": 1,
                    "content_hash": f"old{i}",
                    "state": FileState.OK,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(len(vectors))
            ],
        )
        connection.execute(
            insert(Vector),
            [
                {
                    "file_id": i + 1,
                    "model_id": SPACE.model_id,
                    "dim": SPACE.dim,
                    "dtype": "float32",
                    "vector": vector.astype("<f4").tobytes(),
                    "created_at": now,
                }
                for i, vector in enumerate(vectors)
            ],
        )
        connection.execute(insert(StoreMeta).values(key="generation", value="7"))


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")


def test_vectors_are_stored_in_half_the_bytes_and_read_back_as_the_index_got_them(
    engine: Engine,
) -> None:
    upgrade_schema(engine)
    repo = Repository(engine)
    vectors = unit_vectors(50)
    delta = repo.write_batch(
        embedded=[embedded(i, v) for i, v in enumerate(vectors)], failed=[], space=SPACE
    )
    with engine.connect() as connection:
        sizes = connection.execute(text("SELECT DISTINCT dtype, length(vector) FROM vectors")).all()
    assert sizes == [("float16", SPACE.dim * 2)]
    ids = np.concatenate([i for i, _ in repo.iter_vectors(space=SPACE)])
    stored = np.concatenate([v for _, v in repo.iter_vectors(space=SPACE)])
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, vectors, atol=1e-3)  # float16 rounding, nothing more
    # What the live index was given equals what a rebuild from the store reads, bit for bit.
    added = dict(delta.added)
    np.testing.assert_array_equal(np.stack([added[int(i)] for i in ids]), stored)
    np.testing.assert_array_equal(repo.get_vector(file_id=int(ids[3]), space=SPACE), stored[3])


def test_float16_storage_keeps_the_exact_top_ten(engine: Engine) -> None:
    upgrade_schema(engine)
    repo = Repository(engine)
    vectors = unit_vectors(3000)
    repo.write_batch(
        embedded=[embedded(i, v) for i, v in enumerate(vectors)], failed=[], space=SPACE
    )
    stored = np.concatenate([v for _, v in repo.iter_vectors(space=SPACE)])
    queries = unit_vectors(200, draw=2)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    found = np.argsort(-(queries @ stored.T), axis=1)[:, :10]
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.99


def test_float32_rows_of_an_older_store_are_converted_by_the_upgrade(engine: Engine) -> None:
    migrate_to(engine, "0001")
    old = unit_vectors(4100)  # more than two pages of the migration
    insert_float32_rows(engine, old)
    upgrade_schema(engine)
    repo = Repository(engine)
    with engine.connect() as connection:
        kinds = connection.execute(text("SELECT dtype, count(*) FROM vectors GROUP BY dtype")).all()
    assert kinds == [("float16", len(old))]
    ids, stored = zip(*repo.iter_vectors(space=SPACE), strict=True)
    assert np.concatenate(ids).tolist() == list(range(1, len(old) + 1))
    np.testing.assert_allclose(np.concatenate(stored), old, atol=1e-3)
    assert repo.generation() == 8  # a saved index built from the float32 values is stale
    migrate_to(engine, "0001", down=True)
    with engine.connect() as connection:
        blobs = connection.execute(select(Vector.dtype, Vector.vector).limit(1)).one()
    assert blobs[0] == "float32" and len(blobs[1]) == SPACE.dim * 4


def test_a_store_mixing_float32_and_float16_rows_reads_both(engine: Engine) -> None:
    upgrade_schema(engine)
    old = unit_vectors(5)
    insert_float32_rows(engine, old)  # as if written by an older version after the upgrade
    repo = Repository(engine)
    new = unit_vectors(5, draw=3)
    repo.write_batch(
        embedded=[embedded(100 + i, v) for i, v in enumerate(new)], failed=[], space=SPACE
    )
    ids, vectors = zip(*repo.iter_vectors(space=SPACE), strict=True)
    stored = np.concatenate(vectors)
    assert len(np.concatenate(ids)) == 10
    np.testing.assert_array_equal(stored[:5], old)  # float32 rows are read exactly
    np.testing.assert_allclose(stored[5:], new, atol=1e-3)
    np.testing.assert_array_equal(repo.get_vector(file_id=1, space=SPACE), old[0])


def test_an_unknown_vector_type_is_a_clear_error(engine: Engine) -> None:
    upgrade_schema(engine)
    insert_float32_rows(engine, unit_vectors(2))
    with engine.begin() as connection:
        connection.execute(text("UPDATE vectors SET dtype = 'bfloat16'"))
    with pytest.raises(ValueError, match="'bfloat16'"):
        list(Repository(engine).iter_vectors(space=SPACE))


def test_a_new_store_holds_a_1152_d_image_in_about_3_kb_on_disk(tmp_path: Path) -> None:
    # float16 rows of ~2.4 KB fit one to a 4 KB page (4.5 KB an image in all); 8 KB pages fit 3.
    path = tmp_path / "sized.db"
    engine = create_store_engine(f"sqlite:///{path}")
    upgrade_schema(engine)
    space = VectorSpace("hf-hub:timm/ViT-SO400M-14-SigLIP-384", 1152)
    vectors = np.concatenate(list(clustered_vectors(1000, space.dim, clusters=20)))
    Repository(engine).write_batch(
        embedded=[embedded(i, v) for i, v in enumerate(vectors)], failed=[], space=space
    )
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA page_size")).scalar() == 8192
        connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    engine.dispose()
    assert path.stat().st_size / len(vectors) < 3400
