"""images.thumbnails: ThumbnailSpec, and the thumbnails prepare_file writes beside the pixels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from memesearch.images import thumbnails
from memesearch.images.decode import PreprocessSpec, load_image, open_image
from memesearch.images.prepare import PreparedImage, prepare_bytes, prepare_file
from memesearch.images.thumbnails import ThumbnailSpec, thumbnail_supported_formats
from tests.images.helpers import (
    BLACK,
    BLUE,
    GREEN,
    LIMITS,
    RED,
    SPEC,
    WHITE,
    colours,
    encode,
    near,
    noise,
    oriented,
    save,
)


def thumbnail_of(thumbs: ThumbnailSpec, prepared: PreparedImage) -> Image.Image:
    """The thumbnail written for `prepared`, fully loaded."""
    assert prepared.thumbnail == thumbs.extension and prepared.thumbnail_error is None
    with Image.open(thumbs.path_for(prepared.content_hash)) as image:
        image.load()
        return image


def files_under(folder: Path) -> list[str]:
    """Every file below `folder`, relative and sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- ThumbnailSpec -----------------------------------------------------------------------------


def test_thumbnail_spec_paths() -> None:
    thumbs = ThumbnailSpec(Path("/cache"))
    digest = "ab" + "0" * 62
    assert (thumbs.width, thumbs.format, thumbs.quality, thumbs.extension) == (
        512,
        "WEBP",
        80,
        "webp",
    )
    assert thumbs.path_for(digest) == Path("/cache/ab") / f"{digest}.webp"
    for bad in ("", "a", "../" + "0" * 62, "AB" + "0" * 62, "ab/cd", digest + "\n"):
        with pytest.raises(ValueError, match="not a content hash"):
            thumbs.path_for(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be a positive integer"),
        ({"width": 512.0}, "width must be a positive integer"),
        ({"quality": 101}, "quality must be an integer 0-100"),
        ({"format": "PNG"}, "format must be one of"),
        ({"format": "webp"}, "format must be one of"),
    ],
)
def test_thumbnail_spec_rejects_invalid_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ThumbnailSpec(Path("/cache"), **kwargs)


def test_thumbnail_spec_refuses_a_format_this_pillow_cannot_encode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "WEBP" in thumbnail_supported_formats()
    monkeypatch.setattr(thumbnails, "thumbnail_supported_formats", lambda: ("WEBP",))
    with pytest.raises(
        ValueError, match="^this Pillow build cannot encode AVIF thumbnails; it can"
    ):
        ThumbnailSpec(Path("/cache"), format="AVIF")


# --- writing thumbnails ------------------------------------------------------------------------


def test_thumbnail_keeps_the_aspect_ratio_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    path = save(tmp_path / "wide.png", noise(1000, 600))
    prepared = prepare_file(path, SPEC, LIMITS, thumbs)
    thumbnail = thumbnail_of(thumbs, prepared)
    assert (thumbnail.format, thumbnail.size, thumbnail.mode) == ("WEBP", (512, 307), "RGB")
    assert (prepared.width, prepared.height, prepared.pixels.shape) == (1000, 600, (32, 32, 3))
    digest = prepared.content_hash
    assert files_under(thumbs.folder) == [f"{digest[:2]}/{digest}.webp"]


def test_thumbnail_never_upscales(tmp_path: Path) -> None:
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    prepared = prepare_file(save(tmp_path / "small.png", noise(100, 50)), SPEC, LIMITS, thumbs)
    assert thumbnail_of(thumbs, prepared).size == (100, 50)


@pytest.mark.parametrize(
    ("mode", "fmt"), [("RGBA", "PNG"), ("LA", "PNG"), ("P", "GIF"), ("RGBA", "WEBP")]
)
def test_thumbnail_keeps_transparency(tmp_path: Path, mode: str, fmt: str) -> None:
    image = Image.new("RGBA", (600, 400), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 300, 400))
    source = image.convert(mode) if mode != "P" else image.convert("P")
    params: dict[str, Any] = {"transparency": source.getpixel((0, 0))} if mode == "P" else {}
    if fmt == "WEBP":
        params["lossless"] = True
    path = save(tmp_path / f"alpha.{fmt.lower()}", source, **params)
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    prepared = prepare_file(path, SPEC, LIMITS, thumbs)
    thumbnail = thumbnail_of(thumbs, prepared)
    assert thumbnail.mode == "RGBA" and thumbnail.size == (512, 341)
    alpha = np.asarray(thumbnail)[:, :, 3]
    assert alpha[:, :250].max() == 0 and alpha[:, 262:].min() == 255
    # The model still sees transparency as white.
    assert near(prepared.pixels[16, 2], WHITE)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("CMYK", (600, 400), (0, 255, 255, 0)), RED),
        (Image.fromarray(np.full((400, 600), 32896, dtype=np.uint16)), (128, 128, 128)),
        (Image.new("P", (600, 400), 0), (0, 0, 0)),
    ],
    ids=["cmyk-jpeg", "16-bit-png", "palette-png"],
)
def test_thumbnail_converts_odd_modes(
    tmp_path: Path, image: Image.Image, expected: tuple[int, int, int]
) -> None:
    path = save(tmp_path / ("odd.jpg" if image.mode == "CMYK" else "odd.png"), image)
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    thumbnail = thumbnail_of(thumbs, prepare_file(path, SPEC, LIMITS, thumbs))
    centre = np.asarray(thumbnail)[thumbnail.height // 2, thumbnail.width // 2]
    assert thumbnail.mode == "RGB" and near(centre, expected)


@pytest.mark.parametrize(("mode", "kept"), [("RGB", True), ("L", False), ("CMYK", False)])
def test_thumbnail_keeps_only_an_icc_profile_that_still_fits(
    tmp_path: Path, mode: str, kept: bool
) -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = save(tmp_path / "icc.jpg", Image.new(mode, (600, 400)), icc_profile=profile)
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    thumbnail = thumbnail_of(thumbs, prepare_file(path, SPEC, LIMITS, thumbs))
    assert thumbnail.info.get("icc_profile") == (profile if kept else None)


def test_thumbnail_of_an_animation_is_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (600, 400), colour) for colour in (RED, GREEN, BLUE)]
    path = save(tmp_path / "anim.gif", frames[0], save_all=True, append_images=frames[1:])
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    thumbnail = thumbnail_of(thumbs, prepare_file(path, SPEC, LIMITS, thumbs))
    assert getattr(thumbnail, "n_frames", 1) == 1
    assert all(near(np.array(colour), RED) for colour in colours(np.asarray(thumbnail)))


