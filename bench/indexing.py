"""Indexing benchmark: files/s of `memesearch index` against the machine's limit and a baseline.

One generated set of photo-like files (1–12 MP, mostly JPEG, some PNG, a few rotated by EXIF),
the tiny test model (so the model costs almost nothing), fresh database and thumbnails per run:

  limit      the indexer's own per-file job (`decoding.prepare_job`: read, hash, decode, resize,
             thumbnail) in a bare process pool of as many workers as the indexer uses, timed
             after the workers are up: no model, no database, no scan. Nothing indexes faster.
  index      `memesearch index` as a user runs it, timed from process start to exit.
  pipeline   `Indexer.run()` in a process whose model is already loaded: the same work minus
             interpreter start, imports and model load.
  added      the same, into a store that already knows another file: then every new file is
             hashed first (to find renames and copies of known content), then decoded.
  baseline   one loop like the original meme-search-engine: Pillow open and full decode, RGB,
             the model's own preprocess transform, embed one image, insert into SQLite.

Each runs in its own process; a sampler reads the RSS of that process and of its children.

    python bench/indexing.py                      # 2000 photos, cached in /tmp/memesearch-bench
    python bench/indexing.py -n 500 --repeat 3 --json
    python bench/indexing.py --baseline-files 400  # baseline over the first 400 files only
    python bench/indexing.py --wait-idle 300       # on a shared machine: start runs when idle
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import photos  # noqa: E402

from memesearch.testing import write_config as shared_write_config  # noqa: E402

TARGET = 0.85  # of the limit's files/s
MIB = 1024 * 1024


@dataclass
class Row:
    """One measured run: what it did, how long it took, how much memory it held."""

    name: str
    files: int
    seconds: float
    main_rss_mb: float = 0.0
    tree_rss_mb: float = 0.0
    others: float = 0.0  # CPU share other processes took during the run counted
    runs: list[float] = field(default_factory=list)  # seconds of every repeat
    runs_others: list[float] = field(default_factory=list)  # and their `others`
    note: str = ""

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0


class RssSampler:
    """Peak RSS of one process and of it plus all its descendants, sampled every 20 ms."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.main_peak = self.tree_peak = 0
        self.others = 0.0  # share of the machine's CPU other processes used meanwhile

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                main = self._process.memory_info().rss
                tree = main
                for child in self._process.children(recursive=True):
                    try:
                        tree += child.memory_info().rss
                    except psutil.Error:
                        pass  # a worker that just exited
            except psutil.Error:
                return
            self.main_peak = max(self.main_peak, main)
            self.tree_peak = max(self.tree_peak, tree)
            self._stop.wait(self._interval)


def run_measured(command: list[str]) -> tuple[str, float, RssSampler]:
    """Run a command to completion: its stdout, its wall time and its memory peaks."""
    busy_before, ours_before = _cpu_seconds()
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_env())
    with RssSampler(child.pid) as sampler:
        stdout, _ = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited with {child.returncode}")
    busy_after, ours_after = _cpu_seconds()
    # CPU time spent on processes other than ours, or stolen by the hypervisor for other
    # machines: a busy neighbour skews the figures.
    sampler.others = max(0.0, (busy_after - busy_before) - (ours_after - ours_before))
    sampler.others /= seconds * (os.cpu_count() or 1)
    return stdout, seconds, sampler


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the machine was busy or stolen, those of this process and its children)."""
    import psutil

    times = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    busy = sum(getattr(times, name, 0.0) for name in fields)
    ours = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        ours += usage.ru_utime + usage.ru_stime
    return busy, ours


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}


# --- the phases, each run in a child process of its own -------------------------------------


def phase_limit(job: dict[str, Any]) -> dict[str, Any]:
    """prepare_job over every file in a bare spawn pool; timed once the workers are up."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from itertools import repeat

    from memesearch.ingest.pool import JobFailure, prepare_job

    settings = _settings(job)
    spec = _preprocess(settings)
    limits, thumbnails = _decode_limits(settings), _thumbnail_spec(settings)
    paths = [str(Path(job["library"]) / name) for name in job["files"]]
    workers = settings.indexer.worker_count()
    context = multiprocessing.get_context("spawn")  # as the indexer's pool
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        list(pool.map(_warm_up, range(workers)))
        started = time.perf_counter()
        jobs = pool.map(
            prepare_job, paths, repeat(spec), repeat(limits), repeat(thumbnails), chunksize=4
        )
        outcomes = list(jobs)
        seconds = time.perf_counter() - started
    failed = sum(isinstance(outcome, JobFailure) for outcome in outcomes)
    return {"files": len(outcomes) - failed, "failed": failed, "seconds": seconds}


