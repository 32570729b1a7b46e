"""What a model's config says without loading it, against what open_clip makes of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memesearch.config import ModelSettings
from memesearch.embed.model import describe_model, load_embedder
from memesearch.testing import build_tiny_model


@pytest.mark.parametrize(
    ("image_size", "resize_mode"), [(64, "squash"), (32, "shortest"), (48, "longest")]
)
def test_the_config_predicts_the_preprocessing_of_the_loaded_model(
    tmp_path: Path, image_size: int, resize_mode: str
) -> None:
    folder = build_tiny_model(tmp_path / "model", image_size=image_size, resize_mode=resize_mode)
    settings = ModelSettings(name=f"local-dir:{folder}")
    info = describe_model(settings)
    assert info.preprocess is not None
    assert info.preprocess.size == (image_size, image_size)
    assert info.preprocess == load_embedder(settings, info).preprocess


def test_a_config_without_an_image_size_predicts_nothing(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "model")
    path = folder / "open_clip_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    del config["model_cfg"]["vision_cfg"]["image_size"]
    path.write_text(json.dumps(config), encoding="utf-8")
    info = describe_model(ModelSettings(name=f"local-dir:{folder}"))
    assert info.preprocess is None
    assert info.dim == config["model_cfg"]["embed_dim"]
