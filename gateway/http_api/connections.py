"""Limits on HTTP connections that uvicorn's h11 protocol lacks, set per listener:

- headers in time: a connection must finish a request's headers within `header_timeout` seconds
  of opening, or of its previous response; a trickle of header bytes does not keep it open (h11
  only times out idle keep-alive connections, and any byte restarts that wait);
- a cap on open connections: past `max_connections` a new connection is answered 503 and closed at
  once, so idle or trickling connections cannot take every descriptor the process has.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway import metrics

_REFUSAL_BODY = b'{"error":{"message":"too many open connections","type":"service_unavailable_error","code":null}}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


class LimitedH11Protocol(H11Protocol):
    header_timeout = 10.0
    max_connections = 1000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            metrics.HTTP_CONNECTIONS_REFUSED.labels("too_many").inc()
            transport.write(REFUSAL)
            transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:  # no request in progress: headers never came
            metrics.HTTP_CONNECTIONS_REFUSED.labels("headers_timeout").inc()
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a request's headers are in: its body has the Guard's own timeouts

    def on_response_complete(self) -> None:
        self._arm()  # before: a pipelined request that follows disarms it again
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(header_timeout: float, max_connections: int) -> type[Any]:
    """The protocol class for one listener's limits."""
    return type(
        "LimitedH11Protocol",
        (LimitedH11Protocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )
