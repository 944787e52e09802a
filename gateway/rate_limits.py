"""Optional per-key rate limits: requests per second and images per second for each API key name,
as token buckets. A call over its key's rate is refused at once with the time after which it
would fit (gRPC RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo; HTTP 429 with Retry-After):
what a hosted API with keys needs to protect itself and bill fairly."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from gateway import metrics


class RateLimited(Exception):
    """The caller's key is over one of its rates; retry after `retry_after` seconds."""

    def __init__(self, tenant: str, limit: str, rate: float, retry_after: float) -> None:
        super().__init__(f"the API key {tenant!r} is over its limit of {rate:g} {limit} per second; retry later")
        self.tenant = tenant
        self.retry_after = retry_after


@dataclass
class TokenBucket:
    """`rate` tokens per second, up to `capacity` saved up."""

    rate: float
    capacity: float
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.updated = self.capacity, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` tokens are there (0 when they are)."""
        self._refill()
        return 0.0 if self.tokens >= amount else (amount - self.tokens) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.tokens -= amount


class RateLimits:
    """Per key name: `requests` and `images` per second (0 turns a rate off); a key may save up
    `burst_seconds` of its rate, and at least one request of `max_images` images."""

    def __init__(self, requests: float, images: float, burst_seconds: float, max_images: int) -> None:
        self.requests, self.images = requests, images
        self.burst_seconds, self.max_images = burst_seconds, max_images
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def __bool__(self) -> bool:
        return bool(self.requests or self.images)

    def _bucket(self, tenant: str, limit: str, rate: float, least: float) -> TokenBucket:
        key = (tenant, limit)
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(rate, max(rate * self.burst_seconds, least))
        return self._buckets[key]

    def admit(self, tenant: str, images: int) -> None:
        """Take one request and `images` images from the key's buckets, or raise RateLimited
        (taking nothing) with the wait after which the call would fit."""
        wanted = []
        if self.requests:
            wanted.append(("requests", self.requests, 1.0, self._bucket(tenant, "requests", self.requests, 1.0)))
        if self.images and images:
            bucket = self._bucket(tenant, "images", self.images, float(self.max_images))
            wanted.append(("images", self.images, float(images), bucket))
        for limit, rate, amount, bucket in wanted:
            wait = bucket.wait_for(amount)
            if wait > 0:
                metrics.RATE_LIMITED.labels(tenant, limit).inc()
                raise RateLimited(tenant, limit, rate, math.ceil(wait * 1000) / 1000)
        for _, _, amount, bucket in wanted:
            bucket.take(amount)