def _warm_up(_: int) -> None:
    """Make sure a worker has started and imported the decode modules before timing."""
    import memesearch.ingest.pool  # noqa: F401

    time.sleep(0.5)


def phase_pipeline(job: dict[str, Any], *, known_file: bool = False) -> dict[str, Any]:
    """Indexer.run() with the model loaded beforehand: the pipeline without start-up costs."""
    from memesearch.records import FailedFile, FileInfo
    from memesearch.services import open_services

    async def run() -> dict[str, Any]:
        async with open_services(_settings(job)) as services:
            batcher = await services.runtime.batcher()
            if batcher.embedder.preprocess != _preprocess(services.settings):
                raise RuntimeError("the limit would use another preprocess spec than the model")
            if known_file:  # a store that is not empty: new files are hashed before decoding
                gone = FailedFile(FileInfo("elsewhere/gone.jpg", 1, 0), "placeholder")
                services.repo.write_batch(embedded=[], failed=[gone], space=services.space)
            indexer = services.indexer()
            started = time.perf_counter()
            report = await indexer.run()
            seconds = time.perf_counter() - started
        return {"files": report.embedded, "failed": len(report.failed), "seconds": seconds}

    return asyncio.run(run())


def phase_baseline(job: dict[str, Any]) -> dict[str, Any]:
    """The original project's way: one file at a time, full decode, embed, SQLite."""
    import sqlite3

    import numpy as np
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{job['model']}")
    model.eval()
    db = sqlite3.connect(job["baseline_db"])
    db.execute("CREATE TABLE files (path TEXT PRIMARY KEY, mtime REAL, embedding BLOB)")
    library, embedded = Path(job["library"]), 0
    started = time.perf_counter()
    with torch.inference_mode():
        for name in job["files"][: job["baseline_files"] or None]:
            path = library / name
            with Image.open(path) as image:
                rgb = image.convert("RGB")
            features = model.encode_image(preprocess(rgb).unsqueeze(0), normalize=True)
            vector = features[0].numpy().astype(np.float32)
            db.execute(
                "INSERT INTO files VALUES (?, ?, ?)", (name, path.stat().st_mtime, vector.tobytes())
            )
            embedded += 1
            if embedded % 64 == 0:
                db.commit()
    db.commit()
    seconds = time.perf_counter() - started
    db.close()
    return {"files": embedded, "failed": 0, "seconds": seconds}


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "limit": phase_limit,
    "pipeline": phase_pipeline,
    "added": partial(phase_pipeline, known_file=True),
    "baseline": phase_baseline,
}


def _settings(job: dict[str, Any]) -> Any:
    from memesearch.config import load_settings

    return load_settings(Path(job["config"]))


def _preprocess(settings: Any) -> Any:
    """The model's preprocess spec as its config predicts it, without loading torch."""
    from memesearch.embed.model import describe_model

    spec = describe_model(settings.model).preprocess
    if spec is None:
        raise RuntimeError(f"{settings.model.name}: its config does not give the input size")
    return spec


def _decode_limits(settings: Any) -> Any:
    from memesearch.images.decode import DecodeLimits

    lib = settings.library
    return DecodeLimits(
        max_file_bytes=int(lib.max_file_mb * MIB), max_pixels=int(lib.max_image_megapixels * 1e6)
    )


def _thumbnail_spec(settings: Any) -> Any:
    from memesearch.images.thumbnails import ThumbnailSpec

    cfg = settings.thumbnails
    return ThumbnailSpec(cfg.folder, cfg.width, cfg.format.upper(), cfg.quality)


# --- the parent: set up, run every phase, report ---------------------------------------------


def write_config(folder: Path, library: Path, model: Path, workers: int) -> Path:
    """A fresh database and thumbnail folder under `folder`, the tiny model, no watching."""
    return shared_write_config(
        folder / "config.toml",
        {
            "library": {"path": str(library)},
            "database": {"url": f"sqlite:///{folder / 'db.sqlite'}"},
            "thumbnails": {"folder": str(folder / "thumbs")},
            "model": {"name": f"local-dir:{model}"},
            "indexer": {"workers": workers, "watch": False, "rescan_minutes": 0},
        },
    )


