"""Rescan benchmark: a pass over an unchanged library of 100k tiny files, which finds nothing to do.

Issue #5: "100k unchanged files: a rescan that finds nothing to do takes <= 3 s". The library
(tiny distinct PNGs in a few hundred nested folders) and its store are built once and cached
under the work folder, keyed by the file and folder counts; reruns only measure. Prints the
in-process `Indexer.run()` time with its phases, `memesearch index` end to end in a fresh
interpreter (start and imports shown apart), and the ratio against the bare floor of the same
work measured in the same run: a plain `os.scandir` walk that stats every file.

    python bench/rescan.py                      # 100k files in 300 folders
    python bench/rescan.py --files 20000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/conftest.py writes configs like the tests do

from memesearch.config import Settings, load_settings  # noqa: E402
from memesearch.ingest.changes import diff_scan  # noqa: E402
from memesearch.ingest.scan import ScanOptions, scan_library  # noqa: E402
from memesearch.services import open_services  # noqa: E402
from memesearch.testing import build_tiny_model, write_config  # noqa: E402

TARGET_SECONDS = 3.0
T = TypeVar("T")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def tiny_png(number: int) -> bytes:
    """An 8x8 PNG whose first pixel spells `number`: every file has distinct content."""
    image = Image.new("RGB", (8, 8), (40, 80, 120))
    image.putpixel((0, 0), (number >> 16 & 255, number >> 8 & 255, number & 255))
    image.putpixel((1, 0), (number >> 24 & 255, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def folder_of(number: int, folders: int) -> str:
    """Nested like a real meme folder: topics, each with batches (about 15 per topic)."""
    leaf = number % folders
    return f"topic-{leaf // 15:02d}/batch-{leaf % 15:02d}"


def make_library(library: Path, files: int, folders: int) -> None:
    for number in range(files):
        path = library / folder_of(number, folders) / f"meme-{number:07d}.png"
        if number < folders:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_png(number))


def prepare(work: Path, files: int, folders: int) -> Path:
    """The cached library, model, config and up-to-date store; built only when missing."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "library.done").exists():
        started = time.perf_counter()
        make_library(work / "memes", files, folders)
        (work / "library.done").touch()
        print(f"built library of {files} files in {time.perf_counter() - started:.0f} s")
    model = work / "model"
    if not (model / "open_clip_config.json").exists():
        build_tiny_model(model, seed=0)
    config = write_config(
        work / "config.toml",
        {
            "library": {"path": str(work / "memes")},
            "database": {"url": f"sqlite:///{work / 'data' / 'store.db'}"},
            "thumbnails": {"folder": str(work / "data" / "thumbs")},
            "model": {"name": f"local-dir:{model}", "batch_size": 64},
            "indexer": {"watch": False, "rescan_minutes": 0, "settle_seconds": 0},
        },
    )
    if not (work / "store.done").exists():
        started = time.perf_counter()
        index_cli(config, check=True)
        (work / "store.done").touch()
        print(f"indexed it once (memesearch index) in {time.perf_counter() - started:.0f} s")
    return config


def index_cli(config: Path, *, check: bool = False) -> dict[str, Any]:
    command = [sys.executable, "-m", "memesearch", "index", "--json", "-c", str(config)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"memesearch index failed:\n{done.stderr}")
    return dict(json.loads(done.stdout))


def timed(action: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """Seconds `action(*args, **kwargs)` took, and what it returned."""
    started = time.perf_counter()
    result = action(*args, **kwargs)
    return time.perf_counter() - started, result


def floor_walk(root: Path) -> int:
    """The bare floor: os.scandir every folder and stat every file, nothing else."""
    count = 0
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)
                    count += 1
    return count


def store_digest(settings: Settings) -> str:
    """The SQLite file's bytes: any committed write would change them (once checkpointed)."""
    database = Path(str(make_url(settings.database.url).database))
    return hashlib.sha256(database.read_bytes()).hexdigest()


