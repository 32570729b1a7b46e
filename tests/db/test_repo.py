"""The store: migrations, SQLite settings, and atomic batched writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from memesearch.db.migrate import migrate, upgrade_schema
from memesearch.db.repo import Repository
from memesearch.db.session import create_store_engine
from memesearch.errors import StoreError
from memesearch.records import EmbeddedFile, FailedFile, FileInfo, FileState, Reuse, VectorSpace

SPACE = VectorSpace("model-a", 4)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'nested' / 'store.db'}")
    upgrade_schema(engine)
    return Repository(engine)


def embedded(path: str, value: float, content_hash: str = "") -> EmbeddedFile:
    vector = np.array([value, 1, 0, 0], np.float32)
    return EmbeddedFile(
        info=FileInfo(path, 10, 1),
        content_hash=content_hash or f"h-{path}",
        width=4,
        height=3,
        format="PNG",
        vector=vector / np.linalg.norm(vector),
    )


def test_schema_upgrade_is_idempotent_and_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 's.db'}")
    assert upgrade_schema(engine) == upgrade_schema(engine) == "0003"
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        tables = set(connection.execute(text("SELECT name FROM sqlite_master")).scalars())
    assert {"files", "vectors", "store_meta", "alembic_version"} <= tables


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 's.db'}")
    upgrade_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="newer version"):
        upgrade_schema(engine)


def test_write_batch_stores_files_and_vectors_together(repo: Repository) -> None:
    delta = repo.write_batch(
        embedded=[embedded("a.png", 1), embedded("b.png", 2)],
        failed=[FailedFile(FileInfo("c.png", 0, 1), "file is empty")],
        space=SPACE,
    )
    assert len(delta.added) == 2
    stored = repo.stored_files(space=SPACE)
    assert stored["a.png"].has_vector and stored["c.png"].state is FileState.FAILED
    assert not stored["c.png"].has_vector
    ids, vectors = next(repo.iter_vectors(space=SPACE))
    assert vectors.shape == (2, 4) and ids.tolist() == sorted(ids.tolist())
    counts = repo.counts(space=SPACE)
    assert (counts.files, counts.indexed, counts.failed) == (3, 2, 1)
    assert [row.path for row in repo.failures()] == ["c.png"]
    assert repo.generation() == 1


def test_a_failing_batch_leaves_nothing_half_written(repo: Repository) -> None:
    repo.write_batch(embedded=[embedded("a.png", 1)], failed=[], space=SPACE)
    bad = EmbeddedFile(
        info=FileInfo("b.png", 1, 1),
        content_hash="x",
        width=1,
        height=1,
        format="PNG",
        vector=np.ones(3, np.float32),  # wrong dimension: the write fails after c.png's rows
    )
    with pytest.raises(ValueError, match="3 values, expected 4"):
        repo.write_batch(embedded=[embedded("c.png", 3), bad], failed=[], space=SPACE)
    assert set(repo.stored_files(space=SPACE)) == {"a.png"}
    assert repo.generation() == 1


def test_reuse_moves_and_copies_vectors_and_removes(repo: Repository) -> None:
    repo.write_batch(
        embedded=[embedded("a.png", 1, "H"), embedded("gone.png", 3)], failed=[], space=SPACE
    )
    ids = {p: s.id for p, s in repo.stored_files(space=SPACE).items()}
    donors = repo.donors_by_hash(hashes=["H", "unknown"], space=SPACE)
    assert donors == {"H": ids["a.png"]}
    delta = repo.apply_reuse(
        reuses=[
            Reuse(FileInfo("b.png", 10, 2), "H", ids["a.png"], move=True),
            Reuse(FileInfo("c.png", 10, 2), "H", ids["a.png"], move=False),
        ],
        removals=[ids["gone.png"]],
        space=SPACE,
    )
    stored = repo.stored_files(space=SPACE)
    assert set(stored) == {"b.png", "c.png"}
    assert stored["b.png"].id == ids["a.png"]
    assert ids["gone.png"] in delta.removed and [i for i, _ in delta.added] == [stored["c.png"].id]
    a = repo.get_vector(file_id=stored["b.png"].id, space=SPACE)
    c = repo.get_vector(file_id=stored["c.png"].id, space=SPACE)
    assert a is not None and c is not None and np.array_equal(a, c)


def test_vectors_of_another_space_are_invisible(repo: Repository) -> None:
    repo.write_batch(embedded=[embedded("a.png", 1)], failed=[], space=SPACE)
    other = VectorSpace("model-b", 4)
    assert not repo.stored_files(space=other)["a.png"].has_vector
    assert list(repo.iter_vectors(space=other)) == []
    assert repo.get_vector(file_id=1, space=other) is None


def test_stored_files_under_paths_are_those_paths_and_their_folders_contents_only(
    repo: Repository,
) -> None:
    paths = ["a", "a/x.png", "a/b/y.png", "a b/z.png", "ab/w.png", "A/v.png", "a.png", "a0.png"]
    paths += [f"many/{i}.png" for i in range(400)]
    repo.write_batch(embedded=[embedded(p, i) for i, p in enumerate(paths)], failed=[], space=SPACE)
    assert set(repo.stored_files(space=SPACE, under=["a"])) == {"a", "a/x.png", "a/b/y.png"}
    assert set(repo.stored_files(space=SPACE, under=["a/b", "ab/w.png", "gone"])) == {
        "a/b/y.png",
        "ab/w.png",
    }
    assert repo.stored_files(space=SPACE, under=[]) == {}
    # More paths than one query takes: every one is still looked up.
    many = [f"many/{i}.png" for i in range(400)]
    assert set(repo.stored_files(space=SPACE, under=many)) == set(many)
    assert repo.stored_files(space=SPACE, under=["a/x.png"]) == {
        "a/x.png": repo.stored_files(space=SPACE)["a/x.png"]
    }


def test_ids_are_never_handed_out_twice(repo: Repository) -> None:
    """Ids are public (image_id terms, thumbnail URLs): a deleted file's id names nothing after."""
    first = repo.write_batch(
        embedded=[embedded("a.png", 1), embedded("b.png", 2)], failed=[], space=SPACE
    )
    a_id, b_id = (file_id for file_id, _ in first.added)
    repo.apply_reuse(reuses=[], removals=[b_id], space=SPACE)
    later = repo.write_batch(embedded=[embedded("c.png", 3)], failed=[], space=SPACE)
    ((c_id, _),) = later.added
    assert c_id > b_id > a_id
    assert (
        repo.get_file(file_id=b_id) is None and repo.get_vector(file_id=b_id, space=SPACE) is None
    )


