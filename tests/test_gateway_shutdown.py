"""SIGTERM to a gateway process: the call in flight finishes, new calls are refused, and the
process exits within its grace period."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError
from launcher.server import TritonServer, free_port
from tests.support.triton import ROOT
from tests.test_model_parity import photo_bytes


def wait_serving(target: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError("gateway never became SERVING")


def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(tiny_triton: TritonServer) -> None:
    target = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "--listen",
            target,
            "--triton-url",
            tiny_triton.grpc_url,
            "--shutdown-grace",
            "20",
            "--max-labels",
            "20000",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_serving(target)
        outcome: dict[str, object] = {}
        # Long enough to still be running when SIGTERM lands: 32 images x 20,000 fresh labels.
        labels = [f"shutdown drain label {i}" for i in range(20000)]

        def long_call() -> None:
            with ClipClient(config=ClientConfig(target=target, timeout=120, retry=NO_RETRY)) as client:
                try:
                    outcome["result"] = client.classify(photo_bytes()[:1] * 32, labels)
                except ClipError as error:
                    outcome["error"] = error

        worker = threading.Thread(target=long_call)
        worker.start()
        time.sleep(0.5)  # the call is in flight
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        with (
            ClipClient(config=ClientConfig(target=target, timeout=5, retry=NO_RETRY)) as client,
            pytest.raises(ClipError),
        ):
            client.model_info()
        worker.join(120)
        assert "error" not in outcome, outcome.get("error")
        assert all(item.ok for item in outcome["result"])  # type: ignore[attr-defined]
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - sent < 20 + 5
    finally:
        if process.poll() is None:
            process.kill()
