"""Image bytes -> CLIP pixel values, matching transformers' CLIPImageProcessor.

Pure PIL + numpy so it can be unit-tested without Triton. The steps and their order are the
reference's (transformers `PilBackend` + `convert_to_rgb`), plus two documented normalisations
the reference leaves to the caller:

* EXIF orientation is applied first (`ImageOps.exif_transpose`), so a phone photo is seen
  upright;
* 16-bit greyscale is scaled to 8 bits (value >> 8); PIL's own conversion would clip every
  value above 255 to white.

Only the formats in clip_contract.formats.ACCEPTED are decoded; multi-frame GIF/WebP use their
first frame.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from clip_contract import formats

Image.init()  # registers every plugin now; `formats=` below only looks among registered ones
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


INVALID_ARGUMENT, RESOURCE_EXHAUSTED = 3, 8  # google.rpc.Code values, as the gateway passes them on


class ImageError(ValueError):
    """The bytes are not an image we can use; the message says why, `code` whose fault in what way:
    INVALID_ARGUMENT (not a usable image) or RESOURCE_EXHAUSTED (more pixels than the limit)."""

    def __init__(self, message: str, code: int = INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PreprocessConfig:
    """The checkpoint's preprocessing facts and the pixel limit, all from the model's config.pbtxt
    (written by the exporter); no defaults here, so there is one source for each."""

    shortest_edge: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_pixels: int


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode one image, refusing unaccepted formats and oversized frames."""
    if not data:
        raise ImageError("empty image (0 bytes)")
    try:
        # formats= restricts the decoders PIL will even try: no PSD, no FITS, no EPS.
        image = Image.open(io.BytesIO(data), formats=formats.ACCEPTED)
    except Image.DecompressionBombError as error:  # PIL's own cap, far above ours
        raise ImageError(f"image has more pixels than the limit of {max_pixels}: {error}", RESOURCE_EXHAUSTED) from None
    except (OSError, ValueError):  # UnidentifiedImageError is an OSError
        raise ImageError(_unidentified(data)) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        too_many = f"image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
        raise ImageError(too_many, RESOURCE_EXHAUSTED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)
            image.load()
    except Exception as error:  # PIL raises many types on hostile bytes; all mean a bad image
        raise ImageError(f"corrupt or truncated {image.format} image: {error}") from None
    return image


def _unidentified(data: bytes) -> str:
    accepted = ", ".join(formats.ACCEPTED)
    announced = formats.sniff(data)
    if announced in formats.ACCEPTED:
        return f"corrupt or truncated {announced} image ({len(data)} bytes): it cannot be opened"
    if announced is not None:
        return f"{announced} is not an accepted image format; send one of {accepted}"
    return f"not an image in an accepted format ({accepted}): {len(data)} bytes starting {data[:8]!r}"


def to_rgb(image: Image.Image) -> NDArray[Any]:
    """Upright RGB uint8 HxWx3; transparency composited onto white like the reference."""
    # A malformed EXIF block keeps the stored orientation rather than failing the image.
    with contextlib.suppress(OSError, ValueError, SyntaxError):
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8))
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def resized_size(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """(width, height) after the reference's shortest-side resize."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def resize_and_crop(rgb: NDArray[Any], config: PreprocessConfig) -> NDArray[Any]:
    """Shortest side to `shortest_edge` (bicubic), then centre crop to `crop_size`."""
    height, width = rgb.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = config.shortest_edge, int(config.shortest_edge * long / short)
    new_height, new_width = (new_long, new_short) if width <= height else (new_short, new_long)
    resized = np.asarray(Image.fromarray(rgb).resize((new_width, new_height), resample=Image.Resampling.BICUBIC))
    crop = config.crop_size
    top, left = (new_height - crop) // 2, (new_width - crop) // 2
    if top < 0 or left < 0:  # only when crop_size > shortest_edge: pad like the reference
        padded = np.zeros((max(crop, new_height), max(crop, new_width), 3), dtype=resized.dtype)
        pad_top, pad_left = (padded.shape[0] - new_height + 1) // 2, (padded.shape[1] - new_width + 1) // 2
        padded[pad_top : pad_top + new_height, pad_left : pad_left + new_width] = resized
        resized, new_height, new_width = padded, padded.shape[0], padded.shape[1]
        top, left = (new_height - crop) // 2, (new_width - crop) // 2
    return resized[top : top + crop, left : left + crop]


def normalize(rgb: NDArray[Any], config: PreprocessConfig) -> NDArray[Any]:
    """uint8 HxWx3 -> float32 3xHxW, rescaled by 1/255 in float64 as the reference does."""
    scaled = (rgb.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))


def _no_check() -> None:
    return None


def preprocess(data: bytes, config: PreprocessConfig, check: Callable[[], None] = _no_check) -> NDArray[Any]:
    """One encoded image -> float32 [3, crop, crop] pixel values. `check` runs between the stages
    (decode, convert, resize and crop) and may raise to stop there: the call it is for is over."""
    image = decode(data, config.max_pixels)
    check()
    # A 1 x 5000 strip would be upscaled to 224 x 1,120,000 before the crop: refuse such shapes.
    new_width, new_height = resized_size(*image.size, config.shortest_edge)
    if new_width * new_height > config.max_pixels:
        width, height = image.size
        raise ImageError(
            f"aspect ratio too extreme: {width}x{height} would be resized to {new_width}x{new_height}, "
            f"more than the limit of {config.max_pixels} pixels"
        )
    try:
        rgb = to_rgb(image)
    except (OSError, ValueError) as error:
        raise ImageError(f"cannot convert a {image.format} image of mode {image.mode} to RGB: {error}") from None
    check()
    cropped = resize_and_crop(rgb, config)
    check()
    return normalize(cropped, config)
