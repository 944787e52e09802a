"""Turn what a caller has (a path, bytes, a PIL image, a numpy array) into encoded image bytes;
an ImageUrl is passed on for the server to fetch."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


@dataclass(frozen=True)
class ImageUrl:
    """An http(s) URL for the server to fetch, where the server allows it (`model_info().limits.image_urls`).
    A plain str is always a local path: the client never guesses."""

    url: str


ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "PILImage", NDArray[Any], ImageUrl]


def to_bytes(image: ImageInput) -> bytes:
    """Encoded bytes for one image. Files and bytes are sent as they are (the server decodes them);
    PIL images and arrays are encoded losslessly as PNG, which needs Pillow."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as handle:
            return handle.read()
    if isinstance(image, np.ndarray):
        return _encode_png(_array_to_pil(image))
    if isinstance(image, ImageUrl):
        raise TypeError("an ImageUrl is fetched by the server; it has no bytes here")
    if _is_pil_image(image):
        return _encode_png(image)
    raise TypeError(f"cannot send a {type(image).__name__} as an image: pass a path, bytes, a PIL image or an array")


def _is_pil_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(value, Image.Image)


def _array_to_pil(array: NDArray[Any]) -> PILImage:
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("sending numpy arrays needs Pillow: pip install 'clip-serve-client[pillow]'") from error
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.min() >= 0.0 and array.max() <= 1.0:
            array = np.round(array * 255)
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be HxW, HxWx3 or HxWx4, not {array.shape}")
    return Image.fromarray(array)


def _encode_png(image: PILImage) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
