"""images.decode on real Pillow-made files: modes, EXIF, animation, limits, bad files, open_clip."""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from blake3 import blake3
from PIL import Image

from memesearch.errors import ImageDecodeError
from memesearch.images.decode import (
    DecodeLimits,
    FileVanishedError,
    PreprocessSpec,
    content_hash,
    exif_orientation,
    hash_file,
    load_image,
    open_image,
    resize_for_model,
    to_rgb,
)
from memesearch.images.prepare import prepare_bytes, prepare_file
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
    oriented,
    save,
)


def as_is(width: int, height: int) -> PreprocessSpec:
    """A spec whose squash resize keeps the image's own size, so pixels compare exactly."""
    return PreprocessSpec((height, width), resize_mode="squash")


def decode_error(path: Path, limits: DecodeLimits = LIMITS) -> str:
    """The ImageDecodeError message prepare_file gives for `path`."""
    with pytest.raises(ImageDecodeError) as info:
        prepare_file(path, SPEC, limits)
    return str(info.value)


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG whose IHDR claims `width`x`height`: a decompression bomb's header."""
    data = bytearray(encode(Image.new("1", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- PreprocessSpec / DecodeLimits -------------------------------------------------------------


def test_spec_from_open_clip_with_int_size() -> None:
    cfg = {
        "size": 384,
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "interpolation": "bilinear",
        "resize_mode": "squash",
        "fill_color": 0,
    }
    assert PreprocessSpec.from_open_clip(cfg) == PreprocessSpec((384, 384), "squash", "bilinear")


def test_spec_from_open_clip_with_pair_and_missing_keys() -> None:
    spec = PreprocessSpec.from_open_clip({"size": [256, 320]})
    assert spec == PreprocessSpec((256, 320), "shortest", "bicubic", 0)


def test_spec_from_open_clips_own_defaults() -> None:
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg

    cfg = asdict(PreprocessCfg(size=(224, 256), resize_mode="longest", fill_color=255))
    expected = PreprocessSpec((224, 256), "longest", "bicubic", 255)
    assert PreprocessSpec.from_open_clip(cfg) == expected


def test_spec_random_interpolation_means_bicubic_at_inference() -> None:
    spec = PreprocessSpec.from_open_clip({"size": 224, "interpolation": "random"})
    assert spec.interpolation == "bicubic"


@pytest.mark.parametrize(
    "cfg",
    [
        {"size": 0},
        {"size": (224, 224, 3)},
        {"size": "224"},
        {"size": True},
        {"size": 224.0},
        {"size": 224, "resize_mode": "crop"},
        {"size": 224, "interpolation": "nearest"},
        {"size": 224, "fill_color": 256},
        {"size": 224, "fill_color": (0, 0, 0)},
    ],
)
def test_spec_rejects_invalid_values(cfg: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PreprocessSpec.from_open_clip(cfg)


@pytest.mark.parametrize("size", [224, [224, 224], (224, 0), (224, 224, 3)])
def test_spec_needs_a_height_width_tuple(size: Any) -> None:
    with pytest.raises(ValueError):
        PreprocessSpec(size)


@pytest.mark.parametrize("kwargs", [{"max_file_bytes": 0}, {"max_pixels": -1}])
def test_limits_reject_non_positive_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DecodeLimits(**kwargs)


# --- hashing and reading -----------------------------------------------------------------------


def test_hash_file_streams_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 12345)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert hash_file(path) == content_hash(data) == blake3(data).hexdigest()
    assert hash_file(str(path)) == content_hash(data)


def test_hash_file_lets_file_not_found_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "gone.png")


# --- modes -------------------------------------------------------------------------------------


def test_rgb_png_keeps_exact_pixels_and_reports_what_it_saw(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = save(tmp_path / "rgb.png", Image.fromarray(array))
    prepared = prepare_file(path, as_is(40, 30), LIMITS)
    assert (prepared.width, prepared.height, prepared.format) == (40, 30, "PNG")
    assert prepared.pixels.dtype == np.uint8 and prepared.pixels.shape == (30, 40, 3)
    assert prepared.pixels.flags.c_contiguous and prepared.pixels.flags.writeable
    np.testing.assert_array_equal(prepared.pixels, array)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = save(tmp_path / "cmyk.jpg", Image.new("CMYK", (40, 30), (0, 255, 255, 0)))
    assert Image.open(path).mode == "CMYK"
    prepared = prepare_file(path, SPEC, LIMITS)
    assert prepared.format == "JPEG"
    assert near(prepared.pixels[16, 16], RED)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    array = np.repeat(np.array([[1000, 32896, 65535]], dtype=np.uint16), 4, axis=1).repeat(2, 0)
    path = save(tmp_path / "grey16.png", Image.fromarray(array))
    opened = Image.open(path)
    assert opened.mode == "I;16"
    # What Pillow itself does: clip to 255, so every value above 255 turns white.
    assert set(np.asarray(opened.convert("L")).ravel()) == {255}
    pixels = prepare_file(path, as_is(12, 2), LIMITS).pixels
    assert [int(v) for v in pixels[0, ::4, 0]] == [4, 128, 255]
    assert colours(pixels) == {(4, 4, 4), (128, 128, 128), (255, 255, 255)}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 32896, 65535], [0, 128, 255]),
        ([0, 100, 255], [0, 100, 255]),
        ([-5, 70000, 65535], [0, 255, 255]),
    ],
)
def test_32_bit_integer_tiff(tmp_path: Path, values: list[int], expected: list[int]) -> None:
    image = Image.fromarray(np.array([values], dtype=np.int32))
    path = save(tmp_path / "grey32.tif", image)
    assert Image.open(path).mode == "I"
    pixels = prepare_file(path, as_is(3, 1), LIMITS).pixels
    assert [int(v) for v in pixels[0, :, 1]] == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),
        ([-10.0, 0.0, 10.0], [0, 128, 255]),
        ([3.0, 3.0, 3.0], [3, 3, 3]),
        ([float("nan"), 0.25, float("inf")], [64, 64, 64]),
    ],
)
def test_float_tiff(tmp_path: Path, values: list[float], expected: list[int]) -> None:
    path = save(tmp_path / "float.tif", Image.fromarray(np.array([values], dtype=np.float32)))
    assert Image.open(path).mode == "F"
    pixels = prepare_file(path, as_is(3, 1), LIMITS).pixels
    assert [int(v) for v in pixels[0, :, 2]] == expected


