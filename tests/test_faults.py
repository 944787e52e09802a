"""Faults: a Python-backend stub killed, Triton killed under load. The launcher's supervision
brings Triton back; the gateway answers UNAVAILABLE meanwhile, never hangs, reports NOT_SERVING,
and serves again without being restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError
from launcher.server import free_port
from launcher.supervisor import child_pids
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.infer import classify
from tests.support.triton import ROOT
from tests.test_model_parity import photo_bytes


class SupervisedTriton:
    """`python -m launcher` as a user runs it: its own process, supervising Triton."""

    def __init__(self, repository: Path, log_file: Path) -> None:
        self.grpc_port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launcher",
                "--model-repository",
                str(repository),
                "--grpc-port",
                str(self.grpc_port),
                "--http-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
                "--log-file",
                str(log_file),
            ],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        assert "Triton ready" in line, line
        self.url = f"127.0.0.1:{self.grpc_port}"

    def triton_pid(self) -> int:
        (pid,) = child_pids(self.process.pid)
        return pid

    def stub_pid(self, model: str) -> int:
        for pid in child_pids(self.triton_pid()):
            if f"/{model}/" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
        raise AssertionError(f"no stub for {model}")

    def wait_working(self, timeout: float = 120.0) -> float:
        """Seconds until a classification through Triton succeeds again."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                with grpcclient.InferenceServerClient(self.url) as client:
                    classify(client, photo_bytes()[:1], ["cat"])
                return time.monotonic() - started
            except Exception:
                time.sleep(0.5)
        raise AssertionError("Triton did not come back")

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        assert self.process.stderr is not None
        return self.process.stderr.read()


@pytest.fixture
def supervised(tiny_repository: Path, tmp_path: Path) -> Iterator[SupervisedTriton]:
    triton = SupervisedTriton(tiny_repository, tmp_path / "triton.log")
    yield triton
    if triton.process.poll() is None:
        triton.stop()


def test_killed_stub_is_noticed_and_triton_restarted(supervised: SupervisedTriton) -> None:
    before = supervised.triton_pid()
    os.kill(supervised.stub_pid("clip_similarity"), signal.SIGKILL)
    recovery = supervised.wait_working()
    assert supervised.triton_pid() != before
    print(f"stub killed: classification works again after {recovery:.1f}s")
    assert "stub(s)" in supervised.stop() and supervised.process.returncode == 0


def test_gateway_rides_out_a_triton_kill_under_load(supervised: SupervisedTriton) -> None:
    gateway = GatewayThread(gateway_config(supervised.url))
    gateway.wait_ready()
    outcomes: Counter[str] = Counter()
    slowest = [0.0]
    stop = threading.Event()

    def load() -> None:
        with ClipClient(config=ClientConfig(target=gateway.target, timeout=10, retry=NO_RETRY)) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    client.classify(photo_bytes()[:2], ["cat", "dog", "rocket"])
                    outcomes["OK"] += 1
                except ClipError as error:
                    outcomes[error.code.name] += 1
                slowest[0] = max(slowest[0], time.monotonic() - started)

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        os.kill(supervised.triton_pid(), signal.SIGKILL)
        killed = time.monotonic()
        gateway.wait_ready(False, timeout=10)  # NOT_SERVING while Triton is down
        gateway.wait_ready(True, timeout=120)  # and SERVING again, same gateway
        recovered = time.monotonic() - killed
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        gateway.stop()
    print(
        f"Triton SIGKILL under load: outcomes {dict(outcomes)}, serving again after {recovered:.1f}s, "
        f"slowest call {slowest[0]:.2f}s"
    )
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes
    assert outcomes["UNAVAILABLE"] > 0 and outcomes["OK"] > 0
    assert slowest[0] < 10.5  # every call ended within its deadline: none hung