async def in_process(settings: Settings, repeat: int) -> dict[str, Any]:
    """Phases (the same calls Indexer.run makes, one by one) and whole runs, in this process."""
    options = ScanOptions(extensions=frozenset(settings.library.extensions))
    times: dict[str, list[float]] = {"scan": [], "stored": [], "diff": [], "run": []}
    async with open_services(settings) as services:
        indexer = services.indexer()
        for _ in range(repeat):
            seconds, scan = timed(scan_library, settings.library.path, options)
            times["scan"].append(seconds)
            seconds, stored = timed(services.repo.stored_files, space=services.space)
            times["stored"].append(seconds)
            times["diff"].append(timed(diff_scan, scan.files, stored)[0])
            started = time.perf_counter()
            report = await indexer.run()
            times["run"].append(time.perf_counter() - started)
            if report.changed or report.unchanged != len(scan.files):
                raise SystemExit(f"the rescan was not a no-op: {report}")
        model_loaded = services.runtime.embedder is not None
    result: dict[str, Any] = {k: round(statistics.median(v), 3) for k, v in times.items()}
    result["run_best"] = round(min(times["run"]), 3)
    result["files"] = len(scan.files)
    result["model_loaded"] = model_loaded
    return result


def end_to_end(config: Path, repeat: int) -> dict[str, Any]:
    """`memesearch index` in a fresh interpreter, and what start and imports alone cost."""
    bare = [timed(subprocess.run, [sys.executable, "-c", "pass"], check=True)[0]]
    imports = [sys.executable, "-c", "import memesearch.cli"]
    imported = [timed(subprocess.run, imports, env=ENV, check=True)[0] for _ in range(repeat)]
    walls, inside = [], []
    for _ in range(repeat):
        seconds, report = timed(index_cli, config)
        walls.append(seconds)
        inside.append(report["seconds"])
        if report["unchanged"] != report["scanned"] or report["embedded"]:
            raise SystemExit(f"the CLI rescan was not a no-op: {report}")
    return {
        "wall": round(statistics.median(walls), 3),
        "interpreter_start": round(statistics.median(bare), 3),
        "imports": round(statistics.median(imported) - statistics.median(bare), 3),
        "indexer_run": round(statistics.median(inside), 3),
    }


def machine() -> str:
    memory = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    load = Path("/proc/loadavg").read_text().split()[0]
    return f"cores={os.cpu_count()} ram={int(memory) / 2**20:.1f}GiB load_before={load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="measured runs of each kind")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "memesearch-bench",
        help="cache for the library and its store (reused by later runs)",
    )
    args = parser.parse_args()
    work = args.workdir / f"rescan-{args.files}-{args.folders}"
    config = prepare(work, args.files, args.folders)
    settings = load_settings(config)
    digest = store_digest(settings)
    host = machine()
    floor = statistics.median(
        timed(floor_walk, settings.library.path)[0] for _ in range(args.repeat)
    )
    inner = asyncio.run(in_process(settings, args.repeat))
    cli = end_to_end(config, args.repeat)
    unchanged_store = store_digest(settings) == digest
    print(f"files={inner['files']} folders={args.folders} {host} (warm page cache)")
    print(json.dumps({"phase": "floor: os.scandir walk + stat", "seconds": round(floor, 3)}))
    print(json.dumps({"phase": "in-process Indexer.run() (median)", **inner}))
    print(json.dumps({"phase": "memesearch index (fresh process)", **cli}))
    print(f"model loaded: {inner['model_loaded']}; store file unchanged: {unchanged_store}")
    ratio_run, ratio_cli = inner["run"] / floor, cli["wall"] / floor
    print(f"rescan / floor: {ratio_run:.1f}x (Indexer.run), {ratio_cli:.1f}x (memesearch index)")
    for name, seconds in (("Indexer.run", inner["run"]), ("memesearch index", cli["wall"])):
        verdict = "met" if seconds <= TARGET_SECONDS else "missed"
        print(f"target <= {TARGET_SECONDS:.0f} s, {name}: {verdict} ({seconds:.2f} s)")


if __name__ == "__main__":
    main()
