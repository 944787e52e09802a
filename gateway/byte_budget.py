"""A number of bytes that several readers draw from together: one request's image URLs share what
`--max-request-bytes` leaves after the request's own bytes, so 32 URLs cannot hold 32 times the
per-image limit in memory."""

from __future__ import annotations


class BudgetExceeded(Exception):
    pass


class ByteBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def take(self, amount: int) -> None:
        """Draw `amount` bytes, or raise BudgetExceeded (drawing nothing) when fewer are left."""
        if amount > self.left:
            raise BudgetExceeded(
                f"the request's images together are more than the limit of {self.total} bytes for "
                "image URL bodies (--max-request-bytes, less the request's own size)"
            )
        self.left -= amount
