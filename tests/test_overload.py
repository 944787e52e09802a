"""Overload and deadlines: past the concurrency cap callers get RESOURCE_EXHAUSTED at once instead
of piling up; a deadline shorter than the work ends the call promptly and the gateway's in-flight
count returns to zero."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import REGISTRY

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError, DeadlineExceededError
from launcher.server import TritonServer
from tests.corpus.bad_inputs import GOOD as SMALL
from tests.support.gateway import GatewayThread, gateway_config
from tests.test_model_parity import photo_bytes


def in_flight(method: str = "Classify") -> float:
    return REGISTRY.get_sample_value("clip_gateway_in_flight_requests", {"method": method}) or 0.0


def wait_in_flight_zero(timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while in_flight() != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return in_flight()


def test_calls_past_the_concurrency_cap_are_refused_quickly(tiny_triton: TritonServer) -> None:
    gateway = GatewayThread(gateway_config(tiny_triton.grpc_url, max_concurrent_rpcs=2))
    gateway.wait_ready()
    labels = [f"overload label {i}" for i in range(1000)]

    def one(index: int) -> tuple[str, float]:
        started = time.monotonic()
        with ClipClient(config=ClientConfig(target=gateway.target, timeout=60, retry=NO_RETRY)) as client:
            try:
                client.classify([SMALL] * 16, [f"{label} {index}" for label in labels])
                return "OK", time.monotonic() - started
            except ClipError as error:
                return error.code.name, time.monotonic() - started

    try:
        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(one, range(12)))
    finally:
        gateway.stop()
    codes = [code for code, _ in outcomes]
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"} and "RESOURCE_EXHAUSTED" in codes and "OK" in codes
    refused = [seconds for code, seconds in outcomes if code == "RESOURCE_EXHAUSTED"]
    assert max(refused) < 1.0  # refused at once, not after queueing
    assert wait_in_flight_zero() == 0


def test_short_deadline_ends_promptly_and_in_flight_returns_to_zero(tiny_gateway: GatewayThread) -> None:
    with ClipClient(config=ClientConfig(target=tiny_gateway.target, retry=NO_RETRY)) as client:
        started = time.monotonic()
        try:
            client.classify(photo_bytes()[:1] * 32, [f"deadline label {i}" for i in range(1000)], timeout=0.3)
            raise AssertionError("the call should not finish within 0.3 s")
        except DeadlineExceededError:
            pass
        assert time.monotonic() - started < 1.5
    assert wait_in_flight_zero() == 0


def test_a_cancelled_call_cancels_its_triton_request(tiny_triton: TritonServer) -> None:
    """Triton counts the ensemble request as cancelled, not successful. (Steps of the ensemble
    that were already scheduled still run: Triton 2.51 does not pass the cancellation on to
    composing requests, so their models see is_cancelled() false.)"""
    import asyncio
    import re
    import urllib.request

    from clip_client import AsyncClipClient
    from gateway.config import Limits

    def classify_successes() -> float:
        text = urllib.request.urlopen(tiny_triton.metrics_url, timeout=10).read().decode()
        match = re.search(r'^nv_inference_request_success\{model="clip_classify",version="1"\} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    limits = Limits(max_labels=20000, max_prompts=100_000)
    gateway = GatewayThread(gateway_config(tiny_triton.grpc_url, limits=limits))
    gateway.wait_ready()
    templates = [f"picture {j} of a {{}}" for j in range(5)]  # 100,000 new prompts: ~5 s uncancelled

    async def scenario() -> tuple[float, float, float]:
        async with AsyncClipClient(config=ClientConfig(target=gateway.target, retry=NO_RETRY, timeout=120)) as client:
            start = classify_successes()
            await client.classify(photo_bytes()[:1], ["warm"])
            after_one = classify_successes()
            labels = [f"cancelled {i}" for i in range(20000)]
            call = asyncio.create_task(client.classify([SMALL] * 8, labels, templates=templates))
            await asyncio.sleep(1.5)  # the call is in Triton, encoding new prompts
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            await asyncio.sleep(10)  # longer than the whole call would have taken
            return start, after_one, classify_successes()

    try:
        start, after_one, after_cancel = asyncio.run(scenario())
    finally:
        gateway.stop()
    assert after_one == start + 1
    assert after_cancel == after_one
    assert wait_in_flight_zero() == 0