def test_thumbnail_of_an_exif_rotated_photo_is_upright(tmp_path: Path) -> None:
    # Small and a JPEG, but rotated by EXIF: the original is not served, browsers disagree on it.
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    prepared = prepare_bytes(oriented("JPEG", 6), SPEC, LIMITS, thumbs)
    thumbnail = thumbnail_of(thumbs, prepared)
    assert thumbnail.size == (40, 60) == (prepared.width, prepared.height)
    pixels = np.asarray(thumbnail)
    assert near(pixels[3, 36], RED, 40) and near(pixels[56, 3], BLUE, 40)
    assert thumbnail.getexif().get(0x0112) is None


def test_big_jpeg_thumbnail_comes_from_the_models_decode(tmp_path: Path) -> None:
    cells = (np.arange(4000)[None, :] // 16 + np.arange(3000)[:, None] // 16) % 2
    image = Image.fromarray((cells * 255).astype(np.uint8)).convert("RGB")
    data = encode(image, "JPEG", quality=90)
    spec = PreprocessSpec((384, 384))
    assert load_image(open_image(data, LIMITS), spec).size == (1000, 750)  # 1/4, not full size

    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    with_thumbnail = prepare_bytes(data, spec, LIMITS, thumbs)
    # The model sees exactly the same pixels whether or not a thumbnail is made.
    assert np.array_equal(with_thumbnail.pixels, prepare_bytes(data, spec, LIMITS).pixels)
    assert thumbnail_of(thumbs, with_thumbnail).size == (512, 384)
    tiny_model = prepare_bytes(data, SPEC, LIMITS, ThumbnailSpec(tmp_path / "small"))
    assert thumbnail_of(ThumbnailSpec(tmp_path / "small"), tiny_model).size == (500, 375)


def test_small_browser_friendly_original_is_served_as_its_own_thumbnail(tmp_path: Path) -> None:
    image = Image.new("P", (200, 150), 0)
    image.putpalette([*WHITE, *RED, *BLACK])
    image.paste(1, (20, 20, 120, 100))
    image.paste(2, (10, 120, 190, 130))
    path = save(tmp_path / "sticker.png", image)
    assert path.stat().st_size < len(encode(image.convert("RGB"), "WEBP", quality=80))
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    prepared = prepare_file(path, SPEC, LIMITS, thumbs)
    assert (prepared.thumbnail, prepared.thumbnail_error) == (None, None)
    assert not thumbs.folder.exists()


def test_small_original_in_a_format_browsers_lack_gets_a_thumbnail(tmp_path: Path) -> None:
    path = save(tmp_path / "tiny.tif", Image.new("RGB", (8, 8), RED), compression="tiff_lzw")
    thumbs = ThumbnailSpec(tmp_path / "thumbs")
    assert thumbnail_of(thumbs, prepare_file(path, SPEC, LIMITS, thumbs)).size == (8, 8)


@pytest.mark.parametrize("blocked_by", ["file", "permissions"])
def test_unwritable_thumbnail_folder_does_not_fail_the_image(
    tmp_path: Path, blocked_by: str
) -> None:
    folder = tmp_path / "thumbs"
    if blocked_by == "file":
        folder.write_bytes(b"not a folder")
    else:
        folder.mkdir(mode=0o500)
        if os.access(folder, os.W_OK):
            pytest.skip("running with privileges that ignore file permissions")
    path = save(tmp_path / "a.png", noise(600, 400))
    try:
        prepared = prepare_file(path, SPEC, LIMITS, ThumbnailSpec(folder))
    finally:
        folder.chmod(0o700)
    assert prepared.thumbnail is None
    assert prepared.thumbnail_error is not None
    assert prepared.thumbnail_error.startswith(f"cannot write thumbnail {folder}/")
    np.testing.assert_array_equal(prepared.pixels, prepare_file(path, SPEC, LIMITS).pixels)


@pytest.mark.skipif(
    "AVIF" not in thumbnail_supported_formats(), reason="this Pillow cannot encode AVIF"
)
def test_avif_thumbnail(tmp_path: Path) -> None:
    thumbs = ThumbnailSpec(tmp_path / "thumbs", format="AVIF", quality=60)
    assert thumbs.extension == "avif"
    prepared = prepare_file(save(tmp_path / "a.png", noise(600, 400, "RGBA")), SPEC, LIMITS, thumbs)
    thumbnail = thumbnail_of(thumbs, prepared)
    assert (thumbnail.format, thumbnail.size, thumbnail.mode) == ("AVIF", (512, 341), "RGBA")
    assert thumbs.path_for(prepared.content_hash).suffix == ".avif"