def test_palette_png_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (8, 4), 0)
    image.putpalette([*RED, *BLUE])
    image.paste(1, (0, 0, 4, 4))
    path = save(tmp_path / "pal.png", image, transparency=1)
    opened = Image.open(path)
    assert opened.mode == "P" and "transparency" in opened.info
    pixels = prepare_file(path, as_is(8, 4), LIMITS).pixels
    assert colours(pixels[:, :4]) == {WHITE} and colours(pixels[:, 4:]) == {RED}


def test_palette_without_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([*RED, *BLUE])
    pixels = prepare_file(save(tmp_path / "p.png", image), as_is(4, 4), LIMITS).pixels
    assert colours(pixels) == {BLUE}


def test_la_png_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("LA", (3, 1))
    for x, alpha in enumerate((0, 128, 255)):
        image.putpixel((x, 0), (0, alpha))
    path = save(tmp_path / "la.png", image)
    assert Image.open(path).mode == "LA"
    pixels = prepare_file(path, as_is(3, 1), LIMITS).pixels
    assert [int(v) for v in pixels[0, :, 0]] == [255, 127, 0]


def test_one_bit_png(tmp_path: Path) -> None:
    image = Image.new("1", (8, 2), 0)
    image.paste(1, (4, 0, 8, 2))
    path = save(tmp_path / "bw.png", image)
    assert Image.open(path).mode == "1"
    pixels = prepare_file(path, as_is(8, 2), LIMITS).pixels
    assert colours(pixels[:, :4]) == {BLACK} and colours(pixels[:, 4:]) == {WHITE}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGBA", (2, 2), (255, 0, 0, 0)).convert("RGBa"), WHITE),
        (Image.new("RGBA", (2, 2), (255, 0, 0, 255)).convert("RGBa"), RED),
        (Image.new("LA", (2, 2), (0, 0)).convert("La"), WHITE),
        (Image.new("LA", (2, 2), (0, 255)).convert("La"), BLACK),
        (Image.new("RGBA", (2, 2), (0, 0, 255, 255)).convert("PA"), BLUE),
        (Image.new("RGB", (2, 2), GREEN).convert("YCbCr"), GREEN),
        # Saturated primaries do not survive an 8-bit Lab round trip; a brown does.
        (Image.new("RGB", (2, 2), (200, 100, 50)).convert("LAB"), (200, 100, 50)),
        (Image.new("HSV", (2, 2), (0, 255, 255)), RED),
        (Image.new("RGB", (2, 2), GREEN).convert("RGBX"), GREEN),
        (Image.frombytes("I;16B", (2, 1), struct.pack(">HH", 65535, 65535)), WHITE),
        (Image.frombytes("I;16L", (2, 1), struct.pack("<HH", 0, 0)), BLACK),
    ],
    ids=lambda value: value.mode if isinstance(value, Image.Image) else None,
)
def test_to_rgb_in_memory_modes(image: Image.Image, expected: tuple[int, int, int]) -> None:
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert near(np.asarray(rgb)[0, 0], expected, tolerance=3)


