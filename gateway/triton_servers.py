"""Which Triton servers stand behind the gateway's `--triton-url`, for health and for rebalancing.

The target may name one server (`triton:8001`), a DNS name with several addresses
(`dns:///triton-headless:8001`, a Kubernetes headless Service), or a fixed list
(`ipv4:10.0.0.5:8001,10.0.0.6:8001`). Calls go through one gRPC channel that balances per request
(round_robin); this module resolves the same target into addresses so that health can ask each
server whether its models are ready, and the channel can be renewed when the set changes (gRPC's
DNS resolver looks again only when a connection fails, so new pods would otherwise wait).
"""

from __future__ import annotations

import asyncio
import socket

DEFAULT_PORT = 8001


def _split_host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [v6]:port
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or DEFAULT_PORT)
    host, _, port = text.rpartition(":")
    if not host:  # no port given
        return text, DEFAULT_PORT
    return host, int(port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(target: str) -> tuple[str, ...]:
    """The sorted host:port addresses that `target` names now (empty when a name does not resolve)."""
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            return tuple(sorted(_join(*_split_host_port(item)) for item in target[len(scheme) :].split(",") if item))
    name = target.removeprefix("dns:///").removeprefix("dns:")
    host, port = _split_host_port(name)
    try:
        answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return ()
    return tuple(sorted({_join(str(info[4][0]), port) for info in answers}))
