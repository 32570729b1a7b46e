r"""GPU benchmark (issue #5, no. 5): ViT-SO400M-14-SigLIP-384 images/s and text query latency.

The real model, with random weights: `open_clip.create_model(..., pretrained=None)` saved once
with `save_for_hf` (plus a generated 32000-piece T5 tokenizer) into a folder in the published
layout, then loaded only through the product (`local-dir:`). On one set of meme-sized photo-like
files (bench/photos.py pictures scaled to 0.15-1.5 MP; `--library photos` for 1-12 MP camera
photos) it measures:

  decode limit   the indexer's per-file job (`prepare_job`: read, hash, decode, resize, thumbnail)
                 in a spawn pool of `[indexer]` workers: the CPU ceiling, no model involved.
  model only     `OpenClipEmbedder.embed_images` on those files' preprocessed pixels, in batches
                 of `[model] batch_size`, per dtype (bf16, fp16, fp32); load and warm-up
                 excluded, synchronised. Beside it, the bare forward on device-resident input
                 (with the product's autocast, and without it for bf16/fp16), the agreement of
                 each dtype's vectors with fp32's, and peak GPU memory.
  end to end     `memesearch index` on a fresh store (process start to exit; and Indexer.run's
                 own seconds, which include the lazy model load), then `Indexer.run` in a process
                 whose model is already loaded. Ratio: images/s over model-only images/s.
  text queries   p50/p99 of one query at a time: `embed_texts` directly, through the
                 MicroBatcher (which lingers `max_wait_ms` for company), and with `--serve`,
                 `POST /api/search` against `memesearch serve` over the indexed store.
  FAISS          only where faiss has GPU support: exact search over 1M x 1152 vectors through
                 VectorIndex on the GPU vs the CPU, and a search right after a write.

Target (issue #5): >= 600 images/s end to end on an H100.

Here, with no GPU, as a smoke test (a few minutes: so400m takes ~2 s an image on 2 cores):

    .venv/bin/python bench/gpu.py --device cpu --images 8 --dtypes fp32

On the GPU machine (the `run` tool; its image has torch, timm, transformers, httpx, pynvml but
not the rest), first, here, once, fetch the missing wheels into an ignored folder (~30 MB):

    echo /.whl/ >> .git/info/exclude
    .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
      open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 faiss-cpu==1.15.1 SQLAlchemy==2.1.9 \
      greenlet==3.5.6 alembic==1.20.1 Mako==1.4.3 pydantic==2.14.3 pydantic_core==2.50.4 \
      annotated-types==0.8.0 typing-inspection==0.4.5 pydantic-settings==2.16.3 \
      python-dotenv==1.2.4 blake3==1.0.11 fastapi==0.165.0 opentelemetry-api==1.45.2 \
      starlette==1.10.0 uvicorn==0.54.0 watchfiles==1.3.0 python-multipart==0.0.34 \
      prometheus-fastapi-instrumentator==8.1.0

then one `run` with carry [".whl"] and timeout_s 600 (about 5-6 minutes of device time; the
JSON in $OUT is rewritten after each step, so a run cut short still returns what it measured):

    python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1;
    PYTHONUNBUFFERED=1 PYTHONPATH=src python3 bench/gpu.py --device cuda --images 4096 \
      --dtypes bf16,fp16,fp32 --sweep-batch-sizes 64,128 --serve --json-out $OUT/gpu.json

The wheels go into the machine's own environment, not a --target folder, so that the
`memesearch` child processes find them too. faiss-gpu cannot travel there (its CUDA 12 libraries
are far over the 64 MiB carry limit), so the FAISS part reports itself skipped unless a faiss
with GPU support is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench"), str(ROOT)]

import photos  # noqa: E402  (bench/photos.py: the photo-like pictures)

MODEL = "ViT-SO400M-14-SigLIP-384"
MODEL_VERSION = 1  # bump when the folder's content changes, so cached copies are rebuilt
TARGET = 600.0  # images/s end to end on an H100 (issue #5)
QUERIES = (
    "cat wearing sunglasses",
    "drake disapproving then approving",
    "a frog that is sad",
    "when the code works on the first try",
    "distracted boyfriend looking at another woman",
    "this is fine dog in a burning room",
    "red car at night",
    "surprised pikachu face",
)


# --- the model folder -----------------------------------------------------------------------


def random_model(workdir: Path, seed: int) -> Path:
    """The so400m folder in `save_for_hf` layout with random weights; built once per workdir."""
    folder = workdir / f"so400m-random-seed{seed}-v{MODEL_VERSION}"
    if (folder / "open_clip_config.json").exists():
        return folder
    import open_clip
    import torch
    from open_clip.push_to_hf_hub import save_for_hf

    config = open_clip.get_model_config(MODEL)
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL, pretrained=None)
    # The published weights' preprocessing (SigLIP: mean = std = 0.5, squash, bicubic).
    pretrained = open_clip.get_pretrained_cfg(MODEL, "webli")
    model.visual.image_mean, model.visual.image_std = pretrained["mean"], pretrained["std"]
    model.visual.preprocess_cfg = {
        **model.visual.preprocess_cfg,
        **{key: pretrained[key] for key in ("mean", "std", "interpolation", "resize_mode")},
    }
    building = folder.with_name(folder.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    tokenizer = random_tokenizer(config["text_cfg"]["vocab_size"])
    save_for_hf(model, tokenizer, config, str(building), safe_serialization=True)
    building.rename(folder)  # last: a folder under its final name is complete
    return folder


def random_tokenizer(vocab_size: int) -> Any:
    """A SentencePiece-style T5 tokenizer of exactly `vocab_size` pieces, built offline."""
    from transformers import T5Tokenizer

    words = {word for query in QUERIES for word in query.split()}
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + word, -1.0 - i) for i, word in enumerate(sorted(words))]
    pieces += [(char, -50.0) for char in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces.append(("\u2581", -60.0))
    # Filler up to the model's vocabulary: token identity is irrelevant to speed.
    pieces += [(f"\u2581x{i}", -100.0) for i in range(vocab_size - len(pieces))]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def preprocess_spec(folder: Path) -> Any:
    """The model's input spec from its config alone (the saved preprocess_cfg has no size)."""
    from memesearch.images.decode import PreprocessSpec

    config = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
    size = config["model_cfg"]["vision_cfg"]["image_size"]
    return PreprocessSpec.from_open_clip({**config["preprocess_cfg"], "size": size})