def test_to_rgb_passes_rgb_through() -> None:
    image = Image.new("RGB", (2, 2), RED)
    assert to_rgb(image) is image


def test_rgb_png_with_colour_key_transparency(tmp_path: Path) -> None:
    image = Image.new("RGB", (4, 1), BLACK)
    image.putpixel((3, 0), RED)
    path = save(tmp_path / "key.png", image, transparency=BLACK)
    pixels = prepare_file(path, as_is(4, 1), LIMITS).pixels
    assert colours(pixels[:, :3]) == {WHITE} and colours(pixels[:, 3:]) == {RED}


# --- EXIF orientation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "orientation", "size", "red_at"),
    [
        ("PNG", 1, (60, 40), (3, 3)),
        ("PNG", 3, (60, 40), (36, 56)),
        ("PNG", 6, (40, 60), (3, 36)),
        ("PNG", 8, (40, 60), (56, 3)),
        ("JPEG", 6, (40, 60), (3, 36)),
        ("WEBP", 6, (40, 60), (3, 36)),
    ],
)
def test_exif_orientation(
    fmt: str, orientation: int, size: tuple[int, int], red_at: tuple[int, int]
) -> None:
    prepared = prepare_bytes(oriented(fmt, orientation), as_is(*size), LIMITS)
    assert (prepared.width, prepared.height) == size
    height, width = prepared.pixels.shape[:2]
    assert near(prepared.pixels[red_at], RED, tolerance=40)
    # The opposite corner is still blue.
    assert near(prepared.pixels[height - 1 - red_at[0], width - 1 - red_at[1]], BLUE, tolerance=40)


def test_out_of_range_orientation_is_ignored() -> None:
    prepared = prepare_bytes(oriented("PNG", 9), as_is(60, 40), LIMITS)
    assert (prepared.width, prepared.height) == (60, 40)
    assert near(prepared.pixels[3, 3], RED, tolerance=0)


def test_exif_orientation_of_a_loaded_image() -> None:
    image = open_image(oriented("PNG", 8), LIMITS)
    image.load()
    assert exif_orientation(image) == 8
    assert exif_orientation(Image.new("RGB", (1, 1))) == 1