def tiny_model(workdir: Path) -> Path:
    """The tiny test model, built once per work folder."""
    folder = workdir / "tiny-model"
    if not (folder / "open_clip_config.json").exists():
        from memesearch.testing import build_tiny_model

        build_tiny_model(folder)
    return folder


def prime_page_cache(library: Path, files: list[str]) -> None:
    """Read every file once, so that every run finds them all in memory alike."""
    for name in files:
        with open(library / name, "rb") as handle:
            while handle.read(8 * MIB):
                pass


def measure(kind: str, job: dict[str, Any], scratch: Path) -> tuple[dict[str, Any], float, Any]:
    """Run one phase in a fresh process on a fresh database and thumbnail folder."""
    fresh = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=scratch))
    config = write_config(fresh, Path(job["library"]), Path(job["model"]), job["workers"])
    job = {**job, "config": str(config), "baseline_db": str(fresh / "baseline.sqlite")}
    job_file = fresh / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    if kind == "index":
        # The console script, as a user runs it (spawned workers re-run it as their main).
        command = [str(Path(sys.executable).parent / "memesearch"), "index", "-c", str(config)]
        command.append("--json")
    else:
        command = [sys.executable, __file__, "--phase", kind, "--job", str(job_file)]
    prime_page_cache(Path(job["library"]), job["files"])  # the kernel may have dropped some
    stdout, wall, sampler = run_measured(command)
    result = json.loads(stdout) if kind == "index" else json.loads(stdout.splitlines()[-1])
    if kind == "index":
        result = {"files": result["embedded"], "failed": len(result["failed"]), "seconds": wall}
        result["run_seconds"] = json.loads(stdout)["seconds"]
    _remove(fresh)
    return result, wall, sampler


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


NAMES = {
    "limit": "limit: prepare_job in a bare pool",
    "index": "memesearch index (end to end)",
    "pipeline": "Indexer.run, model preloaded",
    "added": "same, store not empty (hash first)",
    "baseline": "baseline: 1 thread, like the original",
}