# --- the files ------------------------------------------------------------------------------


def meme_set(workdir: Path, count: int, seed: int) -> tuple[Path, list[str]]:
    """photos.py's set scaled down to meme sizes (0.15-1.5 MP), cached the way photos.py does."""
    root = workdir / "memes"
    home = root / f"photos-n{count}-seed{seed}-v{photos.VERSION}"
    if not (home / "manifest.json").exists():
        shutil.rmtree(home, ignore_errors=True)
        library = home / "photos"
        library.mkdir(parents=True)
        plans = [_meme_sized(plan) for plan in photos.plan_photos(count, seed)]
        spawn = multiprocessing.get_context("spawn")  # CUDA may be up in this process
        with ProcessPoolExecutor(mp_context=spawn) as pool:
            sizes = list(pool.map(partial(photos.write_photo, library), plans, chunksize=4))
        summary = {"files": [p.path for p in plans], "bytes": sum(sizes)}
        summary["plans"] = [asdict(plan) for plan in plans]
        (home / "manifest.json").write_text(json.dumps(summary), encoding="utf-8")
    return photos.photo_set(root, count, seed)  # the cached set, as photos.py reads it


def _meme_sized(plan: photos.PhotoPlan) -> photos.PhotoPlan:
    megapixels = plan.width * plan.height / 1e6  # 1-12 MP, spread evenly
    scale = ((0.15 + (megapixels - 1.0) * 1.35 / 11.0) / megapixels) ** 0.5
    return replace(plan, width=round(plan.width * scale), height=round(plan.height * scale))


def decode_files(
    paths: list[str], spec: Any, thumbnails: Path, workers: int
) -> tuple[np.ndarray, float, int]:
    """prepare_job over every file in a spawn pool (timed once it is up): pixels, s, failures."""
    from memesearch.config import ThumbnailSettings
    from memesearch.images.decode import DecodeLimits
    from memesearch.images.prepare import PreparedImage
    from memesearch.images.thumbnails import ThumbnailSpec
    from memesearch.ingest.pool import prepare_job

    cfg = ThumbnailSettings()
    thumbs = ThumbnailSpec(thumbnails, cfg.width, cfg.format.upper(), cfg.quality)
    context = multiprocessing.get_context("spawn")  # as the indexer's DecodePool
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        list(pool.map(_warm_worker, range(workers)))
        started = time.perf_counter()
        jobs = pool.map(
            prepare_job, paths, repeat(spec), repeat(DecodeLimits()), repeat(thumbs), chunksize=4
        )
        outcomes = list(jobs)
        seconds = time.perf_counter() - started
    good = [outcome.pixels for outcome in outcomes if isinstance(outcome, PreparedImage)]
    return np.stack(good), seconds, len(outcomes) - len(good)


