"""A short, bounded load test on loopback (the full one is `python -m bench.load`): 32 concurrent
clients, zero failed requests, gateway memory growth bounded."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from bench.__main__ import start_gateway
from bench.load import run_load
from launcher.server import TritonServer


@pytest.fixture
def gateway_process(tiny_triton: TritonServer) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    process, target = start_gateway(tiny_triton.grpc_url)
    yield process, target
    process.terminate()
    process.wait(30)


def test_32_concurrent_clients_without_a_failure(gateway_process: tuple[subprocess.Popen[bytes], str]) -> None:
    process, target = gateway_process
    report = run_load(target, process.pid, concurrency=32, seconds=15, max_requests=5000)
    print(report.summary())
    assert report.requests > 100
    assert report.failures == {}
    assert report.growth_per_10k < 20 * 2**20  # bounded: under 20 MB per 10,000 requests after warm-up
