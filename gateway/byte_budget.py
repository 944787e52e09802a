"""Numbers of bytes that readers draw from together.

- `InFlightBytes`, one per gateway: the bytes of HTTP bodies being read (multipart spooled to disk
  included), of image URL bodies being fetched and of gRPC messages whose calls are being worked
  on, across every request at once. Past it a request is refused as busy rather than read or
  worked on: 16 slow uploads of 64 MB each once held 1 GB of RSS.
- `ByteBudget`, one per request: its image URLs share what `--max-request-bytes` leaves after the
  request's own bytes, so 32 URLs cannot hold 32 times the per-image limit in memory; each draw is
  also taken from the gateway's `InFlightBytes` where one is given.
"""

from __future__ import annotations

from gateway import metrics


class BudgetExceeded(Exception):
    pass


class InFlightFull(Exception):
    """The gateway holds its limit of bytes in flight: the call is refused as busy (UNAVAILABLE with
    a retry delay, HTTP 429), as when every work slot is taken."""

    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        super().__init__(
            f"the gateway is holding its limit of {limit} bytes of request and image bodies in flight "
            "(--max-inflight-bytes); retry shortly"
        )
        self.retry_after = retry_after


class InFlightBytes:
    """One event loop's count of bytes in flight, against `limit` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, amount: int) -> bool:
        """Hold `amount` more bytes; False (holding nothing) when that would pass the limit."""
        if self.limit and self.held + amount > self.limit:
            metrics.INFLIGHT_BYTES_REFUSED.inc()
            return False
        self.held += amount
        metrics.INFLIGHT_BYTES.set(self.held)
        return True

    def give_back(self, amount: int) -> None:
        self.held -= amount
        metrics.INFLIGHT_BYTES.set(self.held)


class ByteBudget:
    def __init__(self, total: int, in_flight: InFlightBytes | None = None) -> None:
        self.total = total
        self.left = total
        self.in_flight = in_flight

    def take(self, amount: int) -> None:
        """Draw `amount` bytes, or raise BudgetExceeded (drawing nothing) when fewer are left: the
        request's own, or InFlightFull, the gateway's."""
        if amount > self.left:
            raise BudgetExceeded(
                f"the request's images together are more than the limit of {self.total} bytes for "
                "image URL bodies (--max-request-bytes, less the request's own size)"
            )
        if self.in_flight is not None and not self.in_flight.take(amount):
            raise InFlightFull(self.in_flight.limit)
        self.left -= amount

    def release(self) -> None:
        """Give what was drawn back to the gateway's bytes in flight (the fetches are over)."""
        if self.in_flight is not None:
            self.in_flight.give_back(self.total - self.left)
        self.left = self.total
