"""Connections cost descriptors and memory before any call: HTTP headers must arrive in time, HTTP
and gRPC connections are capped per listener, idle gRPC connections are reaped, the descriptor limit is the
hard one, accept errors are logged once a second, and HTTP answers without Nagle's delay."""

from __future__ import annotations

import logging
import resource
import socket
import struct
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.http_api.server import bind
from gateway.server import OncePerSecond
from launcher.server import free_port
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton

HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 4
IDLE = 1.0


@pytest.fixture(scope="module")
def limited(tiny_triton: LauncherTriton) -> Iterator[GatewayThread]:
    config = gateway_config(
        tiny_triton.grpc_url,
        http_listen="127.0.0.1:0",
        http_header_timeout=HEADER_TIMEOUT,
        http_max_connections=MAX_CONNECTIONS,
        max_connection_idle=IDLE,
    )
    with servers.gateway(config) as gateway:
        yield gateway


def http_socket(gateway: GatewayThread) -> socket.socket:
    assert gateway.gateway.http is not None
    return socket.create_connection(("127.0.0.1", gateway.gateway.http.port), timeout=15)


def closed_by_server(sock: socket.socket, within: float, trickle: bytes = b"") -> float:
    """Seconds until the server closed `sock` (sending `trickle` a byte every 0.2 s meanwhile)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < within:
        try:
            if not sock.recv(4096):
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if trickle:
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for {within} s")


def get(sock: socket.socket, path: str = "/v1/health/live") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    return answer


def test_headers_trickled_a_byte_at_a_time_are_cut_off(limited: GatewayThread) -> None:
    with http_socket(limited) as sock:
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\n")
        seconds = closed_by_server(sock, within=15, trickle=b"X")
    assert seconds < 15


def test_a_connection_that_sends_nothing_is_closed(limited: GatewayThread) -> None:
    with http_socket(limited) as sock:
        closed_by_server(sock, within=15)


def test_a_kept_alive_connection_gets_the_header_timeout_again(limited: GatewayThread) -> None:
    with http_socket(limited) as sock:
        assert get(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /v1/health/live HTTP/1.1\r\n")  # the second request's headers never end
        closed_by_server(sock, within=15, trickle=b"Y")


def test_connections_past_the_cap_are_refused_and_the_cap_comes_back(limited: GatewayThread) -> None:
    held = [http_socket(limited) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # each is accepted: it answers
            assert get(sock).startswith(b"HTTP/1.1 200")
        with http_socket(limited) as extra:
            extra.settimeout(15)
            answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"too many open connections" in answer
    finally:
        for sock in held:
            sock.close()

    def answers() -> bool:
        with http_socket(limited) as sock:
            try:
                return get(sock).startswith(b"HTTP/1.1 200")
            except (ConnectionError, TimeoutError):
                return False

    deadline = time.monotonic() + 15
    while not answers():
        assert time.monotonic() < deadline, "the cap never came back after the connections closed"
        time.sleep(0.2)


def test_http_responses_are_sent_without_nagles_delay(limited: GatewayThread) -> None:
    """TCP_NODELAY on every accepted connection (asyncio sets it only for a socket made as TCP)."""
    assert limited.gateway.http is not None
    with http_socket(limited) as sock:
        assert get(sock).startswith(b"HTTP/1.1 200")
        connections = limited.gateway.http._server.server_state.connections
        flags = {
            c.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in connections
        }
    assert flags and 0 not in flags


def test_an_idle_grpc_connection_is_reaped(limited: GatewayThread) -> None:
    """--max-connection-idle: a connection with no call gets GOAWAY (HTTP/2 frame type 7)."""
    host, port = limited.target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + bytes([4, 0]) + bytes(4))
        started, received = time.monotonic(), b""
        while time.monotonic() - started < 15:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
            types = []
            offset = 0
            while offset + 9 <= len(received):
                length = int.from_bytes(received[offset : offset + 3], "big")
                types.append(received[offset + 3])
                offset += 9 + length
            if 7 in types:
                break
        assert 7 in types or not chunk, "the idle connection was neither sent GOAWAY nor closed"
        assert time.monotonic() - started < 15


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + bytes([4, 0]) + bytes(4)  # and an empty SETTINGS


def grpc_connection(target: str) -> socket.socket:
    """A raw HTTP/2 connection that says hello and then nothing: it holds its place, as an idle or
    hostile client's does."""
    host, port = target.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=15)
    sock.sendall(PREFACE)
    return sock


def accepted(sock: socket.socket) -> bool:
    """True when the server answered the preface with its SETTINGS frame (type 4), False when it
    closed the connection instead."""
    try:
        header = sock.recv(9)
    except ConnectionResetError:
        return False
    return len(header) == 9 and header[3] == 4


def test_grpc_connections_past_the_cap_are_closed_and_the_cap_comes_back(tiny_triton: LauncherTriton) -> None:
    """--grpc-max-connections: gRPC core closes a connection past the cap as it is accepted, so
    connections that sit there cannot take every descriptor; health answers again once one goes."""
    config = gateway_config(tiny_triton.grpc_url, grpc_max_connections=2, max_connection_idle=0)
    with servers.gateway(config) as gateway:
        held = [grpc_connection(gateway.target) for _ in range(2)]
        try:
            assert all(accepted(sock) for sock in held)
            with grpc_connection(gateway.target) as extra:
                assert not accepted(extra)
            held.pop().close()

            def health_answers() -> bool:
                options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own, not a shared one
                with grpc.insecure_channel(gateway.target, options=options) as channel:
                    try:
                        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                    except grpc.RpcError:
                        return False

            wait_for(health_answers, 15, "health answering once a held connection closed")
        finally:
            for sock in held:
                sock.close()


def test_the_descriptor_limit_is_the_hard_one(limited: GatewayThread) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard


def test_accept_errors_are_logged_once_a_second() -> None:
    throttle = OncePerSecond("socket.accept() out of system resource")

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, (), None)

    passed = [throttle.filter(record("socket.accept() out of system resource")) for _ in range(1000)]
    assert passed.count(True) == 1
    assert throttle.filter(record("something else"))  # other records pass untouched
    throttle.last -= 1.0  # a second later
    later = record("socket.accept() out of system resource")
    assert throttle.filter(later) and "999 more like it" in str(later.msg)


def test_the_http_port_can_be_taken_again_at_once_but_never_twice(tiny_triton: LauncherTriton) -> None:
    """A restart finds the last run's closed connections in TIME_WAIT on its port: the HTTP API
    binds anyway (SO_REUSEADDR); a port another listener holds is still an error."""
    port = free_port()
    config = gateway_config(tiny_triton.grpc_url, http_listen=f"127.0.0.1:{port}")
    for _ in range(2):
        with servers.gateway(config) as gateway:
            sock = http_socket(gateway)
            assert get(sock).startswith(b"HTTP/1.1 200")
        sock.close()  # after the gateway closed its end first: the port's side is in TIME_WAIT
    holder = bind(f"127.0.0.1:{port}")
    try:
        with pytest.raises(OSError, match="cannot listen"):
            bind(f"127.0.0.1:{port}")
    finally:
        holder.close()
