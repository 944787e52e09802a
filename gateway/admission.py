"""Admission: whether a call may start its model work, decided before that work, in one place.

Two checks, in this order, for every call that does model work (Classify, Embed, Similarity and
the HTTP routes that call them; health checks and model info are never refused), both in
`Admission.enter`:

1. one budget of work slots for the whole gateway, shared by gRPC and HTTP: a call holds a slot
   while it runs; when every slot is taken it is refused at once as busy, never queued (a queue
   in front of Triton only turns overload into timeouts). With API keys, one key may hold at most
   its share of the slots (`--key-slot-share`): a key within its rate limit whose calls are slow
   (a slowly served image URL, a large label set) cannot take every slot and lock the others out;
   past its share it is refused like a rate limit (its own quota), not as busy.
2. the caller's key's rate limits (optional): requests and images per second per API key name,
   as token buckets. A call over its key's rate is refused at once with the time after which it
   would fit (gRPC RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo; HTTP 429 with
   Retry-After). Slots first: a call refused as busy has spent none of its key's rate. The key's
   admitted images and texts are counted for metrics.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from gateway import metrics
from gateway.auth import ANONYMOUS, TENANT
from gateway.config import GatewayConfig


class RateLimited(Exception):
    """The caller's key is over one of its quotas; retry after `retry_after` seconds."""

    http_code = "rate_limited"  # the OpenAI-style error code of the HTTP API

    def __init__(self, tenant: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.retry_after = retry_after

    @classmethod
    def over_rate(cls, tenant: str, limit: str, rate: float, retry_after: float) -> RateLimited:
        return cls(
            tenant, f"the API key {tenant!r} is over its limit of {rate:g} {limit} per second; retry later", retry_after
        )


class ShareExceeded(RateLimited):
    """The caller's key already holds its share of the work slots."""

    http_code = "too_many_concurrent_calls"

    def __init__(self, tenant: str, share: int, retry_after: float) -> None:
        super().__init__(
            tenant,
            f"the API key {tenant!r} already has {share} calls in progress, its share of the gateway's work slots; "
            f"retry when one of them ends",
            retry_after,
        )


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
    """Per key name: `requests`, `images` and decoded `megapixels` per second (0 turns a rate off);
    a key may save up `burst_seconds` of its rate, and at least one request of `max_images` images
    and `max_megapixels` megapixels."""

    def __init__(
        self,
        requests: float,
        images: float,
        burst_seconds: float,
        max_images: int,
        megapixels: float = 0.0,
        max_megapixels: float = 0.0,
    ) -> None:
        self.requests, self.images, self.megapixels = requests, images, megapixels
        self.burst_seconds, self.max_images, self.max_megapixels = burst_seconds, max_images, max_megapixels
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def __bool__(self) -> bool:
        return bool(self.requests or self.images or self.megapixels)

    def _bucket(self, tenant: str, limit: str, rate: float, least: float) -> TokenBucket:
        key = (tenant, limit)
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(rate, max(rate * self.burst_seconds, least))
        return self._buckets[key]

    def admit(self, tenant: str, images: int, pixels: int = 0, *, request: bool = True) -> None:
        """Take one request (unless not `request`: more of a call already admitted), `images`
        images and `pixels` decoded pixels from the key's buckets, or raise RateLimited (taking
        nothing) with the wait after which the call would fit."""
        wanted = []
        if self.requests and request:
            wanted.append(("requests", self.requests, 1.0, self._bucket(tenant, "requests", self.requests, 1.0)))
        if self.images and images:
            bucket = self._bucket(tenant, "images", self.images, float(self.max_images))
            wanted.append(("images", self.images, float(images), bucket))
        if self.megapixels and pixels:
            bucket = self._bucket(tenant, "megapixels", self.megapixels, self.max_megapixels)
            wanted.append(("megapixels", self.megapixels, pixels / 1e6, bucket))
        for limit, rate, amount, bucket in wanted:
            wait = bucket.wait_for(amount)
            if wait > 0:
                metrics.RATE_LIMITED.labels(tenant, limit).inc()
                raise RateLimited.over_rate(tenant, limit, rate, math.ceil(wait * 1000) / 1000)
        for _, _, amount, bucket in wanted:
            bucket.take(amount)


class Busy(Exception):
    """Every work slot is taken: the caller should retry after `retry_after` seconds."""

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(f"the gateway is at its limit of {limit} concurrent calls; retry shortly")
        self.retry_after = retry_after


class WorkSlots:
    """`limit` slots in all; a tenant other than ANONYMOUS holds at most `per_tenant` of them."""

    def __init__(self, limit: int, per_tenant: int | None = None, retry_after: float = 1.0) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent_rpcs must be at least 1, not {limit}")
        self.limit = limit
        self.per_tenant = limit if per_tenant is None else per_tenant
        self.retry_after = retry_after
        self.used = 0
        self._by_tenant: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str = ANONYMOUS) -> AsyncIterator[None]:
        """Hold one slot for the body of the `async with`, or raise ShareExceeded (the tenant
        holds its share) or Busy (every slot is taken) at once."""
        held = self._by_tenant.get(tenant, 0)
        if tenant != ANONYMOUS and held >= self.per_tenant:
            metrics.RATE_LIMITED.labels(tenant, "concurrency").inc()
            raise ShareExceeded(tenant, self.per_tenant, self.retry_after)
        if self.used >= self.limit:
            metrics.BUSY_REFUSALS.inc()
            raise Busy(self.limit, self.retry_after)
        self.used += 1
        self._by_tenant[tenant] = held + 1
        metrics.WORK_SLOTS_USED.inc()
        try:
            yield
        finally:
            self.used -= 1
            left = self._by_tenant[tenant] - 1
            if left:
                self._by_tenant[tenant] = left
            else:
                del self._by_tenant[tenant]  # no entry per tenant ever seen: only those with calls running
            metrics.WORK_SLOTS_USED.dec()


