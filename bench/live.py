"""Live benchmark: how soon `memesearch serve` (watcher on) makes a library change searchable.

The promise: "a new or changed file becomes searchable in seconds, a deleted one disappears".
Starts the server (tiny model, the [indexer] defaults) over a library of a few thousand images,
then, one change at a time, drops in new files (written under a hidden temporary name and
renamed in, as careful copiers do; written directly; copied slowly, in chunks a second apart),
modifies indexed files (saved over by a rename, as editors do; rewritten in place) and deletes
files. Each change is timed from the moment it is complete on disk until
`POST /api/search` shows it: the file's own picture as the query, restricted to its path
(`filters.path_prefix`), finds it with a score of 1 (its new content), or finds nothing (deleted).
Prints p50 and max per kind; the baseline is the watcher's debounce.

    python bench/live.py                       # 3000 images, 20 rounds
    python bench/live.py --rounds 40 --settle-seconds 0
    python bench/live.py --bulk 100000 --rounds 5   # the same changes in a 100k library
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/corpus.py makes the pictures; bench/load.py serves

from bench.load import free_port, wait_until  # noqa: E402
from bench.rescan import machine, make_library  # noqa: E402
from tests.corpus import encode, picture, write_image  # noqa: E402

from memesearch.config import IndexerSettings  # noqa: E402
from memesearch.testing import build_tiny_model, write_config  # noqa: E402

TARGET_SECONDS = 5.0
SAME = 0.999  # a file found by its own picture scores 1; another picture scores less
POLL_SECONDS = 0.05


def jpeg(seed: int) -> bytes:
    return encode(picture(seed, (320, 240)), "JPEG")


def renamed_in(path: Path, data: bytes) -> None:
    """A careful copier: a hidden temporary name in the same folder, then an atomic rename."""
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def written(path: Path, data: bytes) -> None:
    """A plain write under the final name (open, write, close)."""
    path.write_bytes(data)


def copied_slowly(path: Path, data: bytes, *, chunks: int = 3, pause: float = 1.0) -> None:
    """A slow copy under the final name: the watcher sees it while it is still incomplete."""
    step = -(-len(data) // chunks)
    with path.open("wb") as out:
        for start in range(0, len(data), step):
            if start:
                time.sleep(pause)
            out.write(data[start : start + step])
            out.flush()


class Probe:
    """Asks the running server what a search for a file's own picture finds under its path."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def score(self, rel_path: str, data: bytes) -> float | None:
        body = {
            "terms": [{"image": base64.b64encode(data).decode()}],
            "filters": {"path_prefix": rel_path},
            "k": 1,
        }
        response = await self._http.post("/api/search", json=body)
        response.raise_for_status()
        hits = [hit for hit in response.json()["results"] if hit["path"] == rel_path]
        return float(hits[0]["score"]) if hits else None

    async def seconds_until(
        self, check: Callable[[], Awaitable[bool]], since: float, timeout: float = 120
    ) -> float:
        while not await check():
            if time.perf_counter() - since > timeout:
                return float("inf")
            await asyncio.sleep(POLL_SECONDS)
        return time.perf_counter() - since


NEW = {"new (renamed in)": renamed_in, "new (written)": written, "new (slow copy)": copied_slowly}
MODIFIED = {"modified (renamed over)": renamed_in, "modified (written)": written}
KINDS = (*NEW, *MODIFIED, "deleted")


