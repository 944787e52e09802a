"""Gateway configuration from command-line flags, environment variables and defaults.

Every setting has a flag (`--max-labels`) and an environment variable (`CLIP_GATEWAY_MAX_LABELS`);
a flag wins over the environment, which wins over the default (configuration.flags).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from configuration import flags
from configuration.flags import setting

ENV_PREFIX = "CLIP_GATEWAY_"
FROM_REPOSITORY = "the model repository's"  # the default of a limit read from Triton when not set here


@dataclass(frozen=True)
class Limits:
    """Request limits, checked before anything reaches Triton. The two that the model repository
    also enforces have one source, Triton's model configs, read when Triton becomes ready: None
    takes Triton's value, a number must not exceed it (the gateway refuses to serve otherwise)."""

    max_images: int | None = setting(None, default_text=FROM_REPOSITORY)  # per request; the image encoder's max batch
    max_labels: int = 1000  # ImageNet-size label sets
    max_texts: int = 1000  # per Embed request
    max_templates: int = 100
    max_prompts: int = 20_000  # labels x templates sent to the text encoder
    max_label_chars: int = 1000  # per label, text or template
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int | None = setting(None, default_text=FROM_REPOSITORY)  # decoded pixels per image
    max_request_bytes: int = 64 * 1024 * 1024  # the message, and also the request's image URL bodies together
    # Decoded pixels of a request's images together: decoding costs by pixels, not bytes (a 154 KB
    # PNG can hold 40 Mpx). About 32 twelve-megapixel photographs.
    max_request_pixels: int = 400_000_000


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:50051"
    triton_url: str = "127.0.0.1:8001"
    metrics_listen: str = "127.0.0.1:9464"  # Prometheus /metrics; an empty value turns it off
    default_template: str = "a photo of a {}."
    # bytes of label and template strings kept for RegisterLabelSet, all keys together (least
    # recently used evicted first, one key's own first past --key-slot-share of it; a caller told
    # NOT_FOUND registers again). 0 keeps none
    max_label_set_bytes: int = 64 * 1024 * 1024
    default_timeout: float = 60.0  # seconds, when the caller sets no deadline (per request of a stream)
    # requests of one EmbedStream or ClassifyStream worked on at once; no more are read meanwhile
    stream_window: int = 8
    shutdown_grace: float = 10.0  # seconds in-flight calls get after SIGTERM
    health_interval: float = 1.0  # seconds between Triton model-readiness checks
    log_level: str = "INFO"
    # Calls doing model work at once, gRPC and HTTP together; past it a call is refused at once as
    # busy (gRPC UNAVAILABLE with RetryInfo, HTTP 429 with Retry-After) instead of queueing.
    max_concurrent_rpcs: int = 64
    # With API keys: the share of those slots one key may hold at once (at least one slot), so that
    # one key's slow calls cannot lock the other keys out. 1 turns it off.
    key_slot_share: float = 0.5
    api_keys_file: str = ""  # `name: key` per line (gateway/auth.py); with CLIP_GATEWAY_API_KEYS
    # let every caller in when the keys file holds no keys (without it, such a file stops the start)
    allow_no_keys: bool = False
    api_keys: str = ""  # comma-separated `name: key` entries; prefer the file or the environment to a flag
    rate_limit_requests: float = 0.0  # per API key, requests per second; 0: no limit
    rate_limit_images: float = 0.0  # per API key, images per second; 0: no limit
    # per API key, decoded megapixels per second (what the images' headers declare); 0: no limit
    rate_limit_megapixels: float = 0.0
    rate_limit_burst_seconds: float = 1.0  # how many seconds of its rate a key may save up
    tls_cert_file: str = ""  # PEM certificate chain; with tls_key_file, gRPC and HTTP speak TLS only
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # PEM CA bundle: when set, callers must present a certificate it signed
    http_allow_cleartext: bool = False  # allow a plain-HTTP API beside a TLS gRPC port (behind a TLS proxy)
    # Every gRPC connection is closed after this many seconds (in-flight calls get `shutdown_grace`):
    # clients re-resolve and rebalance, and no call can hold a stream open longer, withheld message
    # or not. 0 turns it off.
    max_connection_age: float = 600.0
    # seconds for a gRPC call's message to arrive after its headers (DEADLINE_EXCEEDED past it): a
    # caller that sends part of a large message and goes silent holds it no longer than this
    message_timeout: float = 30.0
    http_listen: str = ""  # host:port of the OpenAI-compatible HTTP API; empty turns it off
    http_body_read_timeout: float = 10.0  # seconds between two pieces of an HTTP request body (408 past it)
    http_body_total_timeout: float = 30.0  # seconds for a whole HTTP request body (408 past it)
    # seconds for a request's headers, from the connection's start or its previous response (closed past it)
    http_header_timeout: float = 10.0
    # bytes of HTTP request bodies (multipart spooled to disk included), image URL bodies and gRPC
    # request messages held at once, across every request; past it a request is refused as busy
    # (HTTP 429, gRPC UNAVAILABLE with a retry delay). 0: no limit
    max_inflight_bytes: int = 512 * 1024 * 1024
    http_max_connections: int = 1000  # open HTTP connections; past it a new one gets 503 and is closed
    # Every gRPC connection with no call in progress for this many seconds is closed (GOAWAY): idle
    # connections hold descriptors. 0 turns it off.
    max_connection_idle: float = 120.0
    # open gRPC connections; past it gRPC closes a new one as it is accepted (the caller sees
    # UNAVAILABLE), so idle or hostile connections cannot take the descriptors health and calls need
    grpc_max_connections: int = 1000
    # decoded pixels (as the images' headers declare) of one Triton call: a request's images go to
    # Triton in parts of at most this many, one after another, so a gateway that dies leaves at
    # most one part decoding there (Triton 2.51 does not cancel an ensemble's steps). About four
    # twelve-megapixel photographs; 0 sends every request in one call
    triton_call_pixels: int = 48_000_000
    image_urls: bool = False  # fetch images given by URL (Image.url, HTTP image inputs)
    url_allowed_networks: str = ""  # comma-separated CIDRs exempt from the internal-address deny list
    url_max_redirects: int = 0  # redirects followed per image URL, each re-checked
    url_connect_timeout: float = 3.0  # seconds
    url_read_timeout: float = 5.0  # seconds between reads of a body
    url_total_timeout: float = 15.0  # seconds for a whole fetch, redirects included
    url_proxy: str = ""  # proxy for image fetches; HTTP(S)_PROXY from the environment is ignored
    limits: Limits = field(default_factory=Limits)


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="clip-serve gRPC gateway")
    return flags.parse(GatewayConfig, parser, argv, os.environ if env is None else env, ENV_PREFIX)


class LimitsConflict(Exception):
    """A gateway limit is larger than what the model repository allows: the gateway would accept
    requests that Triton then refuses."""


def effective_limits(configured: Limits, max_batch_size: int, max_image_pixels: int) -> Limits:
    """The gateway's limits with the repository's filled in; LimitsConflict where a configured one
    exceeds the repository's."""
    problems = []
    if configured.max_images is not None and configured.max_images > max_batch_size:
        problems.append(
            f"--max-images {configured.max_images} is more than the image encoder's max batch size "
            f"{max_batch_size} (export with --max-batch-size, or lower --max-images)"
        )
    if configured.max_image_pixels is not None and configured.max_image_pixels > max_image_pixels:
        problems.append(
            f"--max-image-pixels {configured.max_image_pixels} is more than the preprocessing model's "
            f"{max_image_pixels} (export with --max-image-pixels, or lower --max-image-pixels)"
        )
    if problems:
        raise LimitsConflict("; ".join(problems))
    return dataclasses.replace(
        configured,
        max_images=configured.max_images or max_batch_size,
        max_image_pixels=configured.max_image_pixels or max_image_pixels,
    )
