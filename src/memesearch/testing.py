"""A tiny random-weight SigLIP-style model folder, for tests and benchmarks that must not download.

The folder has exactly the layout of a published open_clip model (`save_for_hf`): an
`open_clip_config.json`, `open_clip_model.safetensors` and a Hugging Face tokenizer, so it loads
through the same `local-dir:` code path as `hf-hub:timm/ViT-SO400M-14-SigLIP-384`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_WORDS = (
    "a an the of and with when you me my is on in at to cat cats dog dogs frog pepe drake "
    "meme memes sunglasses wearing red green blue yellow black white cartoon photo screenshot "
    "text happy sad angry surprised face man woman car house tree sky sea night day fire"
).split()


def tiny_model_config(
    *, embed_dim: int = 32, image_size: int = 64, vocab_size: int, resize_mode: str = "squash"
) -> dict[str, Any]:
    """A SigLIP-shaped open_clip config: native ViT image tower, HF-tokenised text tower."""
    return {
        "embed_dim": embed_dim,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": 16,
            "width": 64,
            "layers": 2,
            "head_width": 32,
            "mlp_ratio": 2,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": vocab_size,
            "hf_tokenizer_name": "tiny-t5",
            "width": 64,
            "heads": 2,
            "layers": 2,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
        },
        "_resize_mode": resize_mode,
    }


def build_tiny_model(
    folder: Path,
    *,
    seed: int = 0,
    embed_dim: int = 32,
    image_size: int = 64,
    resize_mode: str = "squash",
) -> Path:
    """Write a random-weight model to `folder` (about 1 MB, well under a second) and return it."""
    import torch
    from open_clip.model import CustomTextCLIP
    from open_clip.push_to_hf_hub import save_for_hf
    from transformers import T5Tokenizer

    vocab = _vocabulary()
    config = tiny_model_config(
        embed_dim=embed_dim,
        image_size=image_size,
        vocab_size=len(vocab),
        resize_mode=resize_mode,
    )
    resize = config.pop("_resize_mode")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CustomTextCLIP(**{k: v for k, v in config.items() if k != "custom_text"})
    finally:
        torch.random.set_rng_state(generator_state)
    mean = std = (0.5, 0.5, 0.5)
    model.visual.image_mean, model.visual.image_std = mean, std
    model.visual.preprocess_cfg = {
        "size": image_size,
        "mean": mean,
        "std": std,
        "interpolation": "bicubic",
        "resize_mode": resize,
    }
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    save_for_hf(model, tokenizer, config, str(folder), safe_serialization=True)
    return folder


def _vocabulary() -> list[tuple[str, float]]:
    """SentencePiece-style unigram pieces: whole words first, then characters as a fallback."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + word, -float(i)) for i, word in enumerate(_WORDS)]
    pieces += [(char, -50.0) for char in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces.append(("\u2581", -60.0))
    return pieces


def clustered_vectors(
    count: int,
    dim: int,
    *,
    clusters: int = 3000,
    spread: float = 1.0,
    seed: int = 0,
    draw_seed: int = 1,
    chunk: int = 65_536,
) -> Iterator[np.ndarray]:
    """Unit vectors drawn from a mixture of `clusters` gaussian directions, in float32 chunks.

    Like real embeddings (and unlike uniform noise) they bunch up: a point is its cluster's
    direction plus gaussian noise of norm about `spread` (cosine to the centre 1/sqrt(1+spread²)).
    Cluster sizes are skewed (Zipf-like), as topics in a meme folder are. `draw_seed` picks
    the points: two calls with one `seed` and different `draw_seed` sample the same mixture
    (a library and queries about it).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.5
    weights /= weights.sum()
    draws = np.random.default_rng([seed, draw_seed])
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        picks = draws.choice(clusters, size=n, p=weights)
        noise = draws.standard_normal((n, dim), dtype=np.float32) * np.float32(spread / dim**0.5)
        block = centres[picks] + noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        yield block


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write a config.toml with the given sections; dict values become sub-tables.

    For tests and benchmarks: strings are escaped, so any path is safe to put in.
    """
    lines: list[str] = []
    pending = list(sections.items())
    while pending:
        section, values = pending.pop(0)
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                pending.append((f"{section}.{key}", value))
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
