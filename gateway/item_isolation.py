"""One bad image must not fail its neighbours.

Triton answers a whole request or fails it, and our preprocessing names the first bad image as
IMAGE[i]. So a batch is sent whole (the common, fast case: one Triton call, texts encoded once);
when Triton names a bad image, that image gets its own error and the rest is sent again. A batch
with k bad images costs k + 1 calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import grpc
from google.rpc import status_pb2
from tritonclient.utils import InferenceServerException

from gateway.errors import item_status, triton_item_error

T = TypeVar("T")
Item = TypeVar("Item")


@dataclass
class IsolatedResult(Generic[T]):
    value: T | None  # the result for the images in `kept`, in that order; None if none was kept
    kept: list[int]  # request indices of the images the result covers
    failed: dict[int, str] = field(default_factory=dict)  # request index -> why that image failed

    def per_image(
        self, count: int, on_ok: Callable[[T, int], Item], on_error: Callable[[status_pb2.Status], Item]
    ) -> list[Item]:
        """One response item per request image, in request order: `on_ok(result, row)` for the
        images Triton answered, `on_error(status)` for the ones it refused."""
        items = []
        for index in range(count):
            if index in self.failed:
                items.append(on_error(item_status(grpc.StatusCode.INVALID_ARGUMENT, self.failed[index])))
            else:
                assert self.value is not None
                items.append(on_ok(self.value, self.kept.index(index)))
        return items


async def isolate_bad_images(
    images: Sequence[bytes], run: Callable[[list[bytes]], Awaitable[T]], failed: Mapping[int, str] | None = None
) -> IsolatedResult[T]:
    """`failed`: images already known to be bad (an image URL that gave nothing), not sent."""
    failed = dict(failed or {})
    kept = [index for index in range(len(images)) if index not in failed]
    while kept:
        try:
            return IsolatedResult(await run([images[i] for i in kept]), kept, failed)
        except InferenceServerException as error:
            item = triton_item_error(error)
            if item is None or item.tensor != "IMAGE" or item.index >= len(kept):
                raise
            failed[kept.pop(item.index)] = item.message
    return IsolatedResult(None, kept, failed)