# --- animation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"), [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})]
)
def test_animated_images_give_the_first_frame(fmt: str, params: dict[str, Any]) -> None:
    frames = [Image.new("RGB", (16, 12), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params
    )
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    prepared = prepare_bytes(data, as_is(16, 12), LIMITS)
    assert prepared.format == fmt
    assert colours(prepared.pixels) == {RED}


def test_gif_frame_with_transparent_background() -> None:
    frame = Image.new("P", (8, 8), 0)
    frame.putpalette([*BLACK, *RED])
    frame.paste(1, (4, 0, 8, 8))
    data = encode(frame, "GIF", transparency=0)
    pixels = prepare_bytes(data, as_is(8, 8), LIMITS).pixels
    assert colours(pixels[:, :4]) == {WHITE} and colours(pixels[:, 4:]) == {RED}


# --- JPEG draft and big images -----------------------------------------------------------------


def test_big_jpeg_decodes_at_reduced_scale_but_reports_original_size(tmp_path: Path) -> None:
    image = Image.new("RGB", (4000, 3000), BLUE)
    image.paste(RED, (0, 0, 2000, 3000))
    path = save(tmp_path / "big.jpg", image, quality=85)
    data = path.read_bytes()

    small = load_image(open_image(data, LIMITS), SPEC)
    assert small.size == (500, 375)  # 1/8 scale: still bigger than the 32x32 model input
    larger = load_image(open_image(data, LIMITS), PreprocessSpec((1024, 1024)))
    assert larger.size == (2000, 1500)  # 1/4 would give a 750 short side: too small for 1024
    assert min(larger.size) >= 1024

    prepared = prepare_file(path, SPEC, LIMITS)
    assert (prepared.width, prepared.height, prepared.format) == (4000, 3000, "JPEG")
    assert prepared.pixels.shape == (32, 32, 3)
    assert near(prepared.pixels[16, 2], RED, 10) and near(prepared.pixels[16, 29], BLUE, 10)


def test_small_jpeg_is_not_reduced() -> None:
    image = load_image(open_image(encode(Image.new("RGB", (40, 30)), "JPEG"), LIMITS), SPEC)
    assert image.size == (40, 30)


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("size", [(1, 1), (20000, 20), (20, 20000)])
def test_tiny_and_extreme_aspect_images_are_valid(
    tmp_path: Path, mode: str, size: tuple[int, int]
) -> None:
    path = save(tmp_path / "odd.png", Image.new("RGB", size, GREEN))
    prepared = prepare_file(path, PreprocessSpec((32, 32), mode, fill_color=7), LIMITS)
    assert (prepared.width, prepared.height) == size
    assert prepared.pixels.shape == (32, 32, 3)
    # "longest" shrinks a strip to one line, padded to sit at row/column (32 - 1) // 2.
    assert near(prepared.pixels[15, 15], GREEN, 0)
    expected = {GREEN, (7, 7, 7)} if mode == "longest" and size != (1, 1) else {GREEN}
    assert colours(prepared.pixels) == expected


def test_hairline_strip_is_not_upscaled_to_gigapixels() -> None:
    # Upscaling 1x100000 to a 224 short side first would mean a 224x22400000 image.
    strip = Image.new("RGB", (1, 100_000), GREEN)
    for mode in ("shortest", "longest", "squash"):
        pixels = resize_for_model(strip, PreprocessSpec((224, 224), mode))
        assert pixels.shape == (224, 224, 3) and near(pixels[111, 111], GREEN, 0)


# --- limits ------------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(20000, 20000))
    assert decode_error(path) == "image is 20000x20000 (400.0 MP), over the limit of 100.0 MP"


def test_pixel_limit_is_ours_not_pillows() -> None:
    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = open_image(png_claiming(20000, 20000), DecodeLimits(max_pixels=10**9))
    assert image.size == (20000, 20000)
    assert Image.MAX_IMAGE_PIXELS == saved


def test_small_pixel_limit() -> None:
    data = encode(Image.new("RGB", (40, 30)), "PNG")
    with pytest.raises(
        ImageDecodeError,
        match=r"^image is 40x30 \(1200 pixels\), over the limit "
        r"of 1000 pixels$",
    ):
        prepare_bytes(data, SPEC, DecodeLimits(max_pixels=1000))
    assert prepare_bytes(data, SPEC, DecodeLimits(max_pixels=1200)).width == 40


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG" + bytes(3000))
    limits = DecodeLimits(max_file_bytes=1024)
    assert decode_error(path, limits) == "file is 2.9 KB, over the 1.0 KB limit"
    with pytest.raises(ImageDecodeError, match="over the 1.0 KB limit"):
        prepare_bytes(path.read_bytes(), SPEC, limits)


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with path.open("wb") as file:
        file.truncate(int(312.5 * 1024 * 1024))  # sparse: costs no disk and is never read
    assert decode_error(path) == "file is 312.5 MB, over the 200.0 MB limit"


# --- broken and unreadable files ---------------------------------------------------------------


def test_truncated_jpeg(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    message = decode_error(path)
    assert message.startswith("image is truncated or corrupt: image file is truncated")


def test_corrupt_png_data(tmp_path: Path) -> None:
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = bytearray(encode(Image.fromarray(noise), "PNG"))
    data[200:260] = bytes(60)
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    assert decode_error(path).startswith("image is truncated or corrupt: ")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jpg", b"", "file is empty"),
        ("notes.png", b"just some text, not a picture\n", "not a recognised image format"),
        (
            "page.jpg",
            b"<!doctype html><html><body>404</body></html>",
            "not a recognised image format",
        ),
        (
            "ghost.png",
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
            "not a recognised image format",
        ),
    ],
)
def test_not_an_image(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert decode_error(path) == message


def test_vanished_file(tmp_path: Path) -> None:
    with pytest.raises(FileVanishedError, match="^file disappeared before it could be read$"):
        prepare_file(tmp_path / "deleted.png", SPEC, LIMITS)
    assert issubclass(FileVanishedError, ImageDecodeError)


def test_unreadable_file(tmp_path: Path) -> None:
    path = save(tmp_path / "secret.png", Image.new("RGB", (4, 4)))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions")
        assert decode_error(path) == "cannot read file: Permission denied"
    finally:
        path.chmod(0o644)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert decode_error(tmp_path) == "cannot read file: Is a directory"


@pytest.mark.parametrize("warnings_as", ["ignore", "error"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_mangled_files_only_ever_raise_image_decode_error(
    fmt: str, warnings_as: Literal["ignore", "error"]
) -> None:
    noise = np.random.default_rng(4).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    original = encode(Image.fromarray(noise), fmt)
    rng = random.Random(fmt)
    for _ in range(40):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.choice([len(data), rng.randrange(1, len(data))])
        try:
            with warnings.catch_warnings():
                # Pillow warns about corrupt TIFF tags; as errors they must still map cleanly.
                warnings.simplefilter(warnings_as)
                prepared = prepare_bytes(bytes(data[:cut]), SPEC, LIMITS)
        except ImageDecodeError as exc:
            assert str(exc)
        else:
            assert prepared.pixels.shape == (32, 32, 3)


# --- equivalence with open_clip ----------------------------------------------------------------


@pytest.fixture(scope="module")
def open_clip_transform() -> Any:
    from open_clip.transform import image_transform

    return image_transform


@pytest.mark.parametrize("mode", ["squash", "shortest", "longest"])
@pytest.mark.parametrize("size", [(24, 24), (24, 40), (40, 24)])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape", [(61, 97), (97, 61)])
def test_matches_open_clip_inference_transform(
    tmp_path: Path,
    open_clip_transform: Any,
    mode: str,
    size: tuple[int, int],
    interpolation: str,
    shape: tuple[int, int],
) -> None:
    noise = np.random.default_rng(5).integers(0, 256, (*shape, 3), dtype=np.uint8)
    path = save(tmp_path / "ref.png", Image.fromarray(noise))
    spec = PreprocessSpec(size, mode, interpolation, fill_color=128 if mode == "longest" else 0)
    transform = open_clip_transform(
        size,
        is_train=False,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        resize_mode=mode,
        interpolation=interpolation,
        fill_color=spec.fill_color,
    )
    expected = transform(Image.open(path).convert("RGB")).numpy()
    ours = prepare_file(path, spec, LIMITS).pixels.transpose(2, 0, 1) / 255.0 * 2.0 - 1.0
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1 / 255


# --- process-pool friendliness -----------------------------------------------------------------


def test_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, memesearch.images.decode; "
        "heavy = {'torch', 'open_clip', 'torchvision'} & set(sys.modules); "
        "sys.exit(', '.join(sorted(heavy)) or None)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
