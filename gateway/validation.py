"""Request checks done before anything reaches Triton. Each check gathers every violation it
finds, so a caller fixes a request in one round trip rather than one field at a time."""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence

import grpc
from PIL import Image

from clip_contract import formats
from gateway.calls import Field
from gateway.config import Limits
from gateway.errors import RequestError, Violation

MAX_VIOLATIONS = 20
PLACEHOLDER = "{}"


class Violations:
    """Collects violations; raises them together with the most severe code."""

    def __init__(self) -> None:
        self.items: list[Violation] = []
        self.code = grpc.StatusCode.INVALID_ARGUMENT

    def add(self, field: Field, description: str, *, size: bool = False) -> None:
        if size:
            self.code = grpc.StatusCode.RESOURCE_EXHAUSTED
        if len(self.items) < MAX_VIOLATIONS:
            self.items.append(Violation(field, description))

    def raise_any(self) -> None:
        if self.items:
            raise RequestError(self.code, self.items)


def _declared_pixels(data: bytes) -> int | None:
    """Width x height from the image header without decoding pixels; None if unreadable (Triton
    then decodes it and names the problem)."""
    try:
        # Untrusted bytes meet only the accepted formats' parsers: no PSD, TIFF or EPS plugin runs.
        with Image.open(io.BytesIO(data), formats=formats.ACCEPTED) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return BOMB  # PIL refuses even to open it: a frame declares over twice PIL's own cap
    except Exception:  # any parse failure: not our call to word, Triton's preprocessing will
        return None
    return width * height


BOMB = -1


def check_images(images: Sequence[bytes], limits: Limits, *, required: bool, field: str = "images") -> list[int]:
    """Each image's declared pixels (0 where not known: no bytes yet, or an unreadable header), or
    a RequestError. `limits` must be the limits in force (the repository's filled in, see
    config.effective_limits)."""
    assert limits.max_images is not None and limits.max_image_pixels is not None
    found = Violations()
    if required and not images:
        found.add(Field(field), "at least one image is required")
    if len(images) > limits.max_images:
        found.add(Field(field), f"{len(images)} images, more than the limit of {limits.max_images} per request")
    found.raise_any()
    pixels = []
    for index, data in enumerate(images):
        problem, declared = image_size_problem(data, limits)
        if problem is not None:
            found.add(Field(field, index, "data"), problem, size=True)
        pixels.append(declared)
    found.raise_any()
    check_request_pixels(pixels, limits, field)
    return pixels


def check_request_pixels(pixels: Sequence[int], limits: Limits, field: str = "images") -> None:
    """The request's images together within --max-request-pixels: decoding costs by pixels."""
    total = sum(pixels)
    if total > limits.max_request_pixels:
        found = Violations()
        found.add(
            Field(field),
            f"{total} decoded pixels in all, more than the limit of {limits.max_request_pixels} per request",
            size=True,
        )
        found.raise_any()


def image_size_problem(data: bytes, limits: Limits) -> tuple[str | None, int]:
    """Why an encoded image is too big (bytes, or pixels declared in its header), or None; and the
    pixels its header declares (0 where it cannot be read: Triton then names the problem)."""
    assert limits.max_image_pixels is not None
    if len(data) > limits.max_image_bytes:
        return f"{len(data)} bytes, more than the limit of {limits.max_image_bytes}", 0
    if not data:
        return None, 0
    pixels = _declared_pixels(data)
    if pixels == BOMB:
        return f"declares more pixels than the limit of {limits.max_image_pixels} (decompression bomb)", 0
    if pixels is not None and pixels > limits.max_image_pixels:
        return f"{pixels} pixels, more than the limit of {limits.max_image_pixels}", pixels
    return None, pixels or 0


def _text_problem(text: str, limits: Limits) -> str | None:
    if not text.strip():
        return "empty or only whitespace"
    if len(text) > limits.max_label_chars:
        return f"{len(text)} characters, more than the limit of {limits.max_label_chars}"
    if any(unicodedata.category(char) == "Cc" and char not in "\t\n\r" for char in text):
        return "contains control characters"
    return None


def check_texts(texts: Sequence[str], limits: Limits, *, field: str, maximum: int, required: bool) -> list[str]:
    """Texts stripped of surrounding whitespace, or a RequestError naming every bad one."""
    found = Violations()
    if required and not texts:
        found.add(Field(field), f"at least one entry is required in {field}")
    if len(texts) > maximum:
        found.add(Field(field), f"{len(texts)} entries, more than the limit of {maximum} per request")
    found.raise_any()
    for index, text in enumerate(texts):
        problem = _text_problem(text, limits)
        if problem is not None:
            found.add(Field(field, index), problem)
    found.raise_any()
    return [text.strip() for text in texts]


def check_templates(templates: Sequence[str], label_count: int, limits: Limits, default: str) -> list[str]:
    if not templates:
        return [default]
    found = Violations()
    if len(templates) > limits.max_templates:
        found.add(
            Field("prompt_templates"), f"{len(templates)} templates, more than the limit of {limits.max_templates}"
        )
    for index, template in enumerate(templates):
        problem = _text_problem(template, limits) if template.strip() != PLACEHOLDER else None
        if problem is None and template.count(PLACEHOLDER) != 1:
            problem = 'must contain "{}" exactly once, where the label goes'
        if problem is not None:
            found.add(Field("prompt_templates", index), problem)
    prompts = label_count * len(templates)
    if prompts > limits.max_prompts:
        found.add(
            Field("prompt_templates"),
            f"labels x templates = {prompts} prompts, more than the limit of {limits.max_prompts}",
        )
    found.raise_any()
    return list(templates)


def check_top_k(top_k: int, label_count: int) -> None:
    if top_k > label_count:
        found = Violations()
        found.add(Field("top_k"), f"{top_k} is more than the {label_count} labels sent")
        found.raise_any()