def test_the_upgrade_to_monotonic_ids_keeps_every_row_and_link(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate(engine, "0002")
    repo = Repository(engine)
    repo.write_batch(
        embedded=[embedded(f"{n}.png", n) for n in range(1, 6)],
        failed=[FailedFile(FileInfo("bad.png", 0, 1), "file is empty")],
        space=SPACE,
    )
    repo.apply_reuse(reuses=[], removals=[5, 6], space=SPACE)  # the two highest ids
    before = repo.stored_files(space=SPACE)
    assert upgrade_schema(engine) == "0003"
    assert repo.stored_files(space=SPACE) == before  # same ids, paths, states, vectors
    ((new_id, _),) = repo.write_batch(
        embedded=[embedded("new.png", 9)], failed=[], space=SPACE
    ).added
    assert new_id == 5  # nothing above 4 was known to the old schema: it counts on from there
    again = repo.write_batch(embedded=[embedded("newer.png", 8)], failed=[], space=SPACE)
    repo.apply_reuse(reuses=[], removals=[new_id, again.added[0][0]], space=SPACE)
    assert (
        repo.write_batch(embedded=[embedded("last.png", 7)], failed=[], space=SPACE).added[0][0]
        == 7
    )
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    migrate(engine, "0002", down=True)  # and back, nothing lost either
    assert set(Repository(engine).stored_files(space=SPACE)) == {
        "1.png",
        "2.png",
        "3.png",
        "4.png",
        "last.png",
    }