class Admission:
    """The gateway's admission: a work slot for the call, then the caller's key's rate limits."""

    def __init__(self, config: GatewayConfig) -> None:
        if not 0 < config.key_slot_share <= 1:
            raise ValueError(f"key_slot_share must be above 0 and at most 1, not {config.key_slot_share}")
        share = max(1, math.floor(round(config.key_slot_share * config.max_concurrent_rpcs, 6)))  # 0.29 x 100 = 29
        self.slots = WorkSlots(config.max_concurrent_rpcs, share)  # one budget for gRPC and HTTP
        self.rate_limits = RateLimits(
            config.rate_limit_requests,
            config.rate_limit_images,
            config.rate_limit_burst_seconds,
            config.limits.max_images or 32,
            config.rate_limit_megapixels,
            config.limits.max_request_pixels / 1e6,
        )

    @contextlib.asynccontextmanager
    async def enter(self, images: int, texts: int, pixels: int = 0) -> AsyncIterator[None]:
        """Hold a work slot for the body of the `async with`, and charge the key's rate limits
        (`pixels`: what the images' headers declare); a call refused a slot (Busy, ShareExceeded)
        spends none of its key's rate, and one over its rate (RateLimited) gives its slot back at
        once."""
        tenant = TENANT.get()
        async with self.slots.slot(tenant):
            if self.rate_limits:
                self.rate_limits.admit(tenant, images, pixels)
            metrics.TENANT_IMAGES.labels(tenant).inc(images)
            metrics.TENANT_TEXTS.labels(tenant).inc(texts)
            yield

    def charge_pixels(self, pixels: int) -> None:
        """Charge the key for pixels learnt after admission (fetched image URLs), before they are
        decoded; RateLimited when over its rate."""
        if self.rate_limits and pixels:
            self.rate_limits.admit(TENANT.get(), 0, pixels, request=False)
