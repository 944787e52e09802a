"""API keys with names: `authorization: Bearer <key>` on every call except health checks, gRPC and
HTTP alike; the key's name is the caller's tenant in metrics, logs and rate limits (never the key).

The keys file holds one key per line as `name: key`:

    # comment lines start with "#"
    team-search: s3cr3t key with spaces, # and : are part of it
    billing-batch: another-key

The name is letters, digits, ".", "_" or "-" (at most 64); the key is everything after the first
":" with surrounding whitespace removed, so it may hold any printable character, "#" and ":"
included. A line without ":" is an unnamed key (the older format) and gets the name `key-<line>`.
CLIP_GATEWAY_API_KEYS takes the same entries separated by commas (so there a key cannot contain
","). Keys are compared as SHA-256 digests with hmac.compare_digest, so neither a key's length nor
its first differing byte shows in the timing. With no keys the gateway is open (loopback
development), every caller is the tenant "anonymous", and `python -m gateway` logs a warning.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from gateway.observability import CALL, reset

OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
MAX_HEADER_CHARS = 512
PREFIX = "bearer "
ANONYMOUS = "anonymous"
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The tenant of the call being handled (set by the gRPC interceptor and by the HTTP guard).
TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default=ANONYMOUS)
log = logging.getLogger("gateway.auth")


class KeysFileError(ValueError):
    """The keys file cannot be read as `name: key` lines; the message names the line."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def parse_entry(entry: str, where: str, default_name: str) -> tuple[str, str]:
    """(name, key) of one `name: key` entry, or of a bare key (the older format)."""
    if ":" not in entry:
        log.warning("%s: a key without a name; call it %s (write `name: key`)", where, default_name)
        name, key = default_name, entry.strip()
    else:
        name, key = (part.strip() for part in entry.split(":", 1))
        if name == ANONYMOUS:  # the tenant of an open gateway: a key so named would look like no key
            raise KeysFileError(f"{where}: {ANONYMOUS!r} is reserved for callers of a gateway without keys")
        if not NAME.fullmatch(name):
            raise KeysFileError(
                f"{where}: {name[:20]!r} is not a key name (letters, digits, '.', '_', '-'; at most 64): "
                "write `name: key`"
            )
    if not key or not key.isprintable():
        raise KeysFileError(f"{where}: the key is empty or holds characters that are not printable")
    if len(PREFIX) + len(key) > MAX_HEADER_CHARS:  # such a key could never authenticate
        raise KeysFileError(
            f"{where}: the key is {len(key)} characters; an authorization header carries at most "
            f"{MAX_HEADER_CHARS - len(PREFIX)} after `Bearer `"
        )
    return name, key


def load_keys(file: Path | None, env_value: str | None, *, allow_no_keys: bool = False) -> ApiKeys:
    """The keys of `file` and `env_value` together. A file that holds none is refused unless
    `allow_no_keys` says an open gateway is what is wanted."""
    entries: list[tuple[str, str]] = []
    if file is not None:
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                entries.append(parse_entry(line, f"{file}:{number}", f"key-{number}"))
    if file is not None and not entries and not allow_no_keys:
        # A keys file is asked for keys; one that holds none is most likely a mistake (an empty
        # Secret, a file not yet written), and an open gateway is the wrong way to find out.
        raise KeysFileError(
            f"{file} holds no keys: write `name: key` lines, or pass --allow-no-keys to let every caller in"
        )
    if env_value:
        for number, item in enumerate(env_value.split(","), start=1):
            if item.strip():
                entries.append(parse_entry(item, f"CLIP_GATEWAY_API_KEYS entry {number}", f"env-key-{number}"))
    names = [name for name, _ in entries]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise KeysFileError(f"key names must be unique; repeated: {', '.join(duplicated)}")
    return ApiKeys(entries)


class ApiKeys:
    """The configured keys, as digests; `tenant` names the key an `authorization` value carries."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self._keys = [ApiKey(name, _digest(key)) for name, key in entries]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def tenant(self, header: object) -> str | None:
        """The name of the key in `header` ("Bearer <key>"), or None when it is no key of ours."""
        if not isinstance(header, str) or len(header) > MAX_HEADER_CHARS:
            return None
        if not header.lower().startswith(PREFIX) or not header[len(PREFIX) :].strip():
            return None
        offered = _digest(header[len(PREFIX) :].strip())
        found = None
        for key in self._keys:  # no early exit: the time does not tell which key matched
            if hmac.compare_digest(offered, key.digest):
                found = key.name
        return found


def _ignore(data: bytes) -> None:
    """The deserializer of a refused call: its message is never parsed."""
    return None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid key before their message is parsed, and runs the others with
    TENANT set to their key's name. With no keys configured every caller is "anonymous"."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    def _tenant(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        if not self._keys:
            return ANONYMOUS
        values = [value for key, value in metadata or () if key == "authorization"]
        return self._keys.tenant(values[0]) if len(values) == 1 else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method in OPEN_METHODS:
            return handler
        tenant = self._tenant(details.invocation_metadata)
        if tenant is None:
            return _refusal(handler)
        if handler.stream_stream is not None:
            inner_stream = handler.stream_stream

            async def as_tenant_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with _as_tenant(tenant):  # the tasks the stream starts for its requests inherit it
                    async for response in inner_stream(requests, context):
                        yield response

            return grpc.stream_stream_rpc_method_handler(
                as_tenant_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def as_tenant(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _as_tenant(tenant):
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            as_tenant,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@contextlib.contextmanager
def _as_tenant(tenant: str) -> Iterator[None]:
    """TENANT set for the body, and the call marked with it for the per-tenant request count
    when the call ends."""
    call = CALL.get()
    if call is not None:
        call["tenant"] = tenant
    token = TENANT.set(tenant)
    try:
        yield
    finally:
        reset(TENANT, token)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler that answers UNAUTHENTICATED without reading the call's message. A unary method's
    refusal is a client-streaming handler that never reads: grpc receives a unary handler's whole
    message before its behaviour runs, so a caller without a key could make the gateway hold 60 MB
    per call (and inflate gzip) before being told no."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key: send `authorization: Bearer <key>`"
        )

    async def refuse_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse(requests, context)
        yield  # pragma: no cover  (an async generator that aborts before yielding)

    if handler.unary_unary is not None or handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            refuse, request_deserializer=_ignore, response_serializer=handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        refuse_stream, request_deserializer=_ignore, response_serializer=handler.response_serializer
    )