async def measure_round(
    probe: Probe, library: Path, round_no: int, samples: dict[str, list[float]]
) -> None:
    """One change of each kind, each timed until the server's search shows it."""
    changes = [
        (kind, f"live/round-{round_no:03d}-{n}.jpg", write)
        for n, (kind, write) in enumerate(NEW.items())
    ]
    changes += [
        (kind, f"batch{n}/m{n * 500 + round_no:06d}.jpg", write)  # indexed at start
        for n, (kind, write) in enumerate(MODIFIED.items())
    ]
    for n, (kind, rel, write) in enumerate(changes):
        data = jpeg(1_000_000 + round_no * 10 + n)
        await asyncio.to_thread(write, library / rel, data)
        since = time.perf_counter()

        async def shown(rel: str = rel, data: bytes = data) -> bool:
            return ((await probe.score(rel, data)) or 0.0) >= SAME

        samples[kind].append(await probe.seconds_until(shown, since))
    gone = changes[0][1]
    (library / gone).unlink()
    since = time.perf_counter()
    other = jpeg(0)

    async def absent() -> bool:
        return await probe.score(gone, other) is None

    samples["deleted"].append(await probe.seconds_until(absent, since))


async def run(args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    library = work / "memes"
    for i in range(args.files):
        write_image(library / f"batch{i // 500}" / f"m{i:06d}.jpg", seed=i, size=(160, 120))
    if args.bulk:  # a big library: tiny PNGs in nested folders, indexed when the server starts
        make_library(library / "bulk", args.bulk, folders=max(1, args.bulk // 330))
    (library / "live").mkdir()
    model = f"local-dir:{build_tiny_model(work / 'model')}"
    port = free_port()
    config = write_config(
        work / "config.toml",
        {
            "library": {"path": str(library)},
            "database": {"url": f"sqlite:///{work / 'db.sqlite'}"},
            "thumbnails": {"folder": str(work / "thumbs")},
            "model": {"name": model},
            "indexer": args.indexer,
            "server": {"port": port},
        },
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "memesearch", "serve", "-c", str(config)]
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        await asyncio.sleep(1)
        await wait_until(base, indexing=False, timeout=3600)  # the first pass indexes it all
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            status = (await http.get("/api/status")).json()
            print(f"server up: {status['indexed']} images indexed")
            probe = Probe(http)
            for round_no in range(args.rounds):
                await measure_round(probe, library, round_no, samples)
                await wait_until(base, indexing=False)
        return samples
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def row(kind: str, seconds: list[float]) -> dict[str, object]:
    return {
        "change": kind,
        "n": len(seconds),
        "p50_s": round(statistics.median(seconds), 3),
        "max_s": round(max(seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3000, help="images in the library")
    parser.add_argument("--rounds", type=int, default=20, help="changes of each kind")
    parser.add_argument(
        "--bulk", type=int, default=0, help="tiny PNGs added to the library, to make it big"
    )
    parser.add_argument("--debounce-ms", type=int, help="[indexer] debounce_ms (default: config)")
    parser.add_argument("--settle-seconds", type=float, help="[indexer] settle_seconds")
    args = parser.parse_args()
    args.indexer = {"rescan_minutes": 0}
    if args.debounce_ms is not None:
        args.indexer["debounce_ms"] = args.debounce_ms
    if args.settle_seconds is not None:
        args.indexer["settle_seconds"] = args.settle_seconds
    settings = IndexerSettings(**args.indexer)
    host = machine()
    with tempfile.TemporaryDirectory(prefix="memesearch-live-") as folder:
        samples = asyncio.run(run(args, Path(folder)))
    print(
        f"files={args.files} bulk={args.bulk} rounds={args.rounds} {host} "
        f"debounce_ms={settings.debounce_ms} settle_seconds={settings.settle_seconds}"
    )
    for kind, seconds in samples.items():
        print(json.dumps(row(kind, seconds)))
    worst = max(max(seconds) for seconds in samples.values())
    p50 = statistics.median(s for seconds in samples.values() for s in seconds)
    print(f"all changes: p50 {p50:.2f} s = {p50 * 1000 / settings.debounce_ms:.1f}x the debounce")
    verdict = "met" if worst <= TARGET_SECONDS else "missed"
    print(f"target: searchable within {TARGET_SECONDS:.0f} s: {verdict} (worst {worst:.2f} s)")


if __name__ == "__main__":
    main()
