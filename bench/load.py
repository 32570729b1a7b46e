"""Load benchmark: concurrent searches against `memesearch serve` while a big reindex runs.

Loopback only, bounded in time and in requests. Prints requests/s, p50/p99 latency and errors,
for an idle server (the baseline) and for the same server while it indexes new images.

    python bench/load.py                       # 32 clients, 3000 new images, tiny model
    python bench/load.py --clients 64 --images 5000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/corpus.py makes the pictures

from tests.corpus import write_image  # noqa: E402

from memesearch.testing import build_tiny_model  # noqa: E402
from memesearch.testing import write_config as shared_write_config  # noqa: E402

QUERIES = ["cat wearing sunglasses", "red frog", "drake meme", "blue sky at night", "angry man"]


@dataclass
class Sample:
    """Latencies and failures of one measured phase."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def row(self, name: str) -> dict[str, object]:
        ordered = sorted(self.latencies) or [float("nan")]
        return {
            "phase": name,
            "requests": len(self.latencies) + self.errors,
            "errors": self.errors,
            "req_per_s": round(len(self.latencies) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, library: Path, model: str, port: int) -> Path:
    """A fresh database and thumbnail folder under `folder`, no watching, on `port`."""
    return shared_write_config(
        folder / "config.toml",
        {
            "library": {"path": str(library)},
            "database": {"url": f"sqlite:///{folder / 'db.sqlite'}"},
            "thumbnails": {"folder": str(folder / "thumbs")},
            "model": {"name": model},
            "indexer": {"watch": False, "rescan_minutes": 0, "settle_seconds": 0},
            "server": {"port": port},
        },
    )


def make_images(folder: Path, count: int, offset: int) -> None:
    for i in range(count):
        write_image(
            folder / f"batch{offset // 1000}" / f"m{offset + i:06d}.jpg",
            seed=offset + i,
            size=(320, 240),
        )


async def client_loop(
    http: httpx.AsyncClient, sample: Sample, stop_at: float, budget: list[int], n: int
) -> None:
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        body = {"terms": [{"text": QUERIES[n % len(QUERIES)]}], "k": 50}
        started = time.perf_counter()
        try:
            response = await http.post("/api/search", json=body)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            sample.latencies.append(time.perf_counter() - started)
        else:
            sample.errors += 1
        n += 1


async def measure(base: str, clients: int, seconds: float, max_requests: int) -> Sample:
    sample = Sample()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        stop_at = time.monotonic() + seconds
        budget = [max_requests]
        started = time.perf_counter()
        await asyncio.gather(
            *(client_loop(http, sample, stop_at, budget, n) for n in range(clients))
        )
        sample.seconds = time.perf_counter() - started
    return sample


async def indexing_status(base: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        return dict((await http.get("/api/status")).json())


async def wait_until(base: str, *, indexing: bool, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await indexing_status(base))["indexing"] == indexing:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the server never reached indexing={indexing}")


async def run(args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    library = work / "memes"
    make_images(library, args.seed_images, 0)
    model = args.model or f"local-dir:{build_tiny_model(work / 'model')}"
    port = free_port()
    config = write_config(work, library, model, port)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "memesearch", "serve", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.sleep(1)
        await wait_until(base, indexing=False)
        idle = await measure(base, args.clients, args.seconds, args.max_requests)
        make_images(library, args.images, 100_000)
        async with httpx.AsyncClient(base_url=base) as http:
            await http.post("/api/reindex")
        await wait_until(base, indexing=True, timeout=30)
        busy = await measure(base, args.clients, args.seconds, args.max_requests)
        status = await indexing_status(base)
        rows = [idle.row("idle server"), busy.row("during reindex")]
        rows[1]["indexed_at_end"] = status["indexed"]
        rows[1]["still_indexing"] = status["indexing"]
        return rows
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--images", type=int, default=3000, help="new images to reindex")
    parser.add_argument("--seed-images", type=int, default=500, help="indexed before measuring")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per phase")
    parser.add_argument("--model", default="", help="open_clip spec (default: tiny test model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memesearch-load-") as folder:
        rows = asyncio.run(run(args, Path(folder)))
    print(f"clients={args.clients} new_images={args.images} cores={os.cpu_count()}")
    for row in rows:
        print(json.dumps(row))
    idle, busy = rows
    ratio = float(busy["req_per_s"]) / float(idle["req_per_s"]) if idle["req_per_s"] else 0.0
    print(f"throughput during reindex / idle: {ratio:.2f}; errors: {busy['errors']} (target 0)")


if __name__ == "__main__":
    main()
