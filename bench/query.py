"""Query latency, recall and scale: `POST /api/search` over 10k, 100k and 1M synthetic vectors.

The store is filled directly with clustered unit vectors of dimension 1152 (SigLIP-so400m's),
a mixture of a few thousand gaussian directions (`memesearch.testing.clustered_vectors`), under
a tiny random-weight model of that dimension. Queries are held-out draws from the same mixture
sent as `embedding` terms, so recall@10 is measured end to end against exact search (numpy, fp32)
over the very vectors in the store. For each size and index kind it prints:

- latency p50/p99 with 1 client (one request after another) and with 16 concurrent clients;
- a burst ratio: 16 queries one after another vs the same 16 sent at once (batched search);
- recall@10 of the HTTP results against exact search;
- readiness: seconds from starting the server process to its first answered query, with a
  saved index file (the normal restart) — and RSS over the same server with an empty library,
  against the raw vector bytes of the chosen index (flat fp32 4.6 KB, ivf fp16 2.3 KB a vector).

    python bench/query.py                                   # 10k, 100k, 1M; auto and flat
    python bench/query.py --sizes 10000,100000 --kinds auto --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/load.py picks ports

from bench.load import free_port  # noqa: E402

from memesearch.testing import write_config as shared_write_config  # noqa: E402

DIM = 1152
CLUSTERS = 3000
QUERY_SEED = 99
CLIENTS = 16
IVF_BYTES, FLAT_BYTES = DIM * 2 + 8, DIM * 4 + 8  # codes + id per vector


@dataclass
class Row:
    """The figures of one (size, kind) run."""

    vectors: int
    kind: str
    index: str
    lists: int
    nprobe: int
    ready_s: float
    rss_growth_mb: float
    raw_index_mb: float
    rss_ratio: float
    p50_1_ms: float
    p99_1_ms: float
    p50_16_ms: float
    p99_16_ms: float
    qps_16: float
    burst_ratio: float
    recall_at_10: float


# ---------------------------------------------------------------- store


def fill_store(folder: Path, model_id: str, count: int, seed: int) -> Path:
    """A SQLite store of `count` clustered vectors (and their .npy copy); reused when present."""
    from sqlalchemy import insert

    from memesearch.db.migrate import upgrade_schema
    from memesearch.db.models import ImageFile, StoreMeta, Vector
    from memesearch.db.session import create_store_engine
    from memesearch.db.vectors import STORED_DTYPE, encode_vector
    from memesearch.records import FileState
    from memesearch.testing import clustered_vectors

    done = folder / "filled.json"
    vectors_path = folder / "vectors.npy"
    if done.exists() and json.loads(done.read_text()) == {"count": count, "model": model_id}:
        return vectors_path
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("store.*"):
        stale.unlink()
    engine = create_store_engine(f"sqlite:///{folder / 'store.db'}")
    upgrade_schema(engine)
    matrix = np.lib.format.open_memmap(vectors_path, "w+", np.float32, (max(count, 1), DIM))
    now, start = datetime.now(UTC), 0
    print(f"filling a store with {count:,} vectors…", file=sys.stderr, flush=True)
    with engine.begin() as connection:
        for block in clustered_vectors(count, DIM, clusters=CLUSTERS, seed=seed, chunk=20_000):
            ids = range(start + 1, start + 1 + len(block))
            connection.execute(
                insert(ImageFile),
                [
                    {
                        "id": i,
                        "path": f"synthetic/{i // 1000:04d}/{i:07d}.jpg",
                        "size": 50_000,
                        "mtime_ns": 0,
                        "content_hash": f"{i:064x}",
                        "width": 640,
                        "height": 480,
                        "format": "JPEG",
                        "state": FileState.OK,
                        "error": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Vector),
                [
                    {
                        "file_id": i,
                        "model_id": model_id,
                        "dim": DIM,
                        "dtype": STORED_DTYPE,
                        "vector": encode_vector(row, DIM),
                        "created_at": now,
                    }
                    for i, row in zip(ids, block, strict=True)
                ],
            )
            matrix[start : start + len(block)] = block
            start += len(block)
        connection.execute(insert(StoreMeta), [{"key": "generation", "value": "1"}])
    matrix.flush()
    engine.dispose()
    done.write_text(json.dumps({"count": count, "model": model_id}))
    return vectors_path


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """File ids (row + 1) of the exact 10 best inner products per query, in fp32."""
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 10), np.int64)
    for start in range(0, len(vectors), 100_000):
        scores = queries @ np.asarray(vectors[start : start + 100_000]).T
        merged_s = np.concatenate([best_scores, scores], 1)
        merged_i = np.concatenate(
            [best_ids, np.broadcast_to(np.arange(scores.shape[1]) + start + 1, scores.shape)], 1
        )
        top = np.argpartition(-merged_s, 9, axis=1)[:, :10]
        best_scores = np.take_along_axis(merged_s, top, 1)
        best_ids = np.take_along_axis(merged_i, top, 1)
    return best_ids


# ---------------------------------------------------------------- server


def write_config(folder: Path, model: Path, port: int, kind: str) -> Path:
    (folder / "library").mkdir(parents=True, exist_ok=True)
    return shared_write_config(
        folder / f"config-{kind}.toml",
        {
            "library": {"path": str(folder / "library")},
            "database": {"url": f"sqlite:///{folder / 'store.db'}"},
            "thumbnails": {"folder": str(folder / "thumbs")},
            "model": {"name": f"local-dir:{model}"},
            "index": {"kind": kind, "file": str(folder / f"store-{kind}.faiss")},
            "indexer": {"watch": False, "rescan_minutes": 0},
            "server": {"host": "127.0.0.1", "port": port},
        },
    )


def serve(config: str) -> None:
    """Run the app without the background indexer: the synthetic paths are not on disk."""
    import uvicorn

    from memesearch.config import load_settings
    from memesearch.web.app import create_app

    settings = load_settings(Path(config))
    app = create_app(settings, start_indexer=False)
    uvicorn.run(app, host=settings.server.host, port=settings.server.port, log_level="warning")


class Server:
    """`bench/query.py serve CONFIG` in a child process."""

    def __init__(self, config: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "serve", str(config)], env=env, cwd=ROOT
        )

    def rss_mb(self) -> float:
        return _status_kb(self.process.pid, "VmRSS") / 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def body(query: np.ndarray, k: int = 10) -> dict[str, Any]:
    return {"terms": [{"embedding": [float(x) for x in query]}], "k": k}


async def wait_ready(server: Server, probe: np.ndarray, timeout: float = 1800) -> float:
    """Seconds from process start to the first answered search."""
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as http:
        while time.perf_counter() - server.started < timeout:
            if server.process.poll() is not None:
                raise RuntimeError("the server exited")
            try:
                response = await http.post("/api/search", json=body(probe))
                if response.status_code == 200:
                    return time.perf_counter() - server.started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("the server did not answer")


async def index_status(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as http:
        return dict((await http.get("/api/status")).json()["index"])


async def wait_settled(server: Server, timeout: float = 3600) -> dict[str, Any]:
    """Wait until no background rebuild runs and the index file holds what is in memory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await index_status(server)
        if status["rebuilding"] is None and status["saved"]:
            return status
        await asyncio.sleep(1)
    raise TimeoutError(f"index never settled: {status}")