def run_all(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    """Every phase `args.repeat` times, interleaved; each row keeps the median run."""
    host = machine()  # before we load it ourselves
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    library, files = photos.photo_set(workdir, args.files, args.seed)
    job = {
        "library": str(library),
        "files": files,
        "model": str(tiny_model(workdir)),
        "workers": args.workers,
        "baseline_files": args.baseline_files,
    }
    kinds = list(NAMES)
    samples: dict[str, list[tuple[dict[str, Any], RssSampler]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="indexing-", dir=workdir) as scratch:
        for round_ in range(args.repeat):
            for kind in kinds:
                if kind == "baseline" and round_ > 0 and not args.repeat_baseline:
                    continue
                wait_for_idle(args.wait_idle)
                result, _, sampler = measure(kind, job, Path(scratch))
                samples[kind].append((result, sampler))
                if args.verbose:
                    print(f"{kind}: {result}", file=sys.stderr)
    rows = [_row(kind, samples[kind]) for kind in kinds]
    return rows, {**_extras(samples), "machine": host}


def _row(kind: str, samples: list[tuple[dict[str, Any], RssSampler]]) -> Row:
    ordered = sorted(samples, key=lambda sample: sample[0]["seconds"])
    result, median = ordered[(len(ordered) - 1) // 2]  # the median, the faster of an even pair
    failed = result["failed"]
    return Row(
        name=NAMES[kind],
        files=result["files"],
        seconds=result["seconds"],
        main_rss_mb=max(s.main_peak for _, s in samples) / MIB,
        tree_rss_mb=max(s.tree_peak for _, s in samples) / MIB,
        others=round(median.others, 3),
        runs=[round(r["seconds"], 2) for r, _ in samples],
        runs_others=[round(s.others, 3) for _, s in samples],
        note=f"{failed} failed" if failed else "",
    )


def _extras(samples: dict[str, list[tuple[dict[str, Any], RssSampler]]]) -> dict[str, Any]:
    """Indexer.run's own time inside the CLI runs (the rest is start, imports, store open)."""
    inner = [result["run_seconds"] for result, _ in samples["index"]]
    return {"index_run_seconds": [round(s, 2) for s in inner]}


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and GPU of this machine, from /proc."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    meminfo = Path("/proc/meminfo").read_text().split()
    memory_gb = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024
    gpu = Path("/proc/driver/nvidia").exists()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory_gb, 1),
        "gpu": "NVIDIA" if gpu else "none",
        "load_before": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }


def report(rows: list[Row], args: argparse.Namespace, extras: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, as one JSON-able dict."""
    by_kind = dict(zip(NAMES, rows, strict=True))
    limit, baseline = by_kind["limit"], by_kind["baseline"]
    return {
        "photos": photos.describe(Path(args.workdir), args.files, args.seed),
        "workers": args.workers or os.cpu_count(),
        "rows": [
            {
                "kind": kind,
                **asdict(row),
                "files_per_s": round(row.rate, 2),
                "vs_limit": round(row.rate / limit.rate, 3),
                "vs_baseline": round(row.rate / baseline.rate, 2),
            }
            for kind, row in by_kind.items()
        ],
        "target": TARGET,
        **{f"{kind}_vs_limit": round(by_kind[kind].rate / limit.rate, 3) for kind in VERDICTS},
        **extras,
    }


VERDICTS = {"index": "end to end", "pipeline": "pipeline", "added": "pipeline, hash first"}


def print_table(data: dict[str, Any]) -> None:
    m, p = data["machine"], data["photos"]
    print(
        f"machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB RAM, GPU: {m['gpu']}; "
        f"load before: {m['load_before']}; {data['workers']} decode workers"
    )
    print(
        f"photos: {p['files']} ({p['jpeg']} JPEG, {p['png']} PNG, {p['rotated']} EXIF-rotated), "
        f"{p['megapixels_min']}-{p['megapixels_max']} MP (mean {p['megapixels_mean']}), "
        f"{p['gigabytes']} GB"
    )
    header = f"{'run':40} {'files':>6} {'seconds':>8} {'files/s':>8} {'vs (a)':>7} {'vs (b)':>7}"
    print(f"{header} {'RSS main':>9} {'RSS tree':>9} {'others':>6}  every run: s/others")
    for row in data["rows"]:
        pairs = zip(row["runs"], row["runs_others"], strict=True)
        runs = " ".join(f"{seconds:.1f}/{others:.0%}" for seconds, others in pairs)
        print(
            f"{row['name']:40} {row['files']:>6} {row['seconds']:>8.2f} {row['files_per_s']:>8.1f}"
            f" {row['vs_limit']:>7.3f} {row['vs_baseline']:>7.2f}"
            f" {row['main_rss_mb']:>7.0f}MB {row['tree_rss_mb']:>7.0f}MB"
            f" {row['others']:>6.1%}  {runs}" + (f"  {row['note']}" if row["note"] else "")
        )
    print(f"Indexer.run inside the CLI runs (s): {data['index_run_seconds']}")
    print("others: CPU share other processes or the hypervisor took during a run (want ~0)")
    for kind, label in VERDICTS.items():
        ratio = data[f"{kind}_vs_limit"]
        verdict = "met" if ratio >= data["target"] else "MISSED"
        print(f"target {data['target']:.0%} of the limit, {label}: {ratio:.1%} ({verdict})")


def wait_for_idle(limit_s: float) -> None:
    """Wait up to `limit_s` for a 2-second stretch in which other processes leave the CPU idle."""
    import psutil

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and psutil.cpu_percent(interval=2.0) > 10.0:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--files", type=int, default=2000, help="photos in the set")
    parser.add_argument("--seed", type=int, default=0, help="which set of photos")
    parser.add_argument("--workdir", default="/tmp/memesearch-bench", help="cache and scratch")
    parser.add_argument("--workers", type=int, default=0, help="decode workers; 0: every core")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the median counts")
    parser.add_argument("--repeat-baseline", action="store_true", help="repeat the slow one too")
    parser.add_argument("--baseline-files", type=int, default=0, help="0: all files")
    parser.add_argument(
        "--wait-idle", type=float, default=0, help="before each run, wait up to this many s"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="each run as it ends")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        job = json.loads(Path(args.job).read_text(encoding="utf-8"))
        print(json.dumps(PHASES[args.phase](job)))
        return
    rows, extras = run_all(args)
    data = report(rows, args, extras)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_table(data)


if __name__ == "__main__":
    main()
