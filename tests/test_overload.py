"""Overload and deadlines: past the concurrency cap callers are refused at once instead of piling
up; a deadline shorter than the work reaches the gateway, ends the call, and the gateway's
in-flight count returns to zero; a cancelled call cancels its Triton request."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image
from prometheus_client import REGISTRY

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from clip_client import NO_RETRY, AsyncClipClient, ClientConfig, ClipClient, DeadlineExceededError
from gateway import observability
from gateway.config import Limits
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.images import SMALL_JPEG, encode
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton


def gateway_sample(name: str, **labels: str) -> float:
    """A series of the in-process gateways' registry (0 when it does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def in_flight(method: str = "Classify") -> float:
    return gateway_sample("clip_gateway_in_flight_requests", method=method)


def retry_delay(error: grpc.RpcError) -> float | None:
    """The google.rpc.RetryInfo delay an error carries, in seconds."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToMilliseconds()) / 1000
    return None


def test_calls_past_the_concurrency_cap_are_refused_as_busy_without_queueing(tiny_triton: LauncherTriton) -> None:
    """Refused calls end while the admitted ones are still running (had they queued for a slot,
    they would end only after an admitted call freed one), as UNAVAILABLE with a retry delay."""
    labels = [f"overload label {uuid.uuid4().hex[:8]} {i}" for i in range(1000)]
    requests = [  # built before any clock
        pb.ClassifyRequest(images=[pb.Image(data=SMALL_JPEG)] * 16, labels=[f"{label} {index}" for label in labels])
        for index in range(12)
    ]
    with servers.gateway(gateway_config(tiny_triton.grpc_url, max_concurrent_rpcs=2)) as gateway:
        start = threading.Barrier(12)

        def one(index: int) -> tuple[str, float, float | None]:
            with grpc.insecure_channel(gateway.target) as channel:
                stub = clip_service_pb2_grpc.ClipServiceStub(channel)
                start.wait()
                try:
                    stub.Classify(requests[index], timeout=60)
                    return "OK", time.monotonic(), None
                except grpc.RpcError as error:
                    return error.code().name, time.monotonic(), retry_delay(error)

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(one, range(12)))
    codes = [code for code, _, _ in outcomes]
    assert set(codes) == {"OK", "UNAVAILABLE"} and codes.count("OK") >= 2, codes
    first_admitted_end = min(ended for code, ended, _ in outcomes if code == "OK")
    assert all(ended < first_admitted_end for code, ended, _ in outcomes if code == "UNAVAILABLE")
    assert all(delay is not None and delay > 0 for code, _, delay in outcomes if code == "UNAVAILABLE")
    wait_for(lambda: in_flight() == 0, 10, "in-flight back to zero")


DEADLINE = 2.0  # long enough that a loaded machine still starts the handler within it


def classify_codes() -> dict[str, float]:
    """The in-process gateways' finished Classify calls so far, by code."""
    return {
        sample.labels["code"]: sample.value
        for family in REGISTRY.collect()
        if family.name == "clip_gateway_requests"
        for sample in family.samples
        if sample.name == "clip_gateway_requests_total" and sample.labels["method"] == "Classify"
    }


def next_classify_code(before: dict[str, float]) -> str:
    """The code of the one Classify call the gateway finishes after `before` was read: waits (the
    event, not a time) until its count has grown by one, and checks no other call ended."""
    wait_for(lambda: sum(classify_codes().values()) > sum(before.values()), 60, "the gateway finishing the call")
    after = classify_codes()
    grown = {code: after[code] - before.get(code, 0.0) for code in after if after[code] != before.get(code, 0.0)}
    assert list(grown.values()) == [1.0], grown
    return next(iter(grown))


def heavy_classify(tag: str) -> tuple[list[bytes], list[str], list[str]]:
    """Images, labels and templates of a call far longer than DEADLINE on any machine: 32 PNGs of
    12 Mpx (about 8 s of decoding on a 2-core Xeon) and 10,000 new prompts of about 40 tokens
    (1,000 labels no cache holds, 10 templates). The photos and prompts alone were not enough: on a
    2-core Xeon with AMX, once numpy ran on one BLAS thread, 32 small photos and the prompts
    finished inside the 2 s. Triton stops what such a call started at its next check past the
    deadline (test_a_call_out_of_time_stops_being_decoded), so the test's wait for it stays short."""
    words = " ".join(["with a long description of its colours and shapes"] * 3)
    labels = [f"{tag} {uuid.uuid4().hex[:8]} {i} {words}" for i in range(1000)]
    return large_pngs(32), labels, [f"photo {j} of a {{}}" for j in range(10)]


