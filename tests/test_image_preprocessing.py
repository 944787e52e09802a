"""Preprocessing parity with transformers' CLIPImageProcessor, without Triton in the way.

Tolerance: max abs diff <= 1e-5 on normalised pixel values. Both sides resize with the same PIL
bicubic filter on the same uint8 pixels, so the only differences are float32 rounding in
rescale/normalise (observed: 0 to ~5e-7).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from export.repository import Settings
from tests.support import images
from tests.support.reference import Reference
from tests.support.triton import load_model_module

preprocessing = load_model_module("clip_preprocess_image", "image_preprocessing")
# ViT-B/16's facts (what the exporter writes into config.pbtxt) and the exporter's default pixel limit.
CONFIG = preprocessing.PreprocessConfig(
    shortest_edge=224,
    crop_size=224,
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
    max_pixels=Settings().max_image_pixels,
)
TOLERANCE = 1e-5


def reference_pixels(reference: Reference, image: Image.Image) -> np.ndarray:
    return reference.pixel_values([image])[0]


@pytest.mark.parametrize("name", list(images.photos()))
def test_photographs_of_every_shape_match_the_reference(name: str, tiny_reference: Reference) -> None:
    data = images.encode(Image.fromarray(images.photos()[name]), "PNG")
    ours = preprocessing.preprocess(data, CONFIG)
    expected = reference_pixels(tiny_reference, Reference.open_image(data))
    assert ours.shape == expected.shape == (3, 224, 224)
    assert np.abs(ours - expected).max() <= TOLERANCE


@pytest.mark.parametrize("variant", list(images.mode_variants(images.photos()["chelsea_451x300"])))
def test_every_pixel_mode_and_format_matches_the_reference(variant: str, tiny_reference: Reference) -> None:
    data = images.mode_variants(images.photos()["chelsea_451x300"])[variant]
    ours = preprocessing.preprocess(data, CONFIG)
    opened = Reference.open_image(data)
    if variant == "grey16_png":
        # Documented normalisation: 16-bit grey is scaled to 8 bits. PIL's own conversion (what the
        # reference does with this image) clips every value above 255 to white.
        clipped = reference_pixels(tiny_reference, opened)
        white = clipped.max(axis=(1, 2), keepdims=True)
        assert np.isclose(clipped, white).mean() > 0.9, "the reference is expected to see a mostly white image"
        opened = Image.fromarray((np.asarray(opened, dtype=np.uint32) >> 8).astype(np.uint8))
    expected = reference_pixels(tiny_reference, opened)
    assert np.abs(ours - expected).max() <= TOLERANCE


@pytest.mark.parametrize("variant", ["rgba_png", "la_png", "p_transparent_png", "rgba_webp"])
def test_transparency_matches_the_reference_bit_for_bit(variant: str, tiny_reference: Reference) -> None:
    """Alpha (a gradient from transparent to opaque) and a transparent palette entry composited onto
    white exactly as the reference's convert_to_rgb does: not within a tolerance, equal."""
    data = images.mode_variants(images.photos()["chelsea_451x300"])[variant]
    ours = preprocessing.preprocess(data, CONFIG)
    assert np.array_equal(ours, reference_pixels(tiny_reference, Reference.open_image(data)))
    # and the RGB pixels themselves, before resizing: the composite is where rounding could differ
    composited = preprocessing.to_rgb(preprocessing.decode(data, CONFIG.max_pixels))
    from transformers.image_transforms import convert_to_rgb

    expected = convert_to_rgb(Reference.open_image(data), return_numpy=True)
    assert np.array_equal(composited, np.asarray(expected))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_before_resizing(orientation: int, tiny_reference: Reference) -> None:
    photo = images.photos()["coffee_600x400"]
    data = images.jpeg_with_orientation(photo, orientation)
    upright = Reference.open_image(data)
    if orientation >= 5:  # orientations 5-8 swap width and height
        assert upright.size == (400, 600)
    ours = preprocessing.preprocess(data, CONFIG)
    assert np.abs(ours - reference_pixels(tiny_reference, upright)).max() <= TOLERANCE


def test_animated_gif_uses_its_first_frame(tiny_reference: Reference) -> None:
    data = images.animated_gif()
    first = Image.open(io.BytesIO(data))
    assert getattr(first, "n_frames", 1) > 1
    first.seek(0)
    expected = reference_pixels(tiny_reference, first.copy())
    assert np.abs(preprocessing.preprocess(data, CONFIG) - expected).max() <= TOLERANCE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty image"),
        (b"this is not an image at all", "not an image in an accepted format"),
        (images.encode(Image.new("RGB", (64, 64)), "PNG")[:60], "corrupt or truncated PNG"),
        (images.encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "corrupt or truncated JPEG"),
        (images.encode(Image.new("RGB", (64, 64)), "TIFF"), "TIFF is not an accepted image format"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "PDF is not an accepted image format"),
        (b"8BPS\x00\x01" + bytes(40), "PSD is not an accepted image format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG is not an accepted image format"),
    ],
)
def test_bad_bytes_raise_an_error_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(preprocessing.ImageError, match=message):
        preprocessing.preprocess(data, CONFIG)


def test_images_over_the_pixel_limit_are_refused_before_decoding() -> None:
    data = images.encode(Image.new("L", (5000, 5000)), "PNG")  # 25 MP of zeros: a tiny file
    small = dataclasses.replace(CONFIG, max_pixels=10_000_000)
    with pytest.raises(preprocessing.ImageError, match="5000x5000 = 25000000 pixels, more than the limit"):
        preprocessing.preprocess(data, small)
