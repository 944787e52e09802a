"""Structured JSON logs carrying a request id, and the interceptor that sets it.

The request id comes from the caller's `x-request-id` metadata or is made up, is returned to the
caller in the initial metadata, and is on every log line written while the call runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
from google.rpc import status_pb2
from grpc_status import rpc_status

from gateway import metrics
from gateway.byte_budget import InFlightBytes, InFlightFull

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# Filled in while a call runs (the tenant, once authentication has named it) and read when it ends.
CALL: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("call", default=None)
MAX_REQUEST_ID_CHARS = 64
log = logging.getLogger("gateway.rpc")
_STANDARD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def reset(var: contextvars.ContextVar[Any], token: contextvars.Token[Any]) -> None:
    """Set `var` back with `token`, unless this runs in another context than the one that set it:
    gRPC closes a cancelled stream's handler (an async generator) from a task of its own, whose
    context is dropped when it ends, so there is nothing to set back (and reset would raise)."""
    with contextlib.suppress(ValueError):
        var.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_FIELDS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _request_id(metadata: tuple[tuple[str, Any], ...] | None) -> str:
    for key, value in metadata or ():
        if (
            key == "x-request-id"
            and isinstance(value, str)
            and 0 < len(value) <= MAX_REQUEST_ID_CHARS
            and value.isprintable()
        ):
            return value
    return uuid.uuid4().hex[:16]


DEADLINE_SLACK_MIN = 0.05
DEADLINE_SLACK_SHARE = 0.25
DEADLINE_SLACK_MAX = 1.0


def deadline_slack(budget: float) -> float:
    """How close to its deadline a cancelled call must be for the cancellation to be the deadline.

    The caller's deadline fires first: gRPC sends the time left as `grpc-timeout` and the server
    starts its own clock only when the headers arrive, so the server's deadline is later than the
    caller's by the headers' trip and their handling (far under 50 ms on an idle machine, more on a
    loaded one). The caller's library then cancels the stream, and the server sees a cancellation
    with about that skew still to go: with "no time left" as the test, a loaded 2-core machine
    counted 2 of 8 calls that ran into a 2 s deadline as CANCELLED (tests/test_overload.py, under
    stress-ng). 50 ms covers an idle machine; a quarter of the budget grows with the deadlines that
    slower deployments give (a 2 s deadline: 0.5 s), and a caller that gives up in the last quarter
    of its own budget has, for an operator, as good as run out of time; at most 1 s, so that a
    cancel well before a long deadline (more than 1 s before a 30 s one) stays CANCELLED."""
    return min(DEADLINE_SLACK_MAX, max(DEADLINE_SLACK_MIN, DEADLINE_SLACK_SHARE * budget))


def deadline_passed(budget: float | None, remaining: float | None) -> bool:
    """Whether a call cancelled with `remaining` seconds left of its deadline (None: it has none),
    `budget` of them left when its handler started, was cancelled by its deadline."""
    if budget is None or remaining is None:
        return False
    return remaining <= deadline_slack(budget)


class RefusedUnparsed(Exception):
    """Raised by a request deserializer that refuses a message from its bytes, before parsing it
    (gateway.entry_counts), with the status to answer."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


