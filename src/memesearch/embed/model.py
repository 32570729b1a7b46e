"""Embedding models: the Embedder protocol and its open_clip implementation."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import blake3
import numpy as np

from memesearch.config import ModelSettings
from memesearch.errors import ModelLoadError
from memesearch.images.decode import PreprocessSpec

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
_CONFIG_NAME = "open_clip_config.json"
_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What identifies a model's vector space, known without loading its weights."""

    spec: str
    model_id: str
    dim: int
    # open_clip's preprocessing as the config describes it, so that images can be decoded while
    # the weights load; None when the config does not say. The loaded model has the last word.
    preprocess: PreprocessSpec | None = None


class Embedder(Protocol):
    """Turns images and texts into L2-normalised float32 vectors of one space."""

    info: ModelInfo
    preprocess: PreprocessSpec
    device: str

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [n, h, w, 3] at `preprocess.size` → float32 [n, dim]."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """n strings → float32 [n, dim]."""
        ...


def describe_model(settings: ModelSettings) -> ModelInfo:
    """Model id and dimension from the model's config alone, without loading weights."""
    spec = settings.name
    if spec.startswith("local-dir:"):
        folder = Path(spec.removeprefix("local-dir:"))
        config = _read_local_config(folder)
        model_id = f"{spec}#{_fingerprint(folder)}"
    elif spec.startswith("hf-hub:"):
        config = _read_hub_config(spec.removeprefix("hf-hub:"), settings.cache_dir)
        model_id = spec
    else:
        raise ModelLoadError(
            f"model {spec!r} is not a folder and has no 'hf-hub:' or 'local-dir:' prefix; an "
            "open_clip architecture name alone would have random weights. Use e.g. "
            "'hf-hub:timm/ViT-B-16-SigLIP', 'local-dir:/path/to/model' or a model folder"
        )
    try:
        dim = int(config["model_cfg"]["embed_dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"model {spec}: config has no usable model_cfg.embed_dim") from exc
    return ModelInfo(spec=spec, model_id=model_id, dim=dim, preprocess=_config_preprocess(config))


def _config_preprocess(config: dict[str, Any]) -> PreprocessSpec | None:
    """What open_clip will make of the config's preprocess_cfg and image size, if it says."""
    try:
        # open_clip takes the size from the image tower, whatever preprocess_cfg says.
        size = config["model_cfg"]["vision_cfg"]["image_size"]
        return PreprocessSpec.from_open_clip({**config.get("preprocess_cfg", {}), "size": size})
    except (KeyError, TypeError, ValueError):
        return None


def _read_local_config(folder: Path) -> dict[str, Any]:
    path = folder / _CONFIG_NAME
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model folder {folder} has no {_CONFIG_NAME}") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def _read_hub_config(repo_id: str, cache_dir: Path | None) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, _CONFIG_NAME, cache_dir=cache_dir)
        return dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        raise ModelLoadError(
            f"cannot fetch the config of hf-hub:{repo_id} ({exc.__class__.__name__}: {exc}); "
            "on an offline machine download the model once, or point [model] name at a folder"
        ) from exc


def _fingerprint(folder: Path) -> str:
    """Cheap identity of a model folder: its config plus the size, head and tail of its weights."""
    digest = blake3.blake3((folder / _CONFIG_NAME).read_bytes())
    for name in _WEIGHT_NAMES:
        weights = folder / name
        if weights.is_file():
            size = weights.stat().st_size
            digest.update(f"{name}:{size}".encode())
            with weights.open("rb") as handle:
                digest.update(handle.read(1 << 20))
                handle.seek(max(0, size - (1 << 20)))
                digest.update(handle.read(1 << 20))
    return str(digest.hexdigest()[:16])


class OpenClipEmbedder:
    """An open_clip model loaded once on one device; not thread-safe, the batcher serialises it."""

    def __init__(self, settings: ModelSettings, info: ModelInfo) -> None:
        import open_clip
        import torch

        self.info = info
        self.device = resolve_device(settings.device)
        self._dtype = _resolve_dtype(settings.precision, self.device)
        try:
            # Weights in low precision on a GPU; autocast keeps the numerically touchy ops in fp32.
            model, _, _ = open_clip.create_model_and_transforms(
                info.spec,
                device=self.device,
                precision=self._dtype,
                cache_dir=str(settings.cache_dir) if settings.cache_dir else None,
            )
            self._tokenizer = open_clip.get_tokenizer(info.spec, cache_dir=settings.cache_dir)
        except Exception as exc:
            raise ModelLoadError(f"cannot load model {info.spec}: {exc}") from exc
        self._model = model.eval()
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.preprocess = PreprocessSpec.from_open_clip(cfg)
        self._mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)
        log.info("loaded %s on %s (%s)", info.spec, self.device, self._dtype)

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [n, h, w, 3] → normalised float32 [n, dim]; normalisation runs on the device."""
        import torch

        expected = (*self.preprocess.size, 3)
        if pixels.ndim != 4 or pixels.shape[1:] != expected or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels of shape [n, {expected}], got {pixels.shape}")
        with torch.inference_mode(), self._autocast():
            batch = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2).float()
            batch = (batch / 255.0 - self._mean) / self._std
            features = self._model.encode_image(batch, normalize=True)
        return self._to_numpy(features)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings → normalised float32 [n, dim]."""
        import torch

        with torch.inference_mode(), self._autocast():
            tokens = self._tokenizer(list(texts)).to(self.device)
            features = self._model.encode_text(tokens, normalize=True)
        return self._to_numpy(features)

    def _autocast(self) -> AbstractContextManager[Any]:
        import torch

        if self._dtype == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self._dtype == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def _to_numpy(self, features: torch.Tensor) -> np.ndarray:
        array = features.float().cpu().numpy()
        if array.shape[1] != self.info.dim:
            raise ModelLoadError(
                f"model {self.info.spec} produced {array.shape[1]}-d vectors, "
                f"its config says {self.info.dim}"
            )
        # Re-normalise in float32: low-precision outputs drift a little from unit length.
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        return np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; an explicit cuda without one fails."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"[model] device is {device!r} but no CUDA device is available")
    return device


def _resolve_dtype(precision: str, device: str) -> str:
    import torch

    on_gpu = device.startswith("cuda")
    if precision == "auto":
        if not on_gpu:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not on_gpu:
        raise ModelLoadError("[model] precision fp16 needs a CUDA device; use fp32 on CPU")
    return precision


def load_embedder(settings: ModelSettings, info: ModelInfo | None = None) -> OpenClipEmbedder:
    """Describe (if not given) and load the configured model."""
    return OpenClipEmbedder(settings, info or describe_model(settings))
