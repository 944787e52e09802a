"""Test images: real photographs that scikit-image ships, encoded in every way a user may send."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

DATA_DIR = Path(skimage.data.__file__).parent


def photos() -> dict[str, np.ndarray]:
    """Real photographs of different sizes and aspect ratios (square, wide, tall, large, grey)."""
    coffee = skimage.data.coffee()
    return {
        "astronaut_512x512": skimage.data.astronaut(),
        "coffee_600x400": coffee,
        "coffee_tall_400x600": np.ascontiguousarray(np.rot90(coffee)),
        "chelsea_451x300": skimage.data.chelsea(),
        "rocket_640x427": skimage.data.rocket(),
        "hubble_1000x872": skimage.data.hubble_deep_field(),
        "camera_grey_512x512": skimage.data.camera(),
        "thin_strip_900x60": skimage.data.astronaut()[200:260, :, :].repeat(2, axis=1)[:, :900],
    }


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@functools.cache
def photo_pngs() -> tuple[bytes, ...]:
    """Five real photographs as PNG (astronaut, coffee, cat, rocket, grey cameraman), encoded once."""
    photos_by_name = photos()
    names = ("astronaut_512x512", "coffee_600x400", "chelsea_451x300", "rocket_640x427", "camera_grey_512x512")
    return tuple(encode(Image.fromarray(photos_by_name[name]), "PNG") for name in names)


def gradient_photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A noisy gradient: photo-like statistics, any size, no file needed."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(np.clip(gradient + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8))


# A small good JPEG (320x240, 15 kB) for requests where the picture does not matter.
SMALL_JPEG = encode(gradient_photo(), "JPEG", quality=90)


def jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose EXIF says how to rotate it upright; the pixels are stored un-rotated."""
    image = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=92, exif=exif.tobytes())


def mode_variants(rgb: np.ndarray) -> dict[str, bytes]:
    """One photo in every pixel mode and container a user may send."""
    image = Image.fromarray(rgb)
    alpha = Image.fromarray(np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None, :].repeat(rgb.shape[0], 0))
    rgba = image.copy()
    rgba.putalpha(alpha)
    la = image.convert("L")
    la.putalpha(alpha)
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = 0
    grey16 = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    return {
        "rgb_png": encode(image, "PNG"),
        "rgb_jpeg": encode(image, "JPEG", quality=90),
        "rgba_png": encode(rgba, "PNG"),
        "la_png": encode(la, "PNG"),
        "l_png": encode(image.convert("L"), "PNG"),
        "p_png": encode(palette, "PNG"),
        "p_transparent_png": encode(palette_transparent, "PNG"),
        "p_gif": encode(palette, "GIF"),
        "cmyk_jpeg": encode(image.convert("CMYK"), "JPEG", quality=90),
        "grey16_png": encode(grey16, "PNG"),
        "rgb_webp_lossless": encode(image, "WEBP", lossless=True),
        "rgba_webp": encode(rgba, "WEBP", quality=90),
        "rgb_bmp": encode(image, "BMP"),
    }


def animated_gif() -> bytes:
    return (DATA_DIR / "no_time_for_that_tiny.gif").read_bytes()
