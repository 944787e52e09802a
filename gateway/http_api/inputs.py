"""HTTP image inputs (URLs, data URIs, uploads) as the service's Image messages, and the service's
field names (texts[3], images[0].data) as the names the HTTP caller used (input[5], image[0])."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from clip_api import clip_service_pb2 as pb
from gateway.errors import RequestError, Violation
from gateway.http_api.errors import HttpError

_DATA_URI = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)", re.DOTALL | re.IGNORECASE)
_SERVICE_FIELD = re.compile(r"^(?P<name>images|texts)\[(?P<index>\d+)\](?:\.(?:data|url))?")


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


def image_from_string(value: str, field: str) -> pb.Image:
    """A data URI becomes the image's bytes; anything else is a URL for the fetcher (which refuses
    what its policy does not allow, and everything where fetching is off)."""
    if value[:5].lower() != "data:":
        return pb.Image(url=value)
    match = _DATA_URI.fullmatch(value)
    if match is None or ";base64" not in match["params"].lower():
        raise HttpError(400, f"{field}: a data URI must be base64-encoded: data:image/png;base64,...", param=field)
    if match["mime"] and not match["mime"].lower().startswith("image/"):
        raise HttpError(400, f"{field}: the data URI holds {match['mime']}, not an image", param=field)
    try:
        return pb.Image(data=base64.b64decode(match["payload"], validate=True))
    except binascii.Error:
        raise HttpError(400, f"{field}: the data URI's base64 payload does not decode", param=field) from None


def renamed(error: RequestError, rename: Callable[[str], str]) -> RequestError:
    """The same error with every field in the caller's vocabulary."""
    violations = [Violation(rename(v.field), v.description) for v in error.violations]
    return RequestError(error.code, violations)


def embeddings_field(order: list[tuple[str, int]]) -> Callable[[str], str]:
    """texts[j] / images[j] of the EmbedRequest -> input[i] of the HTTP request."""
    position = {(kind, index): input_index for input_index, (kind, index) in enumerate(order)}

    def rename(field: str) -> str:
        match = _SERVICE_FIELD.match(field)
        if match is None:
            return "input"
        kind = "text" if match["name"] == "texts" else "image"
        return f"input[{position.get((kind, int(match['index'])), int(match['index']))}]"

    return rename


def classification_field(field: str) -> str:
    match = _SERVICE_FIELD.match(field)
    if match is not None and match["name"] == "images":
        return f"image[{match['index']}]"
    return field.replace("prompt_templates", "templates").replace("images", "image")
