"""images.prepare: what prepare_file hands the pool: its hash, pickling, thumbnail reuse."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from memesearch.images.decode import FileVanishedError, hash_file, read_file
from memesearch.images.prepare import PreparedImage, prepare_file
from memesearch.images.thumbnails import ThumbnailSpec
from tests.images.helpers import LIMITS, RED, SPEC, noise, save


def test_prepared_image_hash_is_the_file_hash(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", Image.new("RGB", (10, 10), RED))
    assert prepare_file(path, SPEC, LIMITS).content_hash == hash_file(path)
    assert read_file(path, LIMITS) == path.read_bytes()


def test_results_and_functions_pickle(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", Image.new("RGB", (8, 8), RED))
    prepared = prepare_file(path, SPEC, LIMITS)
    clone = pickle.loads(pickle.dumps(prepared))
    assert isinstance(clone, PreparedImage) and clone.content_hash == prepared.content_hash
    np.testing.assert_array_equal(clone.pixels, prepared.pixels)
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    with_thumbnail = prepare_file(path, SPEC, LIMITS, thumbs)
    assert pickle.loads(pickle.dumps(with_thumbnail)).thumbnail == with_thumbnail.thumbnail
    for value in (SPEC, LIMITS, thumbs, prepare_file, hash_file, FileVanishedError("x")):
        assert pickle.loads(pickle.dumps(value)) is not None


def test_existing_thumbnail_is_reused_not_rewritten(tmp_path: Path) -> None:
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    first = prepare_file(save(tmp_path / "a.png", noise(700, 500)), SPEC, LIMITS, thumbs)
    target = thumbs.path_for(first.content_hash)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    copy = tmp_path / "renamed.png"
    copy.write_bytes((tmp_path / "a.png").read_bytes())
    again = prepare_file(copy, SPEC, LIMITS, thumbs)
    assert (again.thumbnail, again.thumbnail_error) == ("webp", None)
    assert target.stat().st_mtime_ns == 1_000_000_000
    np.testing.assert_array_equal(again.pixels, first.pixels)
