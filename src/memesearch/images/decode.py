"""Decode images for the model: pure functions for spawn workers, no torch, clean failures."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from typing import Any, Final, TypeAlias, TypeGuard

import numpy as np
import numpy.typing as npt
from blake3 import blake3
from PIL import ExifTags, Image, UnidentifiedImageError

from memesearch.errors import ImageDecodeError

RESIZE_MODES: Final = ("shortest", "longest", "squash")
INTERPOLATIONS: Final = ("bicubic", "bilinear")
# Raster formats we decode (Pillow plugin ids; multi-picture JPEGs come through "JPEG" and are
# reported as "MPO"). An allowlist keeps Image.open away from plugins such as EPS, whose load()
# runs Ghostscript on untrusted input, and from exotic scientific formats.
SUPPORTED_FORMATS: Final = (
    "JPEG",
    "PNG",
    "GIF",
    "WEBP",
    "AVIF",
    "BMP",
    "DIB",
    "TIFF",
    "ICO",
    "PPM",
    "QOI",
    "TGA",
)


_CHUNK: Final = 1024 * 1024
_MIB: Final = 1024 * 1024
_WHITE: Final = (255, 255, 255)
_RESAMPLING: Final = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
WIDE_GREY_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_PREMULTIPLIED: Final = {"La": "LA", "RGBa": "RGBA"}
_ORIENTATION_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_AXES: Final = frozenset({5, 6, 7, 8})
# Above this many times the model input, a keep-ratio resize only resizes the part that survives
# the crop: a 1x100000 strip would otherwise be upscaled to gigapixels before being cropped.
_FULL_RESIZE_MAX_FACTOR: Final = 64
# What Pillow and its C decoders raise for hostile or broken files (Pillow's own fuzzers see all of
# these). Warning covers Pillow's "corrupt EXIF"-style warnings when a caller turns warnings into
# errors. MemoryError is handled separately to give a clearer reason.
PILLOW_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    ArithmeticError,
    IndexError,
    KeyError,
    TypeError,
    NotImplementedError,
    Image.DecompressionBombError,
    Warning,
)
_METADATA_ERRORS: Final[tuple[type[BaseException], ...]] = (*PILLOW_ERRORS, MemoryError)
_BOMB_LIMIT_LOCK = threading.Lock()

Pixels: TypeAlias = npt.NDArray[np.uint8]


class FileVanishedError(ImageDecodeError):
    """The file was deleted or moved between the scan and the decode."""


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """How the model wants its input: open_clip's inference resize, crop/pad and size."""

    size: tuple[int, int]  # (height, width)
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    fill_color: int = 0

    def __post_init__(self) -> None:
        """Reject values open_clip would not accept."""
        size_ok = isinstance(self.size, tuple) and len(self.size) == 2
        if not size_ok or not all(is_positive_int(side) for side in self.size):
            raise ValueError(f"size must be (height, width) positive integers, got {self.size!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        if not is_int(self.fill_color) or not 0 <= self.fill_color <= 255:
            raise ValueError(f"fill_color must be an integer 0-255, got {self.fill_color!r}")

    @classmethod
    def from_open_clip(cls, cfg: Mapping[str, Any]) -> PreprocessSpec:
        """Build from `open_clip.get_model_preprocess_cfg(model)`; missing keys take defaults."""
        interpolation = cfg.get("interpolation") or "bicubic"
        # open_clip's inference transform treats "random" (a training option) as bicubic.
        if interpolation == "random":
            interpolation = "bicubic"
        return cls(
            size=_parse_size(cfg.get("size", 224)),
            resize_mode=cfg.get("resize_mode") or "shortest",
            interpolation=interpolation,
            fill_color=cfg.get("fill_color") or 0,
        )


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Guards against files and images too big to decode safely."""

    max_file_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 100_000_000  # checked from the header, before any decoding

    def __post_init__(self) -> None:
        """Both limits must be positive integers."""
        if not is_positive_int(self.max_file_bytes) or not is_positive_int(self.max_pixels):
            raise ValueError(f"limits must be positive integers, got {self!r}")


def content_hash(data: bytes) -> str:
    """Blake3 hex digest of some bytes."""
    return blake3(data).hexdigest()


def hash_file(path: str | os.PathLike[str]) -> str:
    """Blake3 hex digest of a file, streamed in 1 MiB chunks; OSError propagates unchanged."""
    hasher = blake3()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            hasher.update(view[:count])
    return hasher.hexdigest()


def read_file(path: str | os.PathLike[str], limits: DecodeLimits) -> bytes:
    """The whole file, refusing one over `limits.max_file_bytes` before reading it."""
    try:
        with open(path, "rb") as file:
            check_file_size(os.fstat(file.fileno()).st_size, limits)
            data = file.read(limits.max_file_bytes + 1)
    except FileNotFoundError as exc:
        raise FileVanishedError("file disappeared before it could be read") from exc
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from exc
    if len(data) > limits.max_file_bytes:
        limit = _format_bytes(limits.max_file_bytes)
        raise ImageDecodeError(f"file grew past the {limit} limit while it was being read")
    return data


def open_image(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Identify the image and check its pixel count from the header; frame 0, not decoded yet."""
    if not data:
        raise ImageDecodeError("file is empty")
    with decode_errors("image header is corrupt"), _our_pixel_limit_only():
        try:
            image = Image.open(BytesIO(data), formats=_available_formats())
        except UnidentifiedImageError as exc:
            raise ImageDecodeError("not a recognised image format") from exc
    _check_pixels(image.size, limits)
    return image


def load_image(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Decode frame 0 in place, at a reduced JPEG scale that still covers the model input."""
    with decode_errors("image is truncated or corrupt"):
        if image.format in ("JPEG", "MPO"):
            # A square box of the longest target side keeps both decoded sides at least that
            # long, whatever the resize mode and whatever the EXIF orientation. It depends on
            # the model alone: an image must embed the same as an index entry and as a query.
            side = max(spec.size)
            image.draft("RGB", (side, side))
        image.load()
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB version of a decoded image; transparency is composited onto white."""
    mode = image.mode
    if mode in WIDE_GREY_MODES:
        return _grey_to_rgb(_scale_wide_grey(image))
    if mode == "F":
        return _grey_to_rgb(_scale_float(image))
    with decode_errors(f"cannot convert image mode {mode} to RGB"):
        if image.has_transparency_data:
            return _composite_on_white(image)
        if mode == "RGB":
            return image
        try:
            return image.convert("RGB")
        except ValueError as exc:
            raise ImageDecodeError(f"unsupported image mode {mode}") from exc


def resize_for_model(image: Image.Image, spec: PreprocessSpec) -> Pixels:
    """open_clip's inference resize and crop/pad, as uint8 (height, width, 3)."""
    rgb = to_rgb(image)
    target_h, target_w = spec.size
    if spec.resize_mode == "squash":
        out = rgb.resize((target_w, target_h), _RESAMPLING[spec.interpolation])
    else:
        out = _resize_crop_or_pad(rgb, _keep_ratio_size(rgb.size, spec), spec)
    # A fresh array: writable and C-contiguous, so torch.from_numpy takes it without a warning.
    return np.array(out, dtype=np.uint8)


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation 1-8 of a loaded image; 1 when absent or unreadable."""
    # Read after load(): a PNG may carry its eXIf chunk after the pixel data. Broken metadata
    # should not cost us an otherwise good image, so any parse failure means "upright".
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _METADATA_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """The image as it should be displayed, given its EXIF orientation."""
    # Same table as ImageOps.exif_transpose, which we avoid: it copies even upright images and
    # re-serialises the EXIF block, which has crashed on real phone photos (Pillow #4215, #8605).
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def to_rgba(image: Image.Image) -> Image.Image:
    """RGBA version of an image with transparency."""
    if image.mode in _PREMULTIPLIED:
        # Pillow cannot convert "La" straight to RGBA; undo the premultiplication first.
        image = image.convert(_PREMULTIPLIED[image.mode])
    return image if image.mode == "RGBA" else image.convert("RGBA")


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Flatten any kind of transparency onto a white background."""
    rgba = to_rgba(image)
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, (0, 0), rgba)
    return background


def _scale_wide_grey(image: Image.Image) -> npt.NDArray[np.float32]:
    """16/32-bit greyscale as floats 0-255, by the range the values actually use."""
    values: npt.NDArray[np.integer[Any]] = np.asarray(image)
    # Pillow's own convert() clips these to 255 instead of scaling, which turns a 16-bit
    # photo white; "I" holds 8-bit data surprisingly often, so only scale by 16 bits if needed.
    top = 65535 if image.mode != "I" or int(values.max()) > 255 else 255
    return values.clip(0, top).astype(np.float32) * np.float32(255 / top)


def _scale_float(image: Image.Image) -> npt.NDArray[np.float32]:
    """Float greyscale as floats 0-255: [0, 1] data scaled, anything else min-max normalised."""
    values = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    low, high = float(values[finite].min()), float(values[finite].max())
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    if low >= 0.0 and high <= 1.0:
        return values * np.float32(255)
    if high == low:
        return values.clip(0, 255)
    return (values - np.float32(low)) * np.float32(255 / (high - low))


def _grey_to_rgb(values: npt.NDArray[np.float32]) -> Image.Image:
    """Grey levels 0-255 as an RGB image."""
    grey = np.rint(np.clip(values, 0, 255)).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _keep_ratio_size(size: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    """(width, height) after open_clip's aspect-preserving resize step."""
    width, height = size
    target_h, target_w = spec.size
    if spec.resize_mode == "shortest" and target_h == target_w:
        # torchvision Resize(int): the short side becomes the target, the long side truncates.
        short, long = min(width, height), max(width, height)
        new_short, new_long = target_h, int(target_h * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)
    longest = 1.0 if spec.resize_mode == "longest" else 0.0
    ratio_h, ratio_w = height / target_h, width / target_w
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    # open_clip would hand Pillow a zero side for extreme strips and crash; keep one pixel.
    return max(1, round(width / ratio)), max(1, round(height / ratio))


def _resize_crop_or_pad(
    image: Image.Image, new_size: tuple[int, int], spec: PreprocessSpec
) -> Image.Image:
    """Resize to `new_size`, then center-crop or pad to the model input like torchvision."""
    new_w, new_h = new_size
    target_h, target_w = spec.size
    (left, pad_left), (top, pad_top) = _axis_window(new_w, target_w), _axis_window(new_h, target_h)
    crop_w, crop_h = min(new_w, target_w), min(new_h, target_h)
    # open_clip's non-square "shortest" path builds ResizeKeepRatio without passing the
    # interpolation, so it is always bicubic there.
    square_or_longest = spec.resize_mode == "longest" or target_h == target_w
    resample = _RESAMPLING[spec.interpolation if square_or_longest else "bicubic"]
    if new_w * new_h <= _FULL_RESIZE_MAX_FACTOR * target_w * target_h:
        resized = image.resize(new_size, resample)
        window = resized.crop((left, top, left + crop_w, top + crop_h))
    else:
        # Pillow may order its two passes differently for the smaller output, so this can differ
        # from open_clip by a few grey levels; only extreme strips take this path.
        scale_x, scale_y = image.width / new_w, image.height / new_h
        right = min(image.width, (left + crop_w) * scale_x)
        bottom = min(image.height, (top + crop_h) * scale_y)
        box = (left * scale_x, top * scale_y, right, bottom)
        window = image.resize((crop_w, crop_h), resample, box=box)
    if (crop_w, crop_h) == (target_w, target_h):
        return window
    fill = spec.fill_color if spec.resize_mode == "longest" else 0
    canvas = Image.new("RGB", (target_w, target_h), (fill, fill, fill))
    canvas.paste(window, (pad_left, pad_top))
    return canvas


def _axis_window(length: int, target: int) -> tuple[int, int]:
    """(crop offset, padding before) along one axis, rounded the way torchvision does."""
    if target > length:
        return 0, (target - length) // 2
    return int(round((length - target) / 2.0)), 0


def check_file_size(size: int, limits: DecodeLimits) -> None:
    """Refuse a file larger than the limit."""
    if size > limits.max_file_bytes:
        raise ImageDecodeError(
            f"file is {_format_bytes(size)}, over the {_format_bytes(limits.max_file_bytes)} limit"
        )


def _check_pixels(size: tuple[int, int], limits: DecodeLimits) -> None:
    """Refuse an image whose header promises no pixels or too many."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image is {width}x{height}, which has no pixels")
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} ({_format_pixels(pixels)}), "
            f"over the limit of {_format_pixels(limits.max_pixels)}"
        )


@contextmanager
def decode_errors(reason: str) -> Iterator[None]:
    """Turn whatever Pillow raises for a bad file into ImageDecodeError("<reason>: <detail>")."""
    try:
        yield
    except MemoryError as exc:
        raise ImageDecodeError("not enough memory to decode this image") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image is too large to decode safely: {exc}") from exc
    except PILLOW_ERRORS as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise ImageDecodeError(f"{reason}: {detail[:200]}") from exc


@contextmanager
def _our_pixel_limit_only() -> Iterator[None]:
    """Switch off Pillow's global pixel limit while identifying: `DecodeLimits` is the guard."""
    # Pillow raises its own DecompressionBombError from Image.open (without the image's size)
    # above twice its limit, and warns above it; either would pre-empt our configurable limit.
    # The lock stops two threads from restoring each other's saved value.
    with _BOMB_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@cache
def _available_formats() -> tuple[str, ...]:
    """The supported formats this Pillow build can open; Image.open fails on an unknown id."""
    Image.init()
    return tuple(name for name in SUPPORTED_FORMATS if name in Image.OPEN)


def _parse_size(value: Any) -> tuple[int, int]:
    """open_clip's size (an int or a (height, width) pair) as (height, width)."""
    pair = (value, value) if is_int(value) else value
    if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(map(is_int, pair)):
        raise ValueError(f"size must be an integer or (height, width) integers, got {value!r}")
    return int(pair[0]), int(pair[1])


def is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    """An int (or numpy integer), but not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_positive_int(value: object) -> bool:
    """A positive int, not a bool."""
    return is_int(value) and bool(value > 0)


def _format_bytes(count: int) -> str:
    """A byte count the way a person reads it."""
    if count >= 100 * 1024:
        return f"{count / _MIB:.1f} MB"
    if count >= 1024:
        return f"{count / 1024:.1f} KB"
    return f"{count} bytes"


def _format_pixels(count: int) -> str:
    """A pixel count the way a person reads it."""
    return f"{count / 1e6:.1f} MP" if count >= 100_000 else f"{count} pixels"
