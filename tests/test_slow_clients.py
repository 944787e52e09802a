"""Slow clients cannot starve the others: many HTTP connections that trickle their bodies in, or
many gRPC streams that never send their message, and health and a normal Classify still answer
at once; the trickling HTTP requests are cut off (408) after the body time limits."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from clip_client import NO_RETRY, ClientConfig, ClipClient
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.images import SMALL_JPEG
from tests.support.servers import SERVING, LauncherTriton, health
from tests.test_http_api import http

SLOW = 70  # more than the work slots below: slow clients must not be holding them
SLOTS = 8
ANSWER_WITHIN = 5.0  # seconds for health and a small Classify while the slow clients hang on


@pytest.fixture(scope="module")
def gateway(tiny_triton: LauncherTriton) -> Iterator[GatewayThread]:
    config = gateway_config(
        tiny_triton.grpc_url,
        http_listen="127.0.0.1:0",
        max_concurrent_rpcs=SLOTS,
        http_body_read_timeout=2.0,
        http_body_total_timeout=4.0,
    )
    with servers.gateway(config) as running:
        yield running


def test_trickling_http_bodies_neither_starve_others_nor_last(gateway: GatewayThread) -> None:
    host, port = gateway.http_base.removeprefix("http://").split(":")
    body = json.dumps(
        {"image": "data:image/jpeg;base64," + base64.b64encode(SMALL_JPEG).decode(), "labels": ["cat"]}
    ).encode()
    slow = []
    try:
        for _ in range(SLOW):
            conn = socket.create_connection((host, int(port)), timeout=10)
            conn.sendall(
                b"POST /v1/classifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )  # one byte of the thousand announced
            slow.append(conn)
        started = time.monotonic()
        assert http(gateway.http_base, "GET", "/v1/health/ready", key=None)[0] == 200
        status, _, answer = http(gateway.http_base, "POST", "/v1/classifications", json.loads(body))
        assert status == 200, answer
        answered = time.monotonic() - started
        assert answered < ANSWER_WITHIN
        # and each slow request is ended by the gateway once its body is late: 408, not held open
        for conn in slow[:5]:
            conn.settimeout(10)
            assert conn.recv(4096).startswith(b"HTTP/1.1 408")
        print(
            f"{SLOW} trickling HTTP bodies, {SLOTS} slots: health and a Classify answered in {answered:.2f}s, "
            f"trickling requests got 408 after {time.monotonic() - started:.1f}s"
        )
    finally:
        for conn in slow:
            conn.close()


def test_withheld_grpc_messages_neither_starve_health_nor_calls(gateway: GatewayThread) -> None:
    """Streams that send their headers and never their message: health (outside any cap) and a
    normal Classify answer at once."""
    channel = grpc.insecure_channel(gateway.target)
    withhold = channel.stream_unary("/clip.v1.ClipService/Classify")

    finished = threading.Event()

    def never() -> Iterator[bytes]:  # headers go out; the message never does
        finished.wait(120)
        yield from ()

    pending = [withhold.future(never(), timeout=60) for _ in range(SLOW)]
    try:
        started = time.monotonic()
        assert health(gateway.target, timeout=ANSWER_WITHIN) == SERVING
        with ClipClient(config=ClientConfig(target=gateway.target, retry=NO_RETRY, timeout=ANSWER_WITHIN)) as client:
            assert client.classify(SMALL_JPEG, ["cat"])[0].ok
        answered = time.monotonic() - started
        print(f"{SLOW} withheld gRPC messages, {SLOTS} slots: health and a Classify answered in {answered:.2f}s")
        assert answered < ANSWER_WITHIN
        assert not any(call.done() for call in pending)  # they are still hanging on, harmlessly
    finally:
        finished.set()
        for call in pending:
            call.cancel()
        channel.close()
