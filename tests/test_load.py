"""A short, bounded load test on loopback (the full one is `python -m bench.load`): 32 concurrent
clients, zero failed requests of any kind, gateway memory growth bounded."""

from __future__ import annotations

from pathlib import Path

from bench.load import run_load
from tests.support import servers
from tests.support.servers import LauncherTriton

# Measured on the project's 2-core machines (tiny model, 15 s, 32 clients): 1,947-1,954 requests,
# of which ~1,300 after the warm-up third, and 0.6-1.4 MB of gateway RSS growth over those.
MIN_REQUESTS = 500  # 4x below what was measured: a loaded machine still passes, a stall does not
# 6x the measured growth. It catches anything that keeps ~6 kB per request (a request's image is
# 15 kB and more); smaller leaks need the long run (`python -m bench.load`: 0.01 MB per 10,000).
MAX_GROWTH_BYTES = 8 * 2**20


def test_32_concurrent_clients_without_a_failure(tiny_triton: LauncherTriton, tmp_path: Path) -> None:
    with servers.gateway_process(tiny_triton.grpc_url, tmp_path, "--log-level=WARNING") as gateway:
        report = run_load(gateway.target, gateway.pid, concurrency=32, seconds=15, max_requests=5000)
    print(report.summary())
    assert report.failures == {}, report.summary()
    assert report.requests >= MIN_REQUESTS
    assert report.rss_end - report.rss_start < MAX_GROWTH_BYTES