def test_short_deadline_reaches_the_gateway_and_ends_the_call(
    tiny_gateway: GatewayThread, tiny_triton: LauncherTriton
) -> None:
    """The call ends at its deadline, and the gateway counts it as DEADLINE_EXCEEDED (the caller's
    deadline fires first and cancels the stream: the gateway sees a cancellation at its own
    deadline, give or take the headers' trip, observability.deadline_slack)."""
    request_images, labels, templates = heavy_classify("deadline label")
    wait_for(lambda: in_flight() == 0, 60, "earlier calls ending")
    before = classify_codes()
    with ClipClient(config=ClientConfig(target=tiny_gateway.target, retry=NO_RETRY)) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.classify(request_images, labels, templates=templates, timeout=DEADLINE)
        # a protocol deadline: the call ends at it (a loose bound: a loaded 2-core machine)
        assert time.monotonic() - started < DEADLINE + 5
    assert next_classify_code(before) == "DEADLINE_EXCEEDED"
    wait_for(lambda: in_flight() == 0, 10, "in-flight back to zero")
    started = time.monotonic()
    tiny_triton.wait_idle(timeout=300)  # what the call started in Triton, finished before the next test
    print(f"Triton went on for {time.monotonic() - started:.1f} s after the deadline")


def test_a_call_cancelled_well_before_its_deadline_is_counted_cancelled(
    tiny_gateway: GatewayThread, tiny_triton: LauncherTriton
) -> None:
    """The other side of the deadline accounting: a caller that goes away with most of a long
    deadline left is CANCELLED, not DEADLINE_EXCEEDED."""
    request_images, labels, templates = heavy_classify("cancel label")
    wait_for(lambda: in_flight() == 0, 60, "earlier calls ending")
    before = classify_codes()

    async def scenario() -> None:
        config = ClientConfig(target=tiny_gateway.target, retry=NO_RETRY, timeout=120)
        async with AsyncClipClient(config=config) as client:
            call = asyncio.create_task(client.classify(request_images, labels, templates=templates))
            while in_flight() == 0:  # the gateway's handler has started
                assert not call.done(), "the call ended before the gateway ran it"
                await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    asyncio.run(scenario())
    assert next_classify_code(before) == "CANCELLED"
    wait_for(lambda: in_flight() == 0, 10, "in-flight back to zero")
    tiny_triton.wait_idle(timeout=300)


@pytest.mark.parametrize(
    ("budget", "remaining", "expired"),
    [
        (None, None, False),  # no deadline: always the caller going away
        (2.0, 1.6, False),  # most of it left
        (2.0, 0.4, True),  # within a quarter of a 2 s budget: the skew of a loaded machine
        (0.1, 0.04, True),  # short deadlines: 50 ms
        (0.1, 0.06, False),
        (60.0, 1.5, False),  # long ones: at most 1 s
        (60.0, 0.9, True),
        (2.0, -0.1, True),  # past it
    ],
)
def test_a_cancellation_is_the_deadline_only_near_it(
    budget: float | None, remaining: float | None, expired: bool
) -> None:
    assert observability.deadline_passed(budget, remaining) is expired


