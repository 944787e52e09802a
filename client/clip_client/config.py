"""Typed client configuration: where to connect, timeouts, retries, credentials."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of failed calls. Every clip.v1 call is idempotent, so retrying is always safe;
    only the codes in `retry_on` are retried (and a rate limit, if `retry_rate_limited`), with
    exponential backoff and full jitter, never sooner than the server's retry delay when it gives
    one (a busy server does), and never past the call's timeout."""

    max_attempts: int = 4  # including the first
    initial_backoff: float = 0.1  # seconds
    max_backoff: float = 2.0
    multiplier: float = 2.0
    retry_on: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})
    retry_rate_limited: bool = True  # RESOURCE_EXHAUSTED with a retry delay; a size limit never is

    def backoff(self, attempt: int) -> float:
        """Upper bound of the sleep after failed attempt number `attempt` (1-based)."""
        return float(min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1)))


NO_RETRY = RetryPolicy(max_attempts=1)
# embed_many / classify_many: a request is worked on until the model server is back (a Triton
# restart takes tens of seconds), within its time budget (bulk_timeout), not given up after a few tries.
BULK_RETRY = RetryPolicy(max_attempts=1000, max_backoff=5.0)


@dataclass(frozen=True)
class ClientConfig:
    # host:port; or every address of a name, balanced per call: "dns:///clip-gateway-headless:50051"
    # (a Kubernetes headless Service), "ipv4:10.0.0.5:50051,10.0.0.6:50051"
    target: str = "localhost:50051"
    timeout: float | None = 30.0  # seconds per call, retries included; None waits forever
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    api_key: str | None = None  # sent as `authorization: Bearer <key>`
    secure: bool = False  # TLS; root_certificates None uses the system's
    root_certificates: bytes | None = None  # PEM: the CA (or self-signed certificate) to trust
    # PEM: this client's certificate chain and key, for a server that requires client certificates
    client_certificate_chain: bytes | None = None
    client_private_key: bytes | None = None
    max_message_bytes: int = 64 * 1024 * 1024
    # gRPC load balancing over the target's addresses: "round_robin" spreads calls over every
    # gateway a name resolves to; "pick_first" keeps one connection (gRPC's default).
    load_balancing: str = "round_robin"
    default_templates: tuple[str, ...] = ()  # empty: the server's default ("a photo of a {}.")
    # embed_many / classify_many: images per stream request, and stream requests out at once (the
    # server works on at most its own GetModelInfo.limits.stream_window of them at a time)
    bulk_batch_size: int = 8
    bulk_window: int = 8
    bulk_retry: RetryPolicy = BULK_RETRY  # each stream request's retries, and new streams after a break
    bulk_timeout: float | None = 300.0  # seconds per stream request, its retries included
