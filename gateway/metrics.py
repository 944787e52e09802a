"""Prometheus metrics of the gateway, served on their own address (`--metrics-listen`).

One registry per process (prometheus_client's default): several gateways in one process, as in
tests, share the series. The per-label text cache lives in Triton and is exported there
(clip_label_cache_*); Prometheus scrapes both, and the dashboards join them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000)

REQUESTS = Counter("clip_gateway_requests", "Finished RPCs by method and gRPC status code", ["method", "code"])
LATENCY = Histogram("clip_gateway_request_seconds", "RPC latency by method", ["method"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("clip_gateway_in_flight_requests", "RPCs being worked on now (their message in)", ["method"])
STREAM_REQUESTS = Counter(
    "clip_gateway_stream_requests",
    "Requests answered on EmbedStream and ClassifyStream, by method and their own status code",
    ["method", "code"],
)
IMAGES = Histogram("clip_gateway_images_per_request", "Images per request", ["method"], buckets=COUNT_BUCKETS)
LABELS = Histogram("clip_gateway_labels_per_request", "Labels or texts per request", ["method"], buckets=COUNT_BUCKETS)
IMAGE_ERRORS = Counter("clip_gateway_image_errors", "Images answered with their own error status", ["method"])
TRITON_LATENCY = Histogram(
    "clip_gateway_triton_seconds", "Latency of calls to Triton by model", ["model"], buckets=LATENCY_BUCKETS
)
TRITON_ERRORS = Counter("clip_gateway_triton_errors", "Failed calls to Triton by model and status", ["model", "code"])
TRITON_RETRIES = Counter(
    "clip_gateway_triton_retries", "Calls to Triton tried again (on another server) after UNAVAILABLE", ["model"]
)
# The metric keeps its first name: dashboards and alerts query it.
TRITON_SERVERS = Gauge(
    "clip_gateway_triton_backends", "Triton servers behind --triton-url by readiness of their models", ["state"]
)
HTTP_REQUESTS = Counter(
    "clip_gateway_http_requests", "Finished HTTP API requests by route and HTTP status", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "clip_gateway_http_request_seconds", "HTTP API latency by route", ["route"], buckets=LATENCY_BUCKETS
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "clip_gateway_http_connections_closed",
    "HTTP connections the gateway closed itself: too_many (past --http-max-connections), headers_timeout",
    ["reason"],
)
IMAGE_FETCHES = Counter("clip_gateway_image_fetches", "Image URL fetches by outcome (ok, refused, failed)", ["outcome"])
WORK_SLOTS_USED = Gauge("clip_gateway_work_slots_used", "Calls doing model work now, gRPC and HTTP together")
BUSY_REFUSALS = Counter("clip_gateway_busy_refusals", "Calls refused because every work slot was taken")
# Per tenant: the name of the caller's API key ("anonymous" without keys), never the key itself.
TENANT_REQUESTS = Counter(
    "clip_gateway_tenant_requests",
    "Finished calls per API key name, method (or HTTP route) and code",
    ["tenant", "method", "code"],
)
TENANT_IMAGES = Counter("clip_gateway_tenant_images", "Images sent per API key name", ["tenant"])
TENANT_TEXTS = Counter("clip_gateway_tenant_texts", "Labels, prompts and texts sent per API key name", ["tenant"])
TENANT_TEXT_TOKENS = Counter(
    "clip_gateway_tenant_text_tokens", "CLIP BPE tokens of embedded texts per API key name", ["tenant"]
)
INFLIGHT_BYTES = Gauge(
    "clip_gateway_inflight_bytes",
    "HTTP request bodies and image URL bodies held at once, in bytes (--max-inflight-bytes)",
)
INFLIGHT_BYTES_REFUSED = Counter(
    "clip_gateway_inflight_bytes_refused",
    "Bodies refused as busy: the gateway held its limit of bytes in flight",
)
SLOW_BODIES = Counter("clip_gateway_http_slow_bodies", "HTTP requests cut off because their body trickled in (408)")
RATE_LIMITED = Counter(
    "clip_gateway_rate_limited",
    "Calls refused by a per-key limit: requests or images per second, or its share of the work slots (concurrency)",
    ["tenant", "limit"],
)
HEALTH = Gauge("clip_gateway_serving", "1 when every Triton model the gateway needs is ready, else 0")


def short_method(full_method: str) -> str:
    """'/clip.v1.ClipService/Classify' -> 'Classify'; keeps label cardinality bounded."""
    return full_method.rsplit("/", 1)[-1] or "unknown"


class MetricsEndpoint:
    """The /metrics HTTP endpoint, on a thread of its own."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.port = int(server.server_port)

    @classmethod
    def start(cls, listen: str) -> MetricsEndpoint:
        """`listen` is host:port; port 0 picks a free one."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
        return cls(server)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
