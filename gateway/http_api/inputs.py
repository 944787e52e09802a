"""HTTP image inputs (URLs, data URIs, uploads) as the core's ImageInputs, and the core's fields
(Field("texts", 3), Field("images", 0, "data")) as the names the HTTP caller used (input[5],
image[0])."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from gateway.calls import Field, ImageInput
from gateway.http_api.errors import HttpError

_DATA_URI = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)", re.DOTALL | re.IGNORECASE)
# The core's field names that /v1/classifications spells otherwise.
_CLASSIFICATION_NAMES = {"images": "image", "prompt_templates": "templates"}


def texts(values: list[str], field: str) -> list[str]:
    """`values`, refused (400 naming the entry) where one is not valid Unicode: JSON can escape half
    a surrogate pair ("\\ud800"), which a protobuf string (and UTF-8) cannot carry."""
    for index, value in enumerate(values):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            where = f"{field}[{index}]"
            raise HttpError(
                400, f"{where}: not valid Unicode: a lone surrogate at character {error.start}", param=where
            ) from None
    return values


def is_image_data_uri(value: str) -> bool:
    return value[:11].lower() == "data:image/"


def image_from_string(value: str, field: str) -> ImageInput:
    """A data URI becomes the image's bytes; anything else is a URL for the fetcher (which refuses
    what its policy does not allow, and everything where fetching is off)."""
    if value[:5].lower() != "data:":
        return ImageInput(url=value)
    match = _DATA_URI.fullmatch(value)
    if match is None or ";base64" not in match["params"].lower():
        raise HttpError(400, f"{field}: a data URI must be base64-encoded: data:image/png;base64,...", param=field)
    if match["mime"] and not match["mime"].lower().startswith("image/"):
        raise HttpError(400, f"{field}: the data URI holds {match['mime']}, not an image", param=field)
    try:
        return ImageInput(data=base64.b64decode(match["payload"], validate=True))
    except binascii.Error:
        raise HttpError(400, f"{field}: the data URI's base64 payload does not decode", param=field) from None


def embeddings_field(order: list[tuple[str, int]]) -> Callable[[Field], str]:
    """The core's texts[j] / images[j] -> input[i] of the HTTP request; `order` holds, for each
    input in turn, the core's field ("texts" or "images") and its index there."""
    position = {entry: input_index for input_index, entry in enumerate(order)}

    def rename(field: Field) -> str:
        where = position.get((field.name, field.index)) if field.index is not None else None
        return "input" if where is None else f"input[{where}]"

    return rename


def classification_field(field: Field) -> str:
    """The core's field as /v1/classifications names it; an image's data or URL is one HTTP value."""
    name = _CLASSIFICATION_NAMES.get(field.name, field.name)
    return name if field.index is None else f"{name}[{field.index}]"
