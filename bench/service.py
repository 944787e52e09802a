"""The served path as a benchmark runs it: Triton through the launcher's library on free ports,
and the gateway as its own process (so its memory is measured on its own); both stopped on the
way out, whatever happens."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from bench.measure import Memory, tree_memory
from launcher.server import ServerSettings, TritonServer, free_port

ROOT = Path(__file__).resolve().parents[1]


def bytes_input(name: str, items: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(items)], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_))
    return tensor


class HttpCaller:
    """POSTs JSON to one gateway HTTP route over a keep-alive connection per calling thread, as
    an SDK client holds one; a non-200 answer raises."""

    def __init__(self, address: str, route: str) -> None:
        self.address, self.route = address, route
        self.local = threading.local()

    def post(self, body: dict[str, object]) -> dict[str, object]:
        return self.call("POST", self.route, json.dumps(body))

    def model_id(self) -> str:
        """The id every request's `model` field must name (the first of GET /v1/models)."""
        return str(self.call("GET", "/v1/models", None)["data"][0]["id"])  # type: ignore[index]

    def call(self, method: str, route: str, body: str | None) -> dict[str, object]:
        connection: http.client.HTTPConnection | None = getattr(self.local, "connection", None)
        try:
            response = self._send(connection or self._connect(), method, route, body)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closes a keep-alive connection idle past its timeout: open a new one, as an SDK does.
            response = self._send(self._connect(), method, route, body)
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{route}: HTTP {response.status}: {answer[:300]!r}")
        return dict(json.loads(answer))

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self.address.rsplit(":", 1)
        self.local.connection = http.client.HTTPConnection(host, int(port), timeout=600)
        return self.local.connection

    @staticmethod
    def _send(
        connection: http.client.HTTPConnection, method: str, route: str, body: str | None
    ) -> http.client.HTTPResponse:
        connection.request(method, route, body, {"Content-Type": "application/json"})
        return connection.getresponse()


def start_triton(repository: Path, log_file: Path) -> TritonServer:
    server = TritonServer(
        ServerSettings(
            model_repository=repository,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
            work_dir=ROOT / "build" / "triton",
            log_file=log_file,
            response_cache_bytes=64 << 20,
        )
    )
    server.start(ready_timeout=300)
    return server


def start_gateway(triton_url: str, http_listen: str = "") -> tuple[subprocess.Popen[bytes], str]:
    """`python -m gateway` on a free port (and its HTTP API on `http_listen`, if given), returned once it
    reports SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "gateway", "--listen", target, "--triton-url", triton_url]
    process = subprocess.Popen([*command, "--http-listen", http_listen, "--log-level", "WARNING"], cwd=ROOT)
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                serving = health_pb2.HealthCheckResponse.SERVING
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == serving:
                    return process, target
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    process.kill()
    process.wait()
    raise RuntimeError("the gateway did not become SERVING within 60 s")


@dataclass(frozen=True)
class RunningService:
    triton: TritonServer
    gateway: subprocess.Popen[bytes]
    target: str
    http_address: str  # host:port of the gateway's HTTP API
    triton_ready_s: float  # from launching Triton to every model ready: what an autoscaler waits for

    @property
    def triton_url(self) -> str:
        return self.triton.grpc_url

    def memory(self) -> Memory:
        """Triton with its stubs, and the gateway."""
        assert self.triton.process is not None
        return tree_memory([self.triton.process.pid, self.gateway.pid])


@contextlib.contextmanager
def running_service(repository: Path, log_file: Path) -> Iterator[RunningService]:
    """Triton on `repository` and a gateway process in front of it."""
    started = time.monotonic()
    server = start_triton(repository, log_file)
    ready_s = time.monotonic() - started
    try:
        http_address = f"127.0.0.1:{free_port()}"
        gateway, target = start_gateway(server.grpc_url, http_address)
        try:
            yield RunningService(server, gateway, target, http_address, ready_s)
        finally:
            gateway.terminate()
            gateway.wait(30)
    finally:
        server.stop()