def _warm_worker(_: int) -> None:
    import memesearch.ingest.pool  # noqa: F401

    time.sleep(0.3)


# --- model only and text queries -------------------------------------------------------------


@dataclass
class ModelRow:
    """Model-only figures of one dtype and batch size."""

    dtype: str
    batch_size: int
    images: int
    seconds: float
    load_s: float
    forward_per_s: float  # encode_image on device-resident input, the product's autocast
    forward_no_autocast_per_s: float | None  # the same with weights and input in the low dtype
    peak_gpu_gib: float | None
    finite: bool
    cos_vs_fp32_min: float | None = None
    cos_vs_fp32_mean: float | None = None

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def sync(device: str) -> None:
    """Wait for queued GPU work, so host clocks measure it."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def load_timed(folder: Path, device: str, dtype: str, batch_size: int) -> tuple[Any, float]:
    """The product's embedder for `dtype`, and the seconds its load took."""
    import torch

    from memesearch.config import ModelSettings
    from memesearch.embed.model import load_embedder

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    settings = ModelSettings(
        name=f"local-dir:{folder}", device=device, precision=dtype, batch_size=batch_size
    )
    started = time.perf_counter()
    embedder = load_embedder(settings)
    sync(device)
    return embedder, time.perf_counter() - started


def time_embed(
    embedder: Any, pixels: np.ndarray, batch_size: int, warmup: list[np.ndarray]
) -> tuple[float, np.ndarray]:
    """Seconds to embed every image in batches (after the warm-up batches), and the vectors."""
    for batch in warmup:
        embedder.embed_images(batch)
    sync(embedder.device)
    started = time.perf_counter()
    vectors = [
        embedder.embed_images(pixels[start : start + batch_size])
        for start in range(0, len(pixels), batch_size)
    ]
    sync(embedder.device)
    return time.perf_counter() - started, np.concatenate(vectors)


def forward_rate(embedder: Any, batch: np.ndarray, reps: int, *, autocast: bool) -> float:
    """Images/s of the bare image tower on input already on the device (no copies, no numpy)."""
    import torch

    # The product's own module, mean/std and autocast; only the host round trips are left out.
    model, device = embedder._model, embedder.device
    with torch.inference_mode():
        x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float()
        x = (x / 255.0 - embedder._mean) / embedder._std
        if not autocast:
            x = x.to(next(model.visual.parameters()).dtype)
        with embedder._autocast() if autocast else nullcontext():
            model.encode_image(x, normalize=True)  # warm-up
            sync(device)
            started = time.perf_counter()
            for _ in range(reps):
                model.encode_image(x, normalize=True)
            sync(device)
    return reps * len(batch) / (time.perf_counter() - started)


def _no_autocast_rate(embedder: Any, batch: np.ndarray, reps: int) -> float | None:
    """forward_rate without autocast, or None (and why, on stderr) where that cannot run."""
    try:
        return forward_rate(embedder, batch, reps, autocast=False)
    except RuntimeError as exc:  # a diagnostic only: never worth the rest of the run
        _say(f"forward without autocast failed: {exc}")
        return None


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50/p99/mean in milliseconds."""
    ms = np.asarray(seconds) * 1000
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def text_latency(embedder: Any, texts: list[str], warmup: int, batch_size: int) -> dict[str, Any]:
    """One query at a time: embed_texts directly, and through the product's MicroBatcher."""
    for text in texts[:warmup]:
        embedder.embed_texts([text])
    direct = []
    for text in texts:
        started = time.perf_counter()
        embedder.embed_texts([text])
        direct.append(time.perf_counter() - started)
    batched = asyncio.run(_batched_latency(embedder, texts, warmup, batch_size))
    return {"direct": percentiles(direct), "batcher": percentiles(batched)}


async def _batched_latency(
    embedder: Any, texts: list[str], warmup: int, batch_size: int
) -> list[float]:
    from memesearch.config import ModelSettings
    from memesearch.embed.batcher import MicroBatcher

    wait_ms = ModelSettings().max_wait_ms
    latencies = []
    async with MicroBatcher(embedder, max_batch_size=batch_size, max_wait_ms=wait_ms) as batcher:
        for text in texts[:warmup]:
            await batcher.embed_texts([text])
        for text in texts:
            started = time.perf_counter()
            await batcher.embed_texts([text])
            latencies.append(time.perf_counter() - started)
    return latencies