# ---------------------------------------------------------------- load


def encoded(query: np.ndarray) -> bytes:
    """A request body made ahead of time: the client's own JSON work stays out of the timing."""
    return json.dumps(body(query)).encode()


async def timed(http: httpx.AsyncClient, request: bytes) -> tuple[float, list[int]]:
    started = time.perf_counter()
    response = await http.post(
        "/api/search", content=request, headers={"content-type": "application/json"}
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, [hit["id"] for hit in response.json()["results"]]


async def measure(server: Server, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    requests = [encoded(query) for query in queries]
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=server.base, limits=limits, timeout=300) as http:
        for request in requests[:10]:  # warm-up
            await timed(http, request)
        # and open all 16 connections: the first burst's connection setup cost ~200 ms each
        await asyncio.gather(*(timed(http, request) for request in requests[:CLIENTS]))
        serial, hits = [], 0
        for request, expected in zip(requests, truth, strict=True):
            elapsed, found = await timed(http, request)
            serial.append(elapsed)
            hits += len(set(found) & set(expected.tolist()))
        concurrent: list[float] = []
        started = time.perf_counter()
        for start in range(0, len(requests), CLIENTS):
            results = await asyncio.gather(
                *(timed(http, request) for request in requests[start : start + CLIENTS])
            )
            concurrent.extend(elapsed for elapsed, _ in results)
        concurrent_seconds = time.perf_counter() - started
        bursts = []
        for start in range(0, len(requests) - CLIENTS + 1, CLIENTS):
            began = time.perf_counter()
            await asyncio.gather(*(timed(http, r) for r in requests[start : start + CLIENTS]))
            bursts.append(time.perf_counter() - began)
    one_by_one = statistics.mean(serial) * CLIENTS
    return {
        "p50_1_ms": _ms(statistics.median(serial)),
        "p99_1_ms": _ms(_p99(serial)),
        "p50_16_ms": _ms(statistics.median(concurrent)),
        "p99_16_ms": _ms(_p99(concurrent)),
        "qps_16": round(len(concurrent) / concurrent_seconds, 1),
        "burst_ratio": round(one_by_one / statistics.median(bursts), 2),
        "recall_at_10": round(hits / (10 * len(queries)), 4),
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ---------------------------------------------------------------- runs


async def baseline_rss(workdir: Path, model: Path, model_id: str, probe: np.ndarray) -> float:
    """RSS of the same server with an empty library: what the vectors are measured above."""
    folder = workdir / "empty"
    fill_store(folder, model_id, 0, seed=0)
    port = free_port()
    server = Server(write_config(folder, model, port, "auto"), port)
    try:
        await wait_ready(server, probe)
        return server.rss_mb()
    finally:
        server.stop()


async def run(
    workdir: Path, model: Path, model_id: str, size: int, kind: str, nq: int, empty_mb: float
) -> Row:
    from memesearch.testing import clustered_vectors

    folder = workdir / f"n{size}"
    vectors = np.load(fill_store(folder, model_id, size, seed=0), mmap_mode="r")
    queries = next(
        clustered_vectors(nq, DIM, clusters=CLUSTERS, seed=0, draw_seed=QUERY_SEED, chunk=nq)
    )
    truth = exact_top10(vectors, queries)
    port = free_port()
    config = write_config(folder, model, port, kind)
    # First start: build (and for large libraries train) the index, and save it.
    server = Server(config, port)
    try:
        await wait_ready(server, queries[0])
        status = await wait_settled(server)
    finally:
        server.stop()
    # Measured start: a restart with the saved index.
    server = Server(config, port)
    try:
        ready = await wait_ready(server, queries[0])
        rss_ready = server.rss_mb()
        status = await index_status(server)
        figures = await measure(server, queries, truth)
    finally:
        server.stop()
    per_vector = IVF_BYTES if status["kind"] == "ivf" else FLAT_BYTES
    raw_mb = size * per_vector / 2**20
    growth = rss_ready - empty_mb
    return Row(
        vectors=size,
        kind=kind,
        index=status["kind"],
        lists=status["lists"],
        nprobe=status["nprobe"],
        ready_s=round(ready, 2),
        rss_growth_mb=round(growth, 1),
        raw_index_mb=round(raw_mb, 1),
        rss_ratio=round(growth / raw_mb, 3) if raw_mb else 0.0,
        **figures,  # type: ignore[arg-type]
    )


def machine() -> str:
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory_kb / 2**20:.0f} GiB RAM, no GPU"


async def main_async(args: argparse.Namespace) -> list[Row]:
    from memesearch.config import ModelSettings
    from memesearch.embed.model import describe_model
    from memesearch.testing import build_tiny_model

    workdir = Path(args.workdir)
    model = workdir / "model-1152"
    if not (model / "open_clip_config.json").exists():
        build_tiny_model(model, embed_dim=DIM)
    model_id = describe_model(ModelSettings(name=f"local-dir:{model}")).model_id
    probe = np.ones(DIM, np.float32) / np.sqrt(DIM)
    empty_mb = await baseline_rss(workdir, model, model_id, probe)
    print(f"empty-library server RSS: {empty_mb:.0f} MB", file=sys.stderr, flush=True)
    rows = []
    for size in args.sizes:
        for kind in args.kinds:
            row = await run(workdir, model, model_id, size, kind, args.queries, empty_mb)
            print(json.dumps(asdict(row)), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def print_table(rows: list[Row]) -> None:
    columns = list(asdict(rows[0]))
    print(f"machine: {machine()}; {CLIENTS} concurrent clients; dim {DIM}; {CLUSTERS} clusters")
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(value) for value in asdict(row).values()))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_ints, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=["auto", "flat"])
    parser.add_argument("--queries", type=int, default=320, help="held-out queries per run")
    parser.add_argument("--workdir", default="/tmp/memesearch-bench-query")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    rows = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print_table(rows)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


if __name__ == "__main__":
    main()
