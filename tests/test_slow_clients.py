"""Slow clients cannot starve the others: many HTTP connections that trickle their bodies in, or
many gRPC streams that never send their message, and health and a normal Classify still answer
while they hang on; the trickling HTTP requests are cut off (408) by the body time limits (the
gap between two pieces, and the whole body's time), and a gRPC connection is closed at its
maximum age, withheld streams and all."""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import REGISTRY

from clip_client import NO_RETRY, ClientConfig, ClipClient
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.images import SMALL_JPEG
from tests.support.processes import wait_for
from tests.support.servers import SERVING, LauncherTriton, health
from tests.support.web import ImageWebServer
from tests.test_http_api import http

SLOW = 70  # more than the work slots below: slow clients must not be holding them
SLOTS = 8
ANSWER_WITHIN = 5.0  # seconds for health and a small Classify while the slow gRPC clients hang on
# The HTTP bodies' gap limit: long enough that health and a Classify answer well before the slow
# bodies are cut off, even on a loaded machine; the total limit far beyond it, so that the cut
# seen is the gap's.
READ_GAP = 8.0
TOTAL = 120.0


@pytest.fixture(scope="module")
def gateway(tiny_triton: LauncherTriton) -> Iterator[GatewayThread]:
    config = gateway_config(
        tiny_triton.grpc_url,
        http_listen="127.0.0.1:0",
        max_concurrent_rpcs=SLOTS,
        http_body_read_timeout=READ_GAP,
        http_body_total_timeout=TOTAL,
    )
    with servers.gateway(config) as running:
        yield running


def heard_from(conn: socket.socket, wait: float = 0.0) -> bool:
    """The gateway has sent something on the connection, or closed it (within `wait` seconds)."""
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    return bool(poller.poll(int(wait * 1000)))


def test_trickling_http_bodies_neither_starve_others_nor_last(gateway: GatewayThread) -> None:
    """70 connections announce a body of 1,000 bytes and send one. Health and a Classify answer
    while every one of them is still waiting (no 408 sent, no connection closed: the others were
    not held until the slow bodies were cut off); then each slow request gets 408 once the gap
    limit has passed, long before the total limit."""
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
        took = time.monotonic() - started
        cut = [index for index, conn in enumerate(slow) if heard_from(conn)]
        assert not cut, f"slow requests {cut} were answered or closed before health and a Classify answered"
        # and each slow request is ended by the gateway once its body is late: 408, not held open
        for conn in slow[:5]:
            conn.settimeout(TOTAL / 2)  # the gap limit cuts it, not the total one
            assert conn.recv(4096).startswith(b"HTTP/1.1 408")
        print(
            f"{SLOW} trickling HTTP bodies, {SLOTS} slots: health and a Classify answered in {took:.2f}s, "
            f"trickling requests got 408 after {time.monotonic() - started:.1f}s"
        )
    finally:
        for conn in slow:
            conn.close()


def test_a_body_that_keeps_trickling_is_cut_off_by_the_total_limit(
    tiny_triton: LauncherTriton, caplog: pytest.LogCaptureFixture
) -> None:
    """A client sends a byte every 0.1 s, far more often than the gap limit (60 s) asks, of a body
    that would take 50 s to arrive: the total limit (3 s) cuts it off with 408, the connection
    closed, long before the body was complete."""
    config = gateway_config(
        tiny_triton.grpc_url, http_listen="127.0.0.1:0", http_body_read_timeout=60.0, http_body_total_timeout=3.0
    )
    announced = 500
    with servers.gateway(config) as running:
        host, port = running.http_base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            started = time.monotonic()
            conn.sendall(
                b"POST /v1/classifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {announced}\r\n\r\n".encode()
            )
            sent = 0
            while sent < announced and not heard_from(conn, wait=0.1):  # the 0.1 s is the pace
                conn.sendall(b" ")
                sent += 1
            cut_after = time.monotonic() - started
            answer = b""
            try:
                while chunk := conn.recv(4096):
                    answer += chunk
            except ConnectionResetError:  # a byte sent as the gateway closed: what came before is read
                pass
    print(f"a body trickled at 10 bytes/s: answered after {cut_after:.1f}s and {sent} of {announced} bytes")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"3 s in all" in answer and b"connection: close" in answer.lower()
    assert sent < announced  # cut off before the whole body was in: by the total limit, not a gap
    assert cut_after >= 3.0  # never before the total limit (the body's time starts after our headers)
    tracebacks = [f"{record.name}: {record.getMessage()}" for record in caplog.records if record.exc_info]
    assert tracebacks == []  # a client cut off is no failure of ours: no traceback in the log


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


