"""What every HTTP request passes before a route sees it, as one ASGI layer: request id, API key
(whose name becomes the call's tenant), body-size cap (counted while the body streams in, not
trusted from Content-Length alone), body time limits (a client that trickles its body in is cut
off with 408, so it holds a connection, never a work slot, for long), metrics and one access-log
line. The concurrency cap is not here: it is the gateway's one budget of work slots
(gateway.admission), taken by the service call itself and shared with gRPC."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from typing import Any

from starlette.requests import ClientDisconnect

from gateway import metrics
from gateway.auth import ANONYMOUS, TENANT, ApiKeys
from gateway.byte_budget import InFlightBytes, InFlightFull
from gateway.observability import MAX_REQUEST_ID_CHARS, REQUEST_ID

log = logging.getLogger("gateway.http")
CLIENT_CLOSED = 499  # the access log's status for a client that left before its body was in (nginx's)
OPEN_PATHS = frozenset({"/v1/health/live", "/v1/health/ready", "/openapi.json"})
ROUTES = frozenset({"/v1/embeddings", "/v1/classifications", "/v1/models", *OPEN_PATHS})

Scope = dict[str, Any]
Message = dict[str, Any]


def route_label(path: str) -> str:
    """A bounded label for metrics: unknown paths are all "other"."""
    if path in ROUTES:
        return path
    return "/v1/models/{id}" if path.startswith("/v1/models/") else "other"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [str(value.decode("latin-1")) for key, value in scope.get("headers", ()) if key == name]


def tenant_of(keys: ApiKeys, scope: Scope) -> str | None:
    """The name of the key the request's one `Authorization` header carries; None for no key, a
    wrong one, or two headers (refused, as over gRPC: which one counts would be a guess)."""
    values = _headers(scope, b"authorization")
    return keys.tenant(values[0]) if len(values) == 1 else None


def _request_id(scope: Scope) -> str:
    offered = _header(scope, b"x-request-id")
    if offered and len(offered) <= MAX_REQUEST_ID_CHARS and offered.isprintable():
        return offered
    return uuid.uuid4().hex[:16]


async def _send_error(send: Any, status: int, message: str, kind: str, code: str, extra: list[Any]) -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(
        self,
        app: Any,
        *,
        keys: ApiKeys,
        max_body_bytes: int,
        body_read_timeout: float = 10.0,
        body_total_timeout: float = 30.0,
        in_flight: InFlightBytes | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.body_read_timeout = body_read_timeout  # seconds between two pieces of a body
        self.body_total_timeout = body_total_timeout  # seconds for the whole body
        self.in_flight = in_flight  # the gateway's bytes in flight: bodies are held against it until answered

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, route = scope["path"], route_label(scope["path"])
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), id_header]}
            await send(message)

        tenant = ANONYMOUS if not self.keys else tenant_of(self.keys, scope)
        tenant_token = TENANT.set(tenant or ANONYMOUS)
        try:
            if path not in OPEN_PATHS and tenant is None:
                await _send_error(
                    send_with_id,
                    401,
                    "missing or invalid API key: send `Authorization: Bearer <key>`",
                    "authentication_error",
                    "invalid_api_key",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._too_large(send_with_id)
                return
            if await self._capped(scope, receive, send_with_id):
                status = CLIENT_CLOSED
        finally:
            seconds = time.perf_counter() - started
            metrics.HTTP_REQUESTS.labels(route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(route).observe(seconds)
            if tenant is not None and path not in OPEN_PATHS:
                metrics.TENANT_REQUESTS.labels(tenant, route, str(status)).inc()
            log.info(
                "http",
                extra={
                    "method": scope["method"],
                    "path": route,
                    "status": status,
                    "ms": round(seconds * 1000, 1),
                    "tenant": tenant,
                },
            )
            TENANT.reset(tenant_token)
            REQUEST_ID.reset(token)

    async def _capped(self, scope: Scope, receive: Any, send: Any) -> bool:
        """Past the size cap (413) or a body time limit (408), answer ourselves and tell the app the
        client went away (an exception would be turned into a 400 by the framework's body parsing);
        its own answer is dropped. Once the body is in, the connection is watched: a client that
        leaves before its answer has started has its work cancelled (down to Triton), as a gRPC
        call's is. True when the client left before anything was answered: what the framework
        makes of the disconnect, a 500 or a 400, is dropped, and the call is the client's (499)."""
        received = 0
        held = 0  # of the gateway's bytes in flight
        refused = False
        gone = False
        response_started = False
        body_done = False
        body_deadline = time.monotonic() + self.body_total_timeout
        left = asyncio.Event()  # the connection's end (or the response's), seen by the watcher
        watcher: asyncio.Task[None] | None = None

        async def watch(work: asyncio.Task[None]) -> None:
            # After the body, uvicorn's receive answers only once the client left or the response
            # is complete; the watcher alone reads it from then on.
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not response_started:
                gone = True
                work.cancel()
            left.set()

        async def counted_receive() -> Message:
            nonlocal received, held, refused, body_done, gone, watcher
            if refused or gone:
                return {"type": "http.disconnect"}
            if body_done:  # after the body: only a disconnect can come, whenever it comes
                await left.wait()
                return {"type": "http.disconnect"}
            wait = min(self.body_read_timeout, max(0.0, body_deadline - time.monotonic()))
            try:
                message: Message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                if not response_started:
                    refused = True
                    await self._too_slow(send)
                return {"type": "http.disconnect"}
            if message["type"] == "http.disconnect":
                gone = True
            if message["type"] == "http.request":
                piece = len(message.get("body", b""))
                received += piece
                body_done = not message.get("more_body", False)
                if received > self.max_body_bytes and not response_started:
                    refused = True
                    await self._too_large(send)
                    return {"type": "http.disconnect"}
                if self.in_flight is not None and not response_started:
                    if not self.in_flight.take(piece):
                        refused = True
                        await self._busy(send)
                        return {"type": "http.disconnect"}
                    held += piece
                if body_done:
                    watcher = asyncio.ensure_future(watch(work))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused or gone:
                return
            response_started |= message["type"] == "http.response.start"
            await send(message)

        work = asyncio.ensure_future(self.app(scope, counted_receive, guarded_send))
        try:
            await asyncio.wait({work})  # not `await work`: its cancellation by the watcher is no error of ours
            if not work.cancelled():
                work.result()
        except ClientDisconnect:  # the body never came (we cut it off, or the client left): no failure of ours
            log.info("http request body not received: %s", "cut off" if refused else "the client went away")
        finally:
            work.cancel()  # when this request itself is cancelled (the server stopping); a no-op once done
            if watcher is not None:
                watcher.cancel()
            if self.in_flight is not None:
                self.in_flight.give_back(held)
        if gone and work.cancelled():
            log.info("http client went away before its answer: its work was cancelled")
        return gone and not refused

    async def _busy(self, send: Any) -> None:
        assert self.in_flight is not None
        full = InFlightFull(self.in_flight.limit)
        retry_after = str(max(1, math.ceil(full.retry_after))).encode()
        await _send_error(
            send,
            429,
            str(full),
            "rate_limit_error",
            "overloaded",
            [(b"retry-after", retry_after), (b"connection", b"close")],
        )

    async def _too_slow(self, send: Any) -> None:
        metrics.SLOW_BODIES.inc()
        await _send_error(
            send,
            408,
            f"the request body did not arrive in time ({self.body_read_timeout:g} s between pieces, "
            f"{self.body_total_timeout:g} s in all)",
            "invalid_request_error",
            "request_timeout",
            [(b"connection", b"close")],
        )

    async def _too_large(self, send: Any) -> None:
        await _send_error(
            send,
            413,
            f"the request body is larger than the limit of {self.max_body_bytes} bytes",
            "invalid_request_error",
            "request_too_large",
            [],
        )