def measure_dtype(
    args: argparse.Namespace, folder: Path, dtype: str, pixels: np.ndarray, texts: list[str]
) -> tuple[list[ModelRow], np.ndarray, dict[str, Any]]:
    """Model-only rows (the product's batch size, then any sweep), vectors and text latency."""
    import torch

    on_gpu = args.device.startswith("cuda")
    embedder, load_s = load_timed(folder, args.device, dtype, args.batch_size)
    if embedder.preprocess != preprocess_spec(folder):
        raise RuntimeError(f"pixels made for {preprocess_spec(folder)}, not {embedder.preprocess}")
    rows, vectors = [], []
    sweep = args.sweep_batch_sizes if dtype == args.dtypes[0] else []
    for batch_size in [args.batch_size, *sweep]:
        _say(f"model only: {dtype}, batch {batch_size}, {len(pixels)} images")
        first = pixels[:batch_size]
        seconds, found = time_embed(
            embedder, pixels, batch_size, [first] * 3 if on_gpu else [pixels[:1]]
        )
        vectors.append(found)
        # On the CPU one image, once: enough to run the code, not to measure it.
        probe, reps = (
            (first, max(3, min(len(pixels) // batch_size, 30))) if on_gpu else (first[:1], 1)
        )
        low = None if dtype == "fp32" else _no_autocast_rate(embedder, probe, reps)
        peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
        rows.append(
            ModelRow(
                dtype=dtype,
                batch_size=batch_size,
                images=len(pixels),
                seconds=seconds,
                load_s=load_s,
                forward_per_s=forward_rate(embedder, probe, reps, autocast=True),
                forward_no_autocast_per_s=low,
                peak_gpu_gib=None if peak is None else round(peak, 2),
                finite=bool(np.isfinite(found).all()),
            )
        )
    _say(f"text queries: {dtype}, {len(texts)} one at a time")
    latency = text_latency(embedder, texts, 5 if on_gpu else 1, args.batch_size)
    del embedder
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return rows, vectors[0], latency


def agreement(rows: list[ModelRow], vectors: dict[str, np.ndarray]) -> None:
    """Cosine of each dtype's vectors with fp32's, image by image (the same files)."""
    if "fp32" not in vectors:
        return
    for row in rows:
        if row.batch_size == rows[0].batch_size and row.dtype != "fp32":
            cosines = (vectors[row.dtype] * vectors["fp32"]).sum(axis=1)
            row.cos_vs_fp32_min = round(float(cosines.min()), 5)
            row.cos_vs_fp32_mean = round(float(cosines.mean()), 5)


# --- end to end -----------------------------------------------------------------------------


def child_env(args: argparse.Namespace, dtype: str) -> dict[str, str]:
    """The environment of a `memesearch` child: offline, src importable, [model] overridden."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": path,
        "MEMESEARCH_MODEL__DEVICE": args.device,
        "MEMESEARCH_MODEL__PRECISION": dtype,
        "MEMESEARCH_MODEL__BATCH_SIZE": str(args.batch_size),
        "MEMESEARCH_INDEXER__WORKERS": str(args.workers),
    }


@contextmanager
def gpu_busy(enabled: bool) -> Iterator[list[int]]:
    """NVML utilisation of GPU 0 (% of time a kernel ran), sampled every 50 ms meanwhile."""
    samples: list[int] = []
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no pynvml, no NVML or no GPU: the figure is simply absent
        enabled = False
    if not enabled:
        yield samples
        return
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            samples.append(int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def run_child(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run a command to completion: its stdout and wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[-4:])} exited with {done.returncode}")
    return done.stdout, time.perf_counter() - started


def end_to_end(
    args: argparse.Namespace, folder: Path, library: Path, dtype: str, scratch: Path
) -> tuple[list[dict[str, Any]], tuple[Path, int]]:
    """`memesearch index` on a fresh store, then Indexer.run with the model preloaded."""
    from load import free_port, write_config  # bench/load.py

    env, model, port = child_env(args, dtype), f"local-dir:{folder}", free_port()
    cli_config = write_config(_fresh(scratch / f"cli-{dtype}"), library, model, port)
    _say(f"end to end: memesearch index, {dtype}")
    command = [sys.executable, "-m", "memesearch", "index", "-c", str(cli_config), "--json"]
    stdout, wall = run_child(command, env)
    cli = json.loads(stdout)
    pipe_config = write_config(_fresh(scratch / f"pipe-{dtype}"), library, model, port)
    _say(f"end to end: Indexer.run with the model preloaded, {dtype}")
    command = [sys.executable, __file__, "--phase", "pipeline", "--config", str(pipe_config)]
    pipe = json.loads(run_child(command, env)[0].splitlines()[-1])
    rows = [
        {"run": "memesearch index, process start to exit", "seconds": wall},
        {"run": "  Indexer.run inside it, model load too", "seconds": cli["seconds"]},
        {"run": "Indexer.run, model preloaded", **pipe},
    ]
    for row in rows[:2]:
        row.update(images=cli["embedded"], failed=len(cli["failed"]))
    return [{"dtype": dtype, **row} for row in rows], (cli_config, port)


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def phase_pipeline(config: Path) -> dict[str, Any]:
    """In a child: load the model, then time one Indexer.run over a fresh store."""
    from memesearch.config import load_settings
    from memesearch.services import open_services

    settings = load_settings(config)

    async def run() -> dict[str, Any]:
        async with open_services(settings) as services:
            started = time.perf_counter()
            await services.runtime.batcher()
            loaded = time.perf_counter() - started
            indexer = services.indexer()
            with gpu_busy(settings.model.device.startswith("cuda")) as busy:
                started = time.perf_counter()
                report = await indexer.run()
                seconds = time.perf_counter() - started
        return {
            "images": report.embedded,
            "failed": len(report.failed),
            "seconds": seconds,
            "load_s": round(loaded, 2),
            "gpu_busy_pct": round(sum(busy) / len(busy), 1) if busy else None,
        }

    return asyncio.run(run())


def serve_latency(
    args: argparse.Namespace, store: tuple[Path, int], dtype: str, texts: list[str]
) -> dict[str, Any]:
    """`POST /api/search` one query at a time against `memesearch serve` over the indexed store."""
    import httpx
    from load import wait_until  # bench/load.py

    config, port = store
    base, log = f"http://127.0.0.1:{port}", config.with_name("serve.log")
    command = [sys.executable, "-m", "memesearch", "serve", "-c", str(config)]
    with log.open("w") as sink:
        server = subprocess.Popen(command, env=child_env(args, dtype), stdout=sink, stderr=sink)
    try:
        asyncio.run(wait_until(base, indexing=False, timeout=600))
        latencies, errors = [], 0
        with httpx.Client(base_url=base, timeout=300) as http:
            for i, text in enumerate([*texts[:5], *texts]):  # the first loads the model
                started = time.perf_counter()
                response = http.post("/api/search", json={"terms": [{"text": text}], "k": 50})
                errors += response.status_code != 200
                if i >= 5:
                    latencies.append(time.perf_counter() - started)
        return {"dtype": dtype, "errors": errors, **percentiles(latencies)}
    except Exception:
        sys.stderr.write(log.read_text(encoding="utf-8")[-4000:])
        raise
    finally:
        server.terminate()
        server.wait(timeout=60)


# --- FAISS ----------------------------------------------------------------------------------


def faiss_latency(count: int, queries: int) -> dict[str, Any]:
    """Exact search over `count` x 1152 through VectorIndex, GPU vs CPU; skipped without GPU."""
    import faiss

    from memesearch.index import VectorIndex, faiss_has_gpu, new_flat
    from memesearch.testing import clustered_vectors

    if count <= 0:
        return {"skipped": "--faiss-vectors 0"}
    if not faiss_has_gpu():
        return {"skipped": f"faiss {faiss.__version__} here has no GPU support or sees no GPU"}
    _say(f"FAISS: {count} vectors")
    dim, flat, start = 1152, new_flat(1152), 0
    for block in clustered_vectors(count, dim):
        flat.add_with_ids(block, np.arange(start, start + len(block), dtype=np.int64))
        start += len(block)
    probes = next(clustered_vectors(queries, dim, draw_seed=2))
    result: dict[str, Any] = {"vectors": count}
    for name, use_gpu in (("cpu", False), ("gpu", True)):
        try:
            result[name] = _search_latency(VectorIndex(dim, index=flat, use_gpu=use_gpu), probes)
        except Exception as exc:  # optional: a faiss-gpu that cannot take this index says so
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def _search_latency(index: Any, probes: np.ndarray) -> dict[str, Any]:
    """Top-50 latency one query at a time, a batch of 16, and (GPU) the search after a write."""
    index.search(probes[:1], 50)  # the GPU replica is made here
    single = []
    for probe in probes:
        started = time.perf_counter()
        index.search(probe, 50)
        single.append(time.perf_counter() - started)
    started = time.perf_counter()
    index.search(probes[:16], 50)
    result = {**percentiles(single), "batch16_ms": _ms_since(started)}
    if index.on_gpu:  # every write drops the replica: the next search uploads the index again
        index.add([len(index) + 10**9], probes[:1])
        started = time.perf_counter()
        index.search(probes[0], 50)
        result["after_write_ms"] = _ms_since(started)
    return result


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


# --- the whole run --------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What ran this: cores, memory, torch, and the GPU if there is one."""
    import open_clip
    import torch

    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "capability": f"sm_{props.major}{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return info


def choose_device(args: argparse.Namespace) -> list[str]:
    """Resolve --device and drop the dtypes it cannot run; returns notes for the report."""
    import torch

    notes, has_gpu = [], torch.cuda.is_available()
    if not has_gpu:
        notes.append(
            "NO GPU FOUND: torch sees no CUDA device, so this ran on the CPU as a smoke test; "
            "its figures say nothing about GPU speed"
        )
        if args.device == "cuda":
            raise SystemExit("--device cuda, but torch sees no CUDA device")
    elif args.device == "cpu":
        notes.append("a GPU is present, but --device cpu was asked for")
    if args.device == "auto":
        args.device = "cuda" if has_gpu else "cpu"
    keep = []
    for dtype in args.dtypes:
        if dtype == "fp16" and args.device == "cpu":
            notes.append("fp16 skipped: the product runs fp16 on CUDA only")
        elif dtype == "bf16" and args.device == "cuda" and not torch.cuda.is_bf16_supported():
            notes.append("bf16 skipped: this GPU has no bf16")
        elif dtype not in ("bf16", "fp16", "fp32"):
            raise SystemExit(f"unknown dtype {dtype!r}: bf16, fp16 or fp32")
        else:
            keep.append(dtype)
    if not keep:
        raise SystemExit(f"none of --dtypes can run on {args.device}")
    args.dtypes = keep
    args.e2e_dtypes = [d for d in args.e2e_dtypes if d in keep] or keep[:1]
    args.sweep_batch_sizes = [b for b in args.sweep_batch_sizes if b != args.batch_size]
    args.queries = args.queries or (200 if args.device == "cuda" else 5)
    args.workers = args.workers or os.cpu_count() or 1
    return notes


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, in one JSON-able dict (also written to --json-out after each step)."""
    notes = choose_device(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    library, files, described = file_set(args, workdir)
    _say(f"model folder ({MODEL}, random weights) under {workdir}")
    started = time.perf_counter()
    folder = random_model(workdir, args.seed)
    data: dict[str, Any] = {
        "machine": machine(),
        "device": args.device,
        "notes": notes,
        "model": MODEL,
        "model_folder": str(folder),
        "model_ready_s": round(time.perf_counter() - started, 1),
        "batch_size": args.batch_size,
        "library": {"kind": args.library, **described},
    }
    texts = [f"{QUERIES[i % len(QUERIES)]} {i}" for i in range(args.queries)]
    with tempfile.TemporaryDirectory(prefix="gpu-", dir=workdir) as scratch_name:
        scratch = Path(scratch_name)
        _say(f"decode limit: {len(files)} files, {args.workers} workers")
        paths = [str(library / name) for name in files]
        spec = preprocess_spec(folder)
        pixels, seconds, failed = decode_files(paths, spec, scratch / "thumbs", args.workers)
        rate = round(len(files) / seconds, 1)
        data["decode"] = {"files": len(files), "failed": failed, "workers": args.workers}
        data["decode"].update(seconds=seconds, files_per_s=rate)
        data.update(measure_model(args, folder, pixels, texts))
        checkpoint(args, data)
        data["end_to_end"], stores = [], []
        for dtype in args.e2e_dtypes:
            rows, store = end_to_end(args, folder, library, dtype, scratch)
            data["end_to_end"] += rows
            stores.append((store, dtype))
            checkpoint(args, data)
        if args.serve:
            _say("serve: POST /api/search, one query at a time")
            data["serve"] = serve_latency(args, stores[0][0], stores[0][1], texts)
    data["faiss"] = faiss_latency(args.faiss_vectors, 100 if args.device == "cuda" else 5)
    add_ratios(data)
    checkpoint(args, data)
    return data


def file_set(args: argparse.Namespace, workdir: Path) -> tuple[Path, list[str], dict[str, Any]]:
    """The library folder, its files and their description (made once, then cached)."""
    _say(f"{args.images} {args.library} under {workdir}")
    if args.library == "memes":
        library, files = meme_set(workdir, args.images, args.seed)
        return library, files, photos.describe(workdir / "memes", args.images, args.seed)
    library, files = photos.photo_set(workdir, args.images, args.seed)
    return library, files, photos.describe(workdir, args.images, args.seed)


def checkpoint(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Write what is measured so far: a run stopped at its time limit still leaves figures."""
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(data, indent=2), encoding="utf-8")


def measure_model(
    args: argparse.Namespace, folder: Path, pixels: np.ndarray, texts: list[str]
) -> dict[str, Any]:
    """Model-only rows and text latency of every dtype, with their agreement with fp32."""
    rows, vectors, latency = [], {}, {}
    for dtype in args.dtypes:
        found, vectors[dtype], latency[dtype] = measure_dtype(args, folder, dtype, pixels, texts)
        rows += found
    agreement(rows, vectors)
    return {
        "model_only": [{**asdict(row), "images_per_s": round(row.rate, 2)} for row in rows],
        "text": latency,
    }


def add_ratios(data: dict[str, Any]) -> None:
    """Each dtype over fp32, and each end-to-end rate over model-only (same dtype) and decode."""
    product = {r["dtype"]: r for r in data["model_only"] if r["batch_size"] == data["batch_size"]}
    rate = {dtype: row["images"] / row["seconds"] for dtype, row in product.items()}
    data["dtype_vs_fp32"] = {
        dtype: round(rate[dtype] / rate["fp32"], 2) for dtype in rate if "fp32" in rate
    }
    decode = data["decode"]["files"] / data["decode"]["seconds"]
    for row in data["end_to_end"]:
        images_per_s = row["images"] / row["seconds"]
        row["images_per_s"] = round(images_per_s, 2)
        row["vs_model_only"] = round(images_per_s / rate[row["dtype"]], 3)
        row["vs_decode"] = round(images_per_s / decode, 3)


def print_report(data: dict[str, Any]) -> None:
    """The figures as tables; the verdict on the target last."""
    m, gpu = data["machine"], data["machine"]["gpu"]
    print(f"memesearch GPU benchmark (issue #5): {data['model']}, random weights, {data['device']}")
    for note in data["notes"]:
        print(f"  ** {note}")
    if gpu:
        gpu_text = (
            f"{gpu['name']} ({gpu['capability']}, {gpu['memory_gib']} GiB, CUDA {gpu['cuda']})"
        )
    print(
        f"machine: {m['cores']} cores, Python {m['python']}, torch {m['torch']}, "
        f"open_clip {m['open_clip']}; GPU: {gpu_text if gpu else 'none'}"
    )
    lib, dec = data["library"], data["decode"]
    print(
        f"library: {lib['files']} {lib['kind']} ({lib['jpeg']} JPEG, {lib['png']} PNG), "
        f"{lib['megapixels_min']}-{lib['megapixels_max']} MP (mean {lib['megapixels_mean']}), "
        f"{lib['gigabytes']} GB; model folder ready in {data['model_ready_s']} s"
    )
    print(
        f"decode limit (prepare_job in {dec['workers']} spawn workers, with thumbnails): "
        f"{dec['files_per_s']} files/s ({dec['seconds']:.2f} s, {dec['failed']} failed)"
    )
    print_model_only(data)
    print_end_to_end(data)
    print(f"\nFAISS: {json.dumps(data['faiss'])}")
    print_verdict(data)


def print_verdict(data: dict[str, Any]) -> None:
    """The issue's target, judged on the steady state and shown for the whole command."""
    gpu = data["machine"]["gpu"]
    on_h100 = data["device"] == "cuda" and bool(gpu) and "H100" in gpu["name"]
    print(f"\ntarget (issue #5): >= {TARGET:.0f} images/s end to end on an H100")
    for row in data["end_to_end"]:
        if row["run"].startswith("Indexer.run, model preloaded"):
            rate = row["images_per_s"]
            verdict = ("met" if rate >= TARGET else "MISSED") if on_h100 else "not judged: no H100"
            print(f"  steady state ({row['dtype']}, Indexer.run, model loaded): {rate} ({verdict})")
        elif row["run"].startswith("memesearch index"):
            print(
                f"  whole `memesearch index` ({row['dtype']}, start-up and model load included, "
                f"{row['images']} images): {row['images_per_s']}"
            )


def print_model_only(data: dict[str, Any]) -> None:
    """Model-only table and text latency."""
    print("\nmodel only: OpenClipEmbedder.embed_images on preprocessed uint8 batches")
    head = ("dtype", "batch", "images", "s", "img/s", "fwd/s", "fwd/s-ac", "load s", "GiB")
    print("{:5} {:>5} {:>6} {:>7} {:>8} {:>8} {:>8} {:>6} {:>5}".format(*head), end="")
    print(f" {'cos min':>8} {'cos mean':>8} finite")
    for r in data["model_only"]:
        print(
            f"{r['dtype']:5} {r['batch_size']:>5} {r['images']:>6} {r['seconds']:>7.2f} "
            f"{_rate(r['images_per_s'])} {_rate(r['forward_per_s'])} "
            f"{_rate(r['forward_no_autocast_per_s'])} {r['load_s']:>6.1f} "
            f"{_num(r['peak_gpu_gib'], 5, 2)} {_num(r['cos_vs_fp32_min'], 8, 5)} "
            f"{_num(r['cos_vs_fp32_mean'], 8, 5)} {r['finite']}"
        )
    print(
        "  fwd/s: encode_image on device-resident input, product autocast; -ac: weights and input "
        "in the low dtype, no autocast; cos: against fp32's vectors of the same images"
    )
    for dtype, ratio in data["dtype_vs_fp32"].items():
        if dtype != "fp32":
            print(f"  {dtype} vs fp32 (model only, batch {data['batch_size']}): {ratio:.2f}x")
    print("\ntext queries, one at a time: p50 / p99 ms")
    for dtype, t in data["text"].items():
        direct, batched = t["direct"], t["batcher"]
        print(
            f"  {dtype:5} embed_texts {direct['p50_ms']:.1f} / {direct['p99_ms']:.1f}   "
            f"through MicroBatcher {batched['p50_ms']:.1f} / {batched['p99_ms']:.1f}"
            f"   (n={direct['n']})"
        )
    if "serve" in data:
        s = data["serve"]
        print(
            f"  POST /api/search ({s['dtype']}, memesearch serve): {s['p50_ms']:.1f} / "
            f"{s['p99_ms']:.1f}   (n={s['n']}, {s['errors']} errors)"
        )


def print_end_to_end(data: dict[str, Any]) -> None:
    """End-to-end table with its ratios."""
    print("\nend to end, a fresh store each run (vs: images/s over model-only and over decode)")
    head = ("run", "dtype", "images", "s", "img/s", "vs model", "vs decode", "GPU busy")
    print("{:42} {:5} {:>6} {:>7} {:>8} {:>8} {:>9} {:>8}".format(*head))
    for r in data["end_to_end"]:
        busy = "-" if r.get("gpu_busy_pct") is None else f"{r['gpu_busy_pct']:.0f}%"
        print(
            f"{r['run']:42} {r['dtype']:5} {r['images']:>6} {r['seconds']:>7.2f} "
            f"{_rate(r['images_per_s'])} {r['vs_model_only']:>8.3f} "
            f"{r['vs_decode']:>9.3f} {busy:>8}"
        )
    loads = [f"{r['dtype']} {r['load_s']} s" for r in data["end_to_end"] if "load_s" in r]
    print(f"  model load before the preloaded run: {', '.join(loads)}")


def _rate(value: float | None) -> str:
    """Eight columns: tenths for GPU-sized rates, more digits for the CPU's fractions."""
    return _num(value, 8, 1 if value is None or value >= 10 else 3)


def _num(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _say(message: str) -> None:
    print(f"[gpu.py {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _csv(kind: type) -> Any:
    return lambda text: [kind(item.strip()) for item in text.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--images", type=int, default=4096, help="files to index")
    parser.add_argument("--library", choices=("memes", "photos"), default="memes")
    parser.add_argument("--batch-size", type=int, default=32, help="[model] batch_size")
    parser.add_argument("--sweep-batch-sizes", type=_csv(int), default=[], help="first dtype")
    parser.add_argument("--dtypes", type=_csv(str), default=["bf16", "fp16", "fp32"])
    parser.add_argument("--e2e-dtypes", type=_csv(str), default=[], help="default: first dtype")
    parser.add_argument("--workers", type=int, default=0, help="decode workers; 0: every core")
    parser.add_argument("--queries", type=int, default=0, help="0: 200 on a GPU, 5 on the CPU")
    parser.add_argument("--serve", action="store_true", help="also time POST /api/search")
    parser.add_argument("--faiss-vectors", type=int, default=1_000_000, help="0: skip FAISS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/memesearch-bench", help="cache and scratch")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--json-out", help="also write the JSON to this file")
    parser.add_argument("--phase", choices=("pipeline",), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a random-weight model never needs the hub
    if args.phase:
        print(json.dumps(phase_pipeline(Path(args.config))))
        return
    data = run_all(args)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_report(data)


if __name__ == "__main__":
    main()