class Undecodable:
    """What a request that is not a valid message (bad wire format, invalid UTF-8) parses to."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _guarded(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # grpc would answer INTERNAL; this is the caller's mistake
            return Undecodable(error)

    return parse


@contextlib.contextmanager
def _working(method_label: str) -> Iterator[None]:
    """Counts a call in flight while it is worked on: once its message is in, not while it arrives."""
    metrics.IN_FLIGHT.labels(method_label).inc()
    try:
        yield
    finally:
        metrics.IN_FLIGHT.labels(method_label).dec()


class RequestContextInterceptor(grpc.aio.ServerInterceptor):
    """Request id, one access-log line per call (method, code, milliseconds; a stream is one call),
    INVALID_ARGUMENT (not grpc's INTERNAL) for a request that does not parse, and a time limit on
    a unary call's message. (A stream's requests are held in the bytes in flight by
    gateway.grpc_streams, each while it is worked on.)

    A unary call is served by a client-streaming handler that reads its one message here, within
    `message_timeout` seconds of the headers: grpc itself would wait for a unary call's message
    for as long as the connection lives (a caller that sends 60 of a declared 64 MB and goes
    silent held them until `--max-connection-age`). The one client-streaming handler it meets is
    the refusal of a call without a key (gateway.auth), which never reads its message.

    A message, once in, is counted in `in_flight` (the gateway's bytes in flight, which HTTP bodies
    and image URL bodies are drawn from too) until its call ends; past that limit the call is
    refused as busy before any of its work, so calls of 64 MB cannot pile up behind the work slots.
    (While a message arrives grpc holds it uncounted: bounded by --max-request-bytes per call.)"""

    def __init__(self, message_timeout: float = 30.0, in_flight: InFlightBytes | None = None) -> None:
        self.message_timeout = message_timeout
        self.in_flight = in_flight

    async def _message(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = await asyncio.wait_for(anext(aiter(requests)), self.message_timeout)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request message did not arrive within {self.message_timeout:g} s of its headers",
            )
        except StopAsyncIteration:
            if context.cancelled():  # the caller went away while sending it
                raise asyncio.CancelledError from None
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without a request message")
        if context.cancelled():  # the caller went away as its message came in: do none of its work
            raise asyncio.CancelledError
        if isinstance(request, Undecodable) and isinstance(request.error, RefusedUnparsed):
            await context.abort_with_status(rpc_status.to_status(request.error.status))
        if isinstance(request, Undecodable):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request is not a valid message of this method (bad encoding or invalid UTF-8 in a string field)",
            )
        return request

    @contextlib.asynccontextmanager
    async def _accounted(self, method: str, request_id: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """The call's request id, its count and latency by status, and its access-log line."""
        method_label = metrics.short_method(method)
        token = REQUEST_ID.set(request_id)
        call: dict[str, str] = {}
        call_token = CALL.set(call)
        started = time.perf_counter()
        budget = context.time_remaining()  # the caller's deadline as the handler starts; None: none
        code = grpc.StatusCode.OK
        try:
            await context.send_initial_metadata((("x-request-id", request_id),))
            yield
        except asyncio.CancelledError:
            # gRPC cancels the handler both when the caller goes away and when its deadline
            # passes; the time remaining then tells which.
            expired = deadline_passed(budget, context.time_remaining())
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            status = code.name if isinstance(code, grpc.StatusCode) else str(code)
            seconds = time.perf_counter() - started
            metrics.REQUESTS.labels(method_label, status).inc()
            metrics.LATENCY.labels(method_label).observe(seconds)
            tenant = call.get("tenant")
            if tenant is not None:
                metrics.TENANT_REQUESTS.labels(tenant, method_label, status).inc()
            log.info("rpc", extra={"method": method, "code": status, "ms": round(seconds * 1000, 1), "tenant": tenant})
            reset(CALL, call_token)
            reset(REQUEST_ID, token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        request_id = _request_id(details.invocation_metadata)
        method_label = metrics.short_method(method)
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def serve(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                request = await self._message(requests, context)
                size = request.ByteSize() if self.in_flight is not None else 0
                if self.in_flight is not None and self.in_flight.limit and size > self.in_flight.limit:
                    await context.abort(  # never fits: refused as too large, not as busy (not retried)
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"the message is {size} bytes, more than the gateway holds for all calls at once "
                        f"(--max-inflight-bytes {self.in_flight.limit})",
                    )
                if self.in_flight is not None and not self.in_flight.take(size):
                    # gateway.errors imports this module (through admission and auth): imported here.
                    from gateway.errors import to_status

                    await context.abort_with_status(rpc_status.to_status(to_status(InFlightFull(self.in_flight.limit))))
                try:
                    with _working(method_label):
                        return await unary(request, context)
                finally:
                    if self.in_flight is not None:
                        self.in_flight.give_back(size)

        elif handler.stream_unary is not None:
            serve = handler.stream_unary
        elif handler.stream_stream is not None:
            stream = handler.stream_stream

            async def streaming(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with self._accounted(method, request_id, context):
                    with _working(method_label):
                        async for response in stream(requests, context):
                            yield response

            return grpc.stream_stream_rpc_method_handler(
                streaming,
                request_deserializer=_guarded(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        else:
            return handler

        async def with_context(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._accounted(method, request_id, context):
                return await serve(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            with_context,
            request_deserializer=_guarded(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
