"""One bad image never fails its neighbours, and costs nothing more than its own decode.

Triton's preprocessing answers every image: the usable ones become rows of the result (in request
order), the others come back as data, a google.rpc code and a message per image
(IMAGE_ERROR_CODES, IMAGE_ERROR_MESSAGES). This module sends a request's images once and turns
those entries into per-item statuses; images already known to have no bytes (an image URL that
gave nothing) are not sent at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
from google.rpc import status_pb2

from gateway.errors import item_status
from gateway.triton_adapter import ImageOutcomes

T = TypeVar("T")
Item = TypeVar("Item")


@dataclass
class PerImage(Generic[T]):
    value: T | None  # the result for the usable images; None when none was sent
    rows: dict[int, int]  # request index -> its row in `value`
    errors: dict[int, status_pb2.Status]  # request index -> why it has no result

    def items(
        self, count: int, on_ok: Callable[[T, int], Item], on_error: Callable[[status_pb2.Status], Item]
    ) -> list[Item]:
        """One response item per request image, in request order."""
        items = []
        for index in range(count):
            if index in self.errors:
                items.append(on_error(self.errors[index]))
            else:
                assert self.value is not None
                items.append(on_ok(self.value, self.rows[index]))
        return items


async def send_usable_images(
    images: Sequence[bytes],
    run: Callable[[list[bytes]], Awaitable[tuple[T, ImageOutcomes]]],
    failed: Mapping[int, str] | None = None,
) -> PerImage[T]:
    """Send the images that have bytes in one call; `failed`: images already known to be bad."""
    errors = {
        index: item_status(grpc.StatusCode.INVALID_ARGUMENT, message) for index, message in (failed or {}).items()
    }
    sent = [index for index in range(len(images)) if index not in errors]
    if not sent:
        return PerImage(None, {}, errors)
    value, outcomes = await run([images[index] for index in sent])
    rows: dict[int, int] = {}
    for index, code, message in zip(sent, outcomes.codes, outcomes.messages, strict=True):
        if int(code) == 0:
            rows[index] = len(rows)
        else:
            text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
            errors[index] = status_pb2.Status(code=int(code), message=text)
    return PerImage(value, rows, errors)