def test_a_cancelled_call_cancels_its_triton_request(tiny_triton: LauncherTriton) -> None:
    """Triton counts the ensemble request as failed (cancelled), never as successful, and the last
    step (similarity) never runs for it. (Steps already scheduled still run: Triton 2.51 does not
    pass a cancellation on to composing requests.)"""
    limits = Limits(max_labels=20000, max_prompts=100_000)
    templates = [f"picture {j} of a {{}}" for j in range(5)]  # 100,000 new prompts: seconds of work

    def count(name: str, model: str) -> float:
        return sum(
            value
            for (metric, labels), value in servers.scrape(tiny_triton.metrics_url).items()
            if metric == name and ("model", model) in labels and ("version", "1") in labels
        )

    def counts() -> dict[str, float]:
        return {
            "ok": count("nv_inference_request_success", "clip_classify"),
            "failed": count("nv_inference_request_failure", "clip_classify"),
            "similarity": count("nv_inference_request_success", "clip_similarity"),
            "images": count("nv_inference_request_success", "clip_preprocess_image"),
        }

    with servers.gateway(gateway_config(tiny_triton.grpc_url, limits=limits)) as gateway:

        async def scenario() -> None:
            config = ClientConfig(target=gateway.target, retry=NO_RETRY, timeout=120)
            async with AsyncClipClient(config=config) as client:
                loop = asyncio.get_running_loop()
                # Earlier tests' calls may still run inside Triton (a call past its deadline does).
                await loop.run_in_executor(None, tiny_triton.wait_idle)
                start = counts()
                await client.classify(SMALL_JPEG, ["warm"])
                # Triton records a request's statistics after it has answered it: wait until the
                # warm call is counted, or its late count passes for the cancelled call's.
                await loop.run_in_executor(
                    None,
                    lambda: wait_for(
                        lambda: all(counts()[key] == start[key] + 1 for key in ("ok", "similarity", "images")),
                        30,
                        "Triton counting the warm call",
                    ),
                )
                before = counts()
                labels = [f"cancelled {uuid.uuid4().hex[:8]} {i}" for i in range(20000)]
                call = asyncio.create_task(client.classify([SMALL_JPEG] * 8, labels, templates=templates))
                # In flight inside Triton: its images are done, its prompts are not.
                while count("nv_inference_request_success", "clip_preprocess_image") == before["images"]:
                    assert not call.done(), "the call ended before it was seen in Triton"
                    await asyncio.sleep(0.02)
                assert count("nv_inference_request_success", "clip_classify") == before["ok"]
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call  # cancelled while pending, not already answered
                await loop.run_in_executor(
                    None,
                    lambda: wait_for(
                        lambda: count("nv_inference_request_failure", "clip_classify") > before["failed"],
                        60,
                        "Triton ending the cancelled ensemble request",
                    ),
                )
                assert count("nv_inference_request_success", "clip_classify") == before["ok"]
                assert count("nv_inference_request_success", "clip_similarity") == before["similarity"]

        asyncio.run(scenario())
    wait_for(lambda: in_flight() == 0, 10, "in-flight back to zero")


@functools.cache
def large_pngs(count: int, width: int = 4000, height: int = 3000) -> list[bytes]:
    """`count` different 12-megapixel PNGs, small in bytes (gradients) but costly to decode."""
    gradient = Image.linear_gradient("L").resize((width, height))
    return [encode(Image.merge("RGB", (gradient, gradient.rotate(n), gradient)), "PNG") for n in range(count)]


def test_a_call_out_of_time_stops_being_decoded(tiny_gateway: GatewayThread, tiny_triton: LauncherTriton) -> None:
    """The caller's time left goes to Triton as a request parameter (parameters.TIME_LEFT_US),
    which Triton forwards to an ensemble's steps where it does not forward the cancellation:
    preprocessing stops at the next check past it (between images, and between an image's
    decode, convert and resize). Before, Triton decoded all 32 images for nobody: it went on for
    about 8 times as long as 4 of them take; now for less than 4 of them, whatever the machine's
    load, as both are measured in this run."""
    request_images = large_pngs(32)
    tiny_triton.wait_idle(timeout=300)
    with ClipClient(config=ClientConfig(target=tiny_gateway.target, retry=NO_RETRY)) as client:
        with pytest.raises(DeadlineExceededError):
            client.embed(images=request_images, timeout=1.0)
        started = time.monotonic()
        tiny_triton.wait_idle(timeout=300, quiet=0.5)
        went_on = time.monotonic() - started
        started = time.monotonic()
        assert len(client.embed(images=request_images[:4], timeout=120).images) == 4
        four = time.monotonic() - started
    print(f"32 x 12 Mpx PNGs, 1 s deadline: Triton went on for {went_on:.1f} s after it; 4 of them take {four:.1f} s")
    assert went_on < 4 * four, (
        f"Triton went on for {went_on:.1f} s, as long as {went_on / four * 4:.0f} of the images take"
    )
