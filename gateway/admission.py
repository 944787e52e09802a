"""One budget of work slots for the whole gateway, shared by gRPC and HTTP.

A call that does model work (Classify, Embed, Similarity; the HTTP routes that call them) holds a
slot while it runs. When every slot is taken the call is refused at once as busy, never queued:
a queue in front of Triton only turns overload into timeouts. Health checks and model info take
no slot, so a saturated gateway still reports its health truthfully.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway import metrics


class Busy(Exception):
    """Every work slot is taken: the caller should retry after `retry_after` seconds."""

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(f"the gateway is at its limit of {limit} concurrent calls; retry shortly")
        self.retry_after = retry_after


class WorkSlots:
    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent_rpcs must be at least 1, not {limit}")
        self.limit = limit
        self.retry_after = retry_after
        self.used = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the `async with`, or raise Busy at once."""
        if self.used >= self.limit:
            metrics.BUSY_REFUSALS.inc()
            raise Busy(self.limit, self.retry_after)
        self.used += 1
        metrics.WORK_SLOTS_USED.inc()
        try:
            yield
        finally:
            self.used -= 1
            metrics.WORK_SLOTS_USED.dec()