def test_a_grpc_connection_is_closed_at_its_max_age(tiny_triton: LauncherTriton) -> None:
    """`--max-connection-age` 1 s, `--shutdown-grace` 1 s: a connection that served a call is told
    to go away (GOAWAY: the channel leaves READY for IDLE and connects again for the next call), and
    a stream that withholds its message is ended with its connection (UNAVAILABLE), not left to
    run to its own deadline of 120 s."""
    config = gateway_config(tiny_triton.grpc_url, max_connection_age=1.0, shutdown_grace=1.0)
    with servers.gateway(config) as running, grpc.insecure_channel(running.target) as channel:
        states: list[grpc.ChannelConnectivity] = []
        lock = threading.Lock()

        def record(state: grpc.ChannelConnectivity) -> None:
            with lock:
                states.append(state)

        def left_ready() -> bool:
            ready, idle = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE
            with lock:
                return ready in states and idle in states[states.index(ready) :]

        channel.subscribe(record)
        info = channel.unary_unary("/clip.v1.ClipService/GetModelInfo")
        info(b"", timeout=30)  # an empty GetModelInfoRequest
        finished = threading.Event()

        def never() -> Iterator[bytes]:
            finished.wait(120)
            yield from ()

        withheld = channel.stream_unary("/clip.v1.ClipService/Classify").future(never(), timeout=120)
        try:
            wait_for(withheld.done, 60, "the withheld stream ending with its connection")
            assert withheld.code() == grpc.StatusCode.UNAVAILABLE, withheld.code()
            wait_for(left_ready, 30, "the channel going IDLE after the gateway's GOAWAY", explain=lambda: str(states))
        finally:
            finished.set()
            withheld.cancel()
        info(b"", timeout=30)  # and the channel connects again
        channel.unsubscribe(record)


