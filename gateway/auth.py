"""API keys: `authorization: Bearer <key>` on every call except health checks, gRPC and HTTP alike.

Keys come from a file (one per line, `#` comments) and/or an environment variable (comma
separated). They are compared as SHA-256 digests with hmac.compare_digest, so neither a key's
length nor its first differing byte shows in the timing. With no keys configured, the gateway is
open (for loopback development); `python -m gateway` says so in its log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
MAX_HEADER_CHARS = 512
PREFIX = "bearer "


def load_keys(file: Path | None, env_value: str | None) -> ApiKeys:
    keys: list[str] = []
    if file is not None:
        for line in file.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(line)
    if env_value:
        keys.extend(key.strip() for key in env_value.split(",") if key.strip())
    return ApiKeys(keys)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The configured keys, as digests; `allows` checks one `authorization` header value."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def allows(self, header: object) -> bool:
        if not isinstance(header, str) or len(header) > MAX_HEADER_CHARS:
            return False
        if not header.lower().startswith(PREFIX) or not header[len(PREFIX) :].strip():
            return False
        offered = _digest(header[len(PREFIX) :].strip())
        matched = False
        for digest in self._digests:  # no early exit: the time does not tell which key matched
            matched |= hmac.compare_digest(offered, digest)
        return matched


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    def _authorized(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        values = [value for key, value in metadata or () if key == "authorization"]
        return len(values) == 1 and self._keys.allows(values[0])

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method in OPEN_METHODS or self._authorized(details.invocation_metadata):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return handler

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key: send `authorization: Bearer <key>`"
            )

        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(request, context)
            yield  # pragma: no cover  (an async generator that aborts before yielding)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                refuse_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
