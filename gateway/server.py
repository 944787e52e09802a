"""Assemble the gateway: the core, its gRPC and HTTP adapters, health, reflection; start and stop it."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from clip_api import clip_service_pb2, clip_service_pb2_grpc
from gateway import metrics
from gateway.auth import ApiKeyInterceptor, ApiKeys, load_keys
from gateway.byte_budget import InFlightBytes
from gateway.config import GatewayConfig
from gateway.core import ClipCore
from gateway.entry_counts import EntryCountInterceptor
from gateway.grpc_api import ClipServicer
from gateway.health import HealthWatcher
from gateway.image_sources import ImageSources
from gateway.observability import RequestContextInterceptor
from gateway.triton_adapter import TritonAdapter

if TYPE_CHECKING:
    from gateway.http_api.server import HttpServer

log = logging.getLogger("gateway.server")


def check_tls(config: GatewayConfig) -> None:
    """Refuse settings that would leave part of the gateway unprotected by mistake."""
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ValueError("TLS needs both --tls-cert-file and --tls-key-file")
    if config.tls_client_ca_file and not config.tls_cert_file:
        raise ValueError("--tls-client-ca-file needs TLS (--tls-cert-file and --tls-key-file)")


def add_port(server: grpc.aio.Server, config: GatewayConfig) -> int:
    """Listen with TLS when a certificate and key are configured (requiring client certificates
    signed by --tls-client-ca-file when given), in plaintext otherwise."""
    if not config.tls_cert_file:
        return int(server.add_insecure_port(config.listen))
    client_ca = Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
    credentials = grpc.ssl_server_credentials(
        [(Path(config.tls_key_file).read_bytes(), Path(config.tls_cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return int(server.add_secure_port(config.listen, credentials))


def connection_limits(config: GatewayConfig) -> list[tuple[str, int]]:
    """gRPC core's own limits on connections: how long one lives, how long it may sit idle, how
    many may be open at once (0 turns each off)."""
    options = []
    if config.grpc_max_connections > 0:
        options.append(("grpc.max_allowed_incoming_connections", config.grpc_max_connections))
    if config.max_connection_age > 0:
        options += [
            ("grpc.max_connection_age_ms", int(config.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.shutdown_grace * 1000)),
        ]
    if config.max_connection_idle > 0:
        options.append(("grpc.max_connection_idle_ms", int(config.max_connection_idle * 1000)))
    return options


def raise_descriptor_limit() -> int:
    """The soft limit on open descriptors raised to the hard one (Debian's soft default is 1,024,
    which a few idle connections exhaust); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class OncePerSecond(logging.Filter):
    """Lets one record a second through for each message that starts with `prefix`: asyncio logs
    every failed accept() when descriptors run out, thousands a second."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.last = -1.0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = time.monotonic()
        if now - self.last < 1.0:
            self.suppressed += 1
            return False
        self.last = now
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} more like it in the last second, not logged)"
            self.suppressed = 0
        return True


ACCEPT_ERRORS = OncePerSecond("socket.accept() out of system resource")


def image_sources(config: GatewayConfig, in_flight: InFlightBytes) -> ImageSources:
    """Image bytes always; image URLs only where the operator turned fetching on."""
    if not config.image_urls:
        return ImageSources(None)
    from gateway.image_fetcher import FetchSettings, ImageFetcher  # aiohttp: only when fetching is on
    from gateway.url_policy import UrlPolicy

    settings = FetchSettings(
        max_redirects=config.url_max_redirects,
        connect_timeout=config.url_connect_timeout,
        read_timeout=config.url_read_timeout,
        total_timeout=config.url_total_timeout,
        proxy=config.url_proxy,
    )
    return ImageSources(ImageFetcher(settings, UrlPolicy.from_setting(config.url_allowed_networks)), in_flight)


async def start_http(core: ClipCore, keys: ApiKeys, config: GatewayConfig, in_flight: InFlightBytes) -> HttpServer:
    # FastAPI, pydantic and uvicorn (tens of MB) are imported only where the HTTP API is turned on.
    from gateway.http_api.app import create_app
    from gateway.http_api.server import HttpServer

    return await HttpServer.start(create_app(core, keys, in_flight), config)


class Gateway:
    """A running gateway. `await Gateway.start(config)` returns it with `.port` bound."""

    def __init__(
        self,
        config: GatewayConfig,
        server: grpc.aio.Server,
        port: int,
        core: ClipCore,
        health: HealthWatcher,
        metrics_endpoint: metrics.MetricsEndpoint | None,
        http: HttpServer | None,
    ) -> None:
        self.config = config
        self.server = server
        self.port = port
        self.core = core
        self.health = health
        self.metrics_endpoint = metrics_endpoint
        self.http = http

    @classmethod
    async def start(cls, config: GatewayConfig) -> Gateway:
        check_tls(config)
        descriptors = raise_descriptor_limit()
        if ACCEPT_ERRORS not in logging.getLogger("asyncio").filters:
            logging.getLogger("asyncio").addFilter(ACCEPT_ERRORS)
        limit = config.limits.max_request_bytes
        keys = load_keys(
            Path(config.api_keys_file) if config.api_keys_file else None,
            config.api_keys,
            allow_no_keys=config.allow_no_keys,
        )
        if not keys:
            log.warning("no API keys configured: every caller is let in")
        triton = TritonAdapter(config.triton_url)
        health_servicer = health_aio.HealthServicer()
        health = HealthWatcher(triton, health_servicer, config.health_interval, config.limits)
        # One count of bytes in flight: gRPC messages, HTTP bodies and image URL bodies.
        in_flight = InFlightBytes(config.max_inflight_bytes)
        server = grpc.aio.server(
            interceptors=[
                RequestContextInterceptor(config.message_timeout, in_flight),
                ApiKeyInterceptor(keys),
                EntryCountInterceptor(health.limits),
            ],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a port held by another process is an error, not shared
                *connection_limits(config),
            ],
        )
        core = ClipCore(triton, health, config, image_sources(config, in_flight))
        clip_service_pb2_grpc.add_ClipServiceServicer_to_server(ClipServicer(core, in_flight), server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (
                clip_service_pb2.DESCRIPTOR.services_by_name["ClipService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        port = add_port(server, config)
        endpoint = metrics.MetricsEndpoint.start(config.metrics_listen) if config.metrics_listen else None
        await health.check_once()  # NOT_SERVING (or SERVING) before the first call can arrive
        if health.conflict is not None:
            await triton.close()
            raise health.conflict
        await server.start()
        http = await start_http(core, keys, config, in_flight) if config.http_listen else None
        health.start()
        log.info(
            "gateway listening",
            extra={
                "port": port,
                "http_port": http.port if http else None,
                "triton": config.triton_url,
                "metrics_port": endpoint.port if endpoint else None,
                "image_urls": config.image_urls,
                "open_files_limit": descriptors,
            },
        )
        return cls(config, server, port, core, health, endpoint, http)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, give in-flight calls `grace` seconds, then close Triton's channel."""
        grace = self.config.shutdown_grace if grace is None else grace
        await self.health.stop_serving()
        await asyncio.gather(self.server.stop(grace), *([self.http.stop(grace)] if self.http else []))
        await self.core.images.close()
        await self.core.triton.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        log.info("gateway stopped")

    async def serve_until_signalled(self) -> None:
        """Serve until SIGINT/SIGTERM, or until the model repository turns out to contradict the
        gateway's limits (raised after stopping: the gateway must not serve then)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        conflict = asyncio.ensure_future(self.health.conflict_found.wait())
        await asyncio.wait([stopping, conflict], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        conflict.cancel()
        log.info("shutting down", extra={"grace_s": self.config.shutdown_grace})
        await self.stop()
        if self.health.conflict is not None:
            raise self.health.conflict
