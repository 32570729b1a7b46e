"""Kill the indexer and the server with SIGKILL at random moments: nothing is lost or corrupted."""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from memesearch.testing import write_config
from tests.corpus import make_corpus

KILLS = 20


def config_for(root: Path, library: Path, model: Path, name: str, port: int = 0) -> Path:
    return write_config(
        root / f"{name}.toml",
        {
            "library": {"path": str(library), "max_file_mb": 2},
            "database": {"url": f"sqlite:///{root / name / 'db.sqlite'}"},
            "thumbnails": {"folder": str(root / name / "thumbs")},
            "model": {"name": f"local-dir:{model}", "batch_size": 8},
            "indexer": {"workers": 1, "settle_seconds": 0, "watch": False, "rescan_minutes": 0},
            "server": {"port": port or 8000},
        },
    )


def memesearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "memesearch", *args]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def db_path(root: Path, name: str) -> Path:
    return root / name / "db.sqlite"


def indexed_count(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM vectors").fetchone()[0])
        except sqlite3.OperationalError:  # killed before the schema was created
            return 0


def index_to_completion(config: Path) -> None:
    done = subprocess.run(
        memesearch("index", "-c", str(config), "--json"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr


def kill_mid_indexing(
    process: subprocess.Popen[bytes], db: Path, rng: random.Random, total: int
) -> int:
    """SIGKILL a random number of committed files into this run, at a random moment after."""
    target = min(indexed_count(db) + rng.randint(2, 20), total)
    deadline = time.monotonic() + 60
    while process.poll() is None and indexed_count(db) < target and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.03))  # sometimes inside the next batch's transaction
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return indexed_count(db)


def check_store(path: Path, good: list[str], broken: set[str]) -> dict[str, np.ndarray]:
    """Integrity, one vector per good file, no orphans; returns path → vector."""
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        orphans = connection.execute(
            "SELECT count(*) FROM vectors WHERE file_id NOT IN (SELECT id FROM files)"
        ).fetchone()[0]
        assert orphans == 0
        rows = connection.execute(
            "SELECT f.path, f.state, count(v.file_id), max(v.vector), max(v.dtype) FROM files f "
            "LEFT JOIN vectors v ON v.file_id = f.id GROUP BY f.id"
        ).fetchall()
    ok = {path: (blob, dtype) for path, state, n, blob, dtype in rows if state == "ok" and n == 1}
    assert sorted(ok) == sorted(good)
    assert {path for path, state, n, *_ in rows if state == "failed" and n == 0} == broken
    assert len(rows) == len(good) + len(broken)
    assert {dtype for _, dtype in ok.values()} == {"float16"}
    return {path: np.frombuffer(blob, "<f2").astype(np.float32) for path, (blob, _) in ok.items()}


def assert_same_vectors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for path in a:
        # Batches were composed differently; float results may differ in the last bits, which
        # can move a float16 value by one step (2**-11 near 1).
        np.testing.assert_allclose(a[path], b[path], atol=1e-3, err_msg=path)


@pytest.fixture(scope="module")
def corpus_and_reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("crash")
    library = root / "memes"
    corpus = make_corpus(library, n_good=600)
    config = config_for(root, library, tiny_model_dir, "reference")
    index_to_completion(config)
    reference = check_store(db_path(root, "reference"), corpus.good, set(corpus.broken))
    return root, library, corpus, reference


@pytest.mark.timeout(900)
def test_indexer_killed_at_random_moments(corpus_and_reference, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    root, library, corpus, reference = corpus_and_reference
    config = config_for(root, library, tiny_model_dir, "killed-indexer")
    rng = random.Random(1234)
    progress = []
    for _ in range(KILLS):
        process = subprocess.Popen(
            memesearch("index", "-c", str(config), "--json"),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        progress.append(
            kill_mid_indexing(process, db_path(root, "killed-indexer"), rng, len(corpus.good))
        )
    # The kills must really have landed mid-indexing, or this test proves nothing.
    assert sum(0 < count < len(corpus.good) for count in progress) >= KILLS - 2, progress
    index_to_completion(config)
    stored = check_store(db_path(root, "killed-indexer"), corpus.good, set(corpus.broken))
    assert_same_vectors(stored, reference)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server never became healthy")


@pytest.mark.timeout(900)
def test_server_killed_during_indexing(corpus_and_reference, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    root, library, corpus, reference = corpus_and_reference
    rng = random.Random(99)
    name = "killed-server"
    progress = []
    for _ in range(KILLS):
        port = free_port()
        config = config_for(root, library, tiny_model_dir, name, port)
        process = subprocess.Popen(
            memesearch("serve", "-c", str(config)),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(port, process)
            progress.append(kill_mid_indexing(process, db_path(root, name), rng, len(corpus.good)))
        finally:
            process.kill()
            process.wait(timeout=30)
    assert sum(0 < count < len(corpus.good) for count in progress) >= KILLS - 2, progress
    config = config_for(root, library, tiny_model_dir, name)
    index_to_completion(config)
    stored = check_store(db_path(root, name), corpus.good, set(corpus.broken))
    assert_same_vectors(stored, reference)
