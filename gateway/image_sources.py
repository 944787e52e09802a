"""Turn request images (bytes or URLs) into encoded bytes, before anything reaches Triton.

Bytes are checked for size at once; a request with a URL where fetching is off is refused as a
whole (the caller must change the request). URLs are fetched concurrently; one that gives no
usable image becomes that image's own error, like an undecodable image, and its neighbours go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from gateway import metrics, validation
from gateway.byte_budget import ByteBudget, InFlightBytes, InFlightFull
from gateway.calls import Field, ImageInput
from gateway.config import Limits
from gateway.errors import RequestError, Violation
from gateway.url_policy import ImageUrlError, UrlRefused

if TYPE_CHECKING:
    from gateway.image_fetcher import ImageFetcher

URLS_OFF = "this server does not fetch image URLs (its operator can turn on --image-urls); send the image bytes"


@dataclass(frozen=True)
class GatheredImages:
    data: list[bytes]  # one entry per request image; empty for those not fetched (yet)
    pixels: list[int]  # what each image's header declares; 0 where not known (yet)
    urls: dict[int, str] = field(default_factory=dict)  # index -> URL still to fetch
    failed: dict[int, str] = field(default_factory=dict)  # index -> why that image has no bytes


class ImageSources:
    def __init__(self, fetcher: ImageFetcher | None, in_flight: InFlightBytes | None = None) -> None:
        self.fetcher = fetcher  # None: URLs are refused
        self.in_flight = in_flight  # the gateway's bytes in flight, which URL bodies are drawn from too

    async def check(
        self, images: Sequence[ImageInput], limits: Limits, *, required: bool, field_name: str = "images"
    ) -> GatheredImages:
        """The request's images, checked without fetching anything; RequestError if the request
        must change (too many, too large, URLs where fetching is off)."""
        urls = {index: image.url for index, image in enumerate(images) if image.url is not None}
        data = [image.data for image in images]
        # Reading headers is parsing untrusted bytes: off the event loop, which serves every other call.
        pixels = await asyncio.to_thread(validation.check_images, data, limits, required=required, field=field_name)
        if urls and self.fetcher is None:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                [Violation(Field(field_name, index, "url"), URLS_OFF) for index in urls],
            )
        return GatheredImages(data, pixels, urls)

    async def fetch(self, images: GatheredImages, limits: Limits, timeout: float) -> GatheredImages:
        """Every image with its bytes: the URLs fetched concurrently, each one that gives no usable
        image in `failed`. The URL bodies share one budget, what --max-request-bytes leaves after
        the request's own bytes; the decoded pixels of all the images together are checked again
        (RequestError past --max-request-pixels)."""
        if not images.urls:
            return images
        budget = ByteBudget(max(0, limits.max_request_bytes - sum(len(data) for data in images.data)), self.in_flight)
        try:
            # A task group: when the request ends (cancelled, deadline) every sibling fetch ends with it.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._fetch(url, limits, timeout, budget)) for url in images.urls.values()]
        except* InFlightFull as full:  # the gateway's, not this image's: the call is refused as busy
            raise full.exceptions[0] from None
        finally:
            budget.release()
        data, pixels, failed = list(images.data), list(images.pixels), dict(images.failed)
        for index, task in zip(images.urls, tasks, strict=True):
            outcome = task.result()
            if isinstance(outcome, str):
                failed[index] = f"image URL: {outcome}"
            else:
                data[index], pixels[index] = outcome
        validation.check_request_pixels(pixels, limits)
        return GatheredImages(data, pixels, {}, failed)

    async def _fetch(self, url: str, limits: Limits, timeout: float, budget: ByteBudget) -> tuple[bytes, int] | str:
        """The image's bytes and declared pixels, or why there are none."""
        assert self.fetcher is not None
        try:
            body = await self.fetcher.fetch(url, limits.max_image_bytes, timeout, budget)
        except InFlightFull:
            raise
        except ImageUrlError as error:
            metrics.IMAGE_FETCHES.labels("refused" if isinstance(error, UrlRefused) else "failed").inc()
            return str(error)
        except Exception as error:  # anything unforeseen is this image's failure, not the call's
            metrics.IMAGE_FETCHES.labels("failed").inc()
            return f"fetching the URL failed: {type(error).__name__}"
        problem, pixels = await asyncio.to_thread(validation.image_size_problem, body, limits)
        metrics.IMAGE_FETCHES.labels("ok" if problem is None else "failed").inc()
        return (body, pixels) if problem is None else f"the fetched image is too large: {problem}"

    async def close(self) -> None:
        if self.fetcher is not None:
            await self.fetcher.close()
