"""Run the HTTP API with uvicorn inside the gateway's own event loop.

The socket is bound here, so a taken port is our clear error rather than uvicorn's sys.exit; the
gateway handles SIGTERM itself, so uvicorn's signal capture is turned off.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn

from gateway.config import GatewayConfig
from gateway.http_api import connections


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals belong to the gateway, which stops us


def bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for a socket that
    # says it is TCP. Without it a keep-alive response waits ~40 ms on Nagle and delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # A restart on the same port while the last run's connections sit in TIME_WAIT: allowed (two
    # live listeners on one port still are not: that needs SO_REUSEPORT, which stays off).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as error:
        sock.close()
        raise OSError(error.errno, f"the HTTP API cannot listen on {listen}: {error.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class HttpServer:
    def __init__(self, server: _EmbeddedServer, task: asyncio.Task[None], port: int) -> None:
        self._server = server
        self._task = task
        self.port = port

    @classmethod
    async def start(cls, app: Any, config: GatewayConfig) -> HttpServer:
        sock = bind(config.http_listen)
        tls: dict[str, Any] = {}
        if config.tls_cert_file and not config.http_allow_cleartext:
            # The same certificate as gRPC; with a client CA, the same demand for client certificates.
            tls = {"ssl_certfile": config.tls_cert_file, "ssl_keyfile": config.tls_key_file}
            if config.tls_client_ca_file:
                tls |= {"ssl_ca_certs": config.tls_client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        server = _EmbeddedServer(
            uvicorn.Config(
                app,
                **tls,
                lifespan="off",
                log_config=None,  # our JSON logging; the Guard writes one line per request
                access_log=False,
                timeout_graceful_shutdown=int(max(1, config.shutdown_grace)),
                h11_max_incomplete_event_size=64 * 1024,  # headers; bodies are capped by the Guard
                http=connections.protocol(config.http_header_timeout, config.http_max_connections),
            )
        )
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="http-api")
        while not server.started:
            if task.done():
                await task  # raises what stopped it
                raise RuntimeError("the HTTP API stopped while starting")
            await asyncio.sleep(0.01)
        return cls(server, task, int(sock.getsockname()[1]))

    async def stop(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for up to `grace` seconds."""
        self._server.config.timeout_graceful_shutdown = int(max(1, grace))
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
