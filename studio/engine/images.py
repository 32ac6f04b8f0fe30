"""Read and check user images: anything PIL opens becomes a clean RGB image, or an InputError.

Guards: unreadable or truncated files, decompression bombs (pixel count checked from the
header before decoding), images too small for any patch grid; alpha is composited on white
and 16-bit or float images are rescaled to 8 bits rather than clipped.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from studio.engine.errors import InputError

MAX_PIXELS = 40_000_000
MIN_SIDE = 8
ImageLike = str | Path | bytes | Image.Image | np.ndarray


def load_image(source: ImageLike, name: str | None = None) -> Image.Image:
    """A checked RGB copy of ``source`` (path, bytes, PIL image or HxW[xC] uint8 array); messages
    call it ``name`` when given (e.g. an upload's own file name rather than the server's copy)."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        image = _open(source, name)
    _check_size(image)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"the image could not be decoded ({err}); is the file truncated?") from None
    return to_rgb(image)


def _open(source: str | Path | bytes, label: str | None = None) -> Image.Image:
    name = f"'{label}'" if label else "the uploaded data" if isinstance(source, bytes) else f"'{source}'"
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise InputError(f"no image file at {name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream)
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image PIL can read (PNG, JPEG, WebP, GIF, BMP, TIFF ...)") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name} has too many pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels") from None
    except OSError as err:
        raise InputError(f"{name} could not be read as an image ({err})") from None


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InputError(f"an image array must be HxW, HxWx3 or HxWx4; got shape {array.shape}")
    if array.dtype != np.uint8:
        array = _rescale(array.astype(np.float64))
    return Image.fromarray(array.squeeze(2) if array.ndim == 3 and array.shape[2] == 1 else array)


def _rescale(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.nan_to_num((values - lo) * scale).round().clip(0, 255).astype(np.uint8)


def _check_size(image: Image.Image) -> None:
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise InputError(f"the image is {w}x{h} ({w * h / 1e6:.0f} megapixels); the limit is "
                         f"{MAX_PIXELS // 1_000_000} megapixels: downscale it first")
    if min(w, h) < MIN_SIDE:
        raise InputError(f"the image is {w}x{h} pixels; each side must be at least {MIN_SIDE}")


def pixel_digest(image: Image.Image) -> str:
    """A hash of an image's pixels and size: equal for pixel-identical images, whatever the file."""
    return hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with alpha composited on white; 16-bit and float modes rescaled to 8 bits."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = Image.fromarray(_rescale(np.asarray(image, dtype=np.float64)))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")