def test_a_client_that_leaves_mid_body_is_no_server_error(
    tiny_triton: LauncherTriton, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a body, then the connection closed: nobody is answered, and the gateway records the
    call as the client's (499), not as a 500 of its own, with no traceback."""
    config = gateway_config(tiny_triton.grpc_url, http_listen="127.0.0.1:0")
    with servers.gateway(config) as running:
        host, port = running.http_base.removeprefix("http://").split(":")

        def count(status: str) -> float:
            labels = frozenset({("route", "/v1/classifications"), ("status", status)})
            return servers.scrape(running.metrics_url).get(("clip_gateway_http_requests_total", labels), 0.0)

        before, errors_before = count("499"), count("500")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(
                b"POST /v1/classifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 500\r\n\r\n{"labels": ["cat"'
            )
        wait_for(lambda: count("499") == before + 1, 30, "the call recorded as the client's")
        assert count("500") == errors_before
    tracebacks = [f"{record.name}: {record.getMessage()}" for record in caplog.records if record.exc_info]
    assert tracebacks == []


def test_a_client_that_leaves_while_its_call_works_has_that_work_cancelled(
    tiny_triton: LauncherTriton, image_web: ImageWebServer
) -> None:
    """The whole body sent, then the connection closed while the call fetches a trickling image URL:
    the call's work is cancelled at once (its work slot free, the fetch ended), not left to run to
    its end for nobody, and it is recorded as the client's (499)."""
    config = gateway_config(
        tiny_triton.grpc_url,
        http_listen="127.0.0.1:0",
        image_urls=True,
        url_allowed_networks="127.0.0.2/32",
        url_read_timeout=60.0,
        url_total_timeout=60.0,  # the trickle would hold the call for a minute
    )
    with servers.gateway(config) as running:
        host, port = running.http_base.removeprefix("http://").split(":")

        def count(status: str) -> float:
            labels = frozenset({("route", "/v1/classifications"), ("status", status)})
            return servers.scrape(running.metrics_url).get(("clip_gateway_http_requests_total", labels), 0.0)

        def slots_used() -> float:
            return REGISTRY.get_sample_value("clip_gateway_work_slots_used") or 0.0

        trickle = image_web.url("/slow-body?left")
        body = json.dumps({"image": trickle, "labels": ["cat", "dog"]}).encode()
        before, errors_before, fetches_ended = count("499"), count("500"), len(image_web.disconnects)
        fetches_started = image_web.requests.count("/slow-body?left")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(
                b"POST /v1/classifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_for(lambda: slots_used() >= 1, 30, "the call working on its URL")
            # closed once the fetch is under way, not while the gateway is still connecting to it
            wait_for(lambda: image_web.requests.count("/slow-body?left") > fetches_started, 30, "the fetch started")
        left = time.monotonic()
        wait_for(lambda: slots_used() == 0, 30, "the work slot given back")
        freed = time.monotonic() - left
        print(f"HTTP client gone while its URL trickled: work slot free {freed:.2f} s after the close")
        assert freed < 10, "the work ran on after its client left"
        wait_for(lambda: len(image_web.disconnects) > fetches_ended, 10, "the trickling fetch ended")
        wait_for(lambda: count("499") == before + 1, 10, "the call recorded as the client's")
        assert count("500") == errors_before


def withheld_classify(channel: grpc.Channel, finished: threading.Event, **options: object) -> grpc.Future:
    """A Classify whose headers go out and whose message never does (until `finished` is set)."""

    def never() -> Iterator[bytes]:
        finished.wait(120)
        yield from ()

    return channel.stream_unary("/clip.v1.ClipService/Classify").future(never(), timeout=60, **options)


def test_a_call_without_a_key_is_refused_before_its_message_arrives(tiny_triton: LauncherTriton, tmp_path) -> None:
    """The key is in the headers: a call without one is told UNAUTHENTICATED at once, not after
    the gateway has waited for (and held) its message."""
    keys = tmp_path / "keys"
    keys.write_text("ops: k1\n")
    config = gateway_config(tiny_triton.grpc_url, api_keys_file=str(keys))
    finished = threading.Event()
    with servers.gateway(config) as running, grpc.insecure_channel(running.target) as channel:
        started = time.monotonic()
        call = withheld_classify(channel, finished)
        try:
            wait_for(call.done, ANSWER_WITHIN, "the call without a key being refused before its message")
        finally:
            finished.set()
            call.cancel()
        print(f"a keyless call with its message withheld: UNAUTHENTICATED after {time.monotonic() - started:.2f}s")
        assert call.code() == grpc.StatusCode.UNAUTHENTICATED, call.code()


def test_a_message_that_does_not_arrive_in_time_ends_the_call(tiny_triton: LauncherTriton) -> None:
    """`--message-timeout` 2 s: a call whose message does not come within 2 s of its headers ends
    then (DEADLINE_EXCEEDED, saying why), long before its own deadline and the connection's age."""
    message_timeout = 2.0
    config = gateway_config(tiny_triton.grpc_url, message_timeout=message_timeout)
    finished = threading.Event()
    with servers.gateway(config) as running, grpc.insecure_channel(running.target) as channel:
        started = time.monotonic()
        call = withheld_classify(channel, finished)
        try:
            wait_for(call.done, message_timeout + 20, "the withheld message's call ending")
        finally:
            finished.set()
            call.cancel()
        ended = time.monotonic() - started
        print(f"a withheld message with --message-timeout {message_timeout:g}: ended after {ended:.2f}s")
        assert call.code() == grpc.StatusCode.DEADLINE_EXCEEDED, call.code()
        assert "did not arrive within 2 s" in call.details()
        assert ended >= message_timeout - 0.1  # the limit, not something sooner
        with ClipClient(config=ClientConfig(target=running.target, retry=NO_RETRY, timeout=30)) as client:
            assert client.classify(SMALL_JPEG, ["cat"])[0].ok  # a call that sends its message is served
