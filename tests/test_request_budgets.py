"""A request pays for what it costs: decoded pixels (per request, and per key per second) and bytes
(inline and fetched from image URLs, one budget), charged before Triton decodes anything."""

from __future__ import annotations

import base64
import concurrent.futures
import random
import socket
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image
from prometheus_client import REGISTRY

from clip_api import clip_service_pb2 as pb
from clip_client import (
    NO_RETRY,
    ClientConfig,
    ClipClient,
    ImageUrl,
    RateLimitedError,
    RequestTooLargeError,
    UnavailableError,
)
from gateway.config import GatewayConfig, Limits
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.images import encode
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton
from tests.support.web import ImageWebServer
from tests.test_http_api import http, raw_exchange
from tests.test_tenants import client_for, keys_file, refusals

SIDE = 100  # pixels per side of each test image: 10,000 decoded pixels
SQUARE = encode(Image.new("RGB", (SIDE, SIDE), (200, 30, 30)), "PNG")
PIXEL_BUDGET = 25_000  # two squares fit, three do not


def bad_request_fields(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            found += [(v.field, v.description) for v in request.field_violations]
    return found


def test_a_request_over_its_pixel_budget_is_refused_before_decoding(tiny_triton: LauncherTriton) -> None:
    """--max-request-pixels: the headers' width x height, summed over the request's images."""
    config = gateway_config(
        tiny_triton.grpc_url, http_listen="127.0.0.1:0", limits=Limits(max_request_pixels=PIXEL_BUDGET)
    )
    with servers.gateway(config) as gateway, grpc.insecure_channel(gateway.target) as channel:
        classify = channel.unary_unary(
            "/clip.v1.ClipService/Classify",
            request_serializer=pb.ClassifyRequest.SerializeToString,
            response_deserializer=pb.ClassifyResponse.FromString,
        )
        two = classify(pb.ClassifyRequest(images=[pb.Image(data=SQUARE)] * 2, labels=["red"]), timeout=60)
        assert all(result.status.code == 0 for result in two.results)
        with pytest.raises(grpc.RpcError) as refused:
            classify(pb.ClassifyRequest(images=[pb.Image(data=SQUARE)] * 3, labels=["red"]), timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert bad_request_fields(refused.value) == [
            ("images", f"30000 decoded pixels in all, more than the limit of {PIXEL_BUDGET} per request")
        ]
        with ClipClient(gateway.target) as client:
            info = client.model_info()
            assert info.limits.max_request_pixels == PIXEL_BUDGET
            with pytest.raises(RequestTooLargeError, match="decoded pixels in all"):
                client.embed(images=[SQUARE] * 3)
        uri = "data:image/png;base64," + base64.b64encode(SQUARE).decode()
        status, _, answer = http(
            gateway.http_base, "POST", "/v1/embeddings", {"model": info.model_id, "input": [uri] * 3}, key=None
        )
        assert status == 413 and answer["error"]["param"] == "input", answer


def test_a_key_limited_in_megapixels_is_refused_once_they_are_spent(
    tiny_triton: LauncherTriton, tmp_path: Path
) -> None:
    """--rate-limit-megapixels: a key saves up one request's pixel budget (25,000 pixels here) and
    refills 1,000 pixels a second; 20,000 fit, 10,000 more do not, and the refusal says why."""
    config = gateway_config(
        tiny_triton.grpc_url,
        api_keys_file=keys_file(tmp_path, "pixels", "others"),
        rate_limit_megapixels=0.001,
        limits=Limits(max_request_pixels=PIXEL_BUDGET),
    )
    with (
        servers.gateway(config) as gateway,
        client_for(gateway, "pixels") as pixels,
        client_for(gateway, "others") as others,
    ):
        before = refusals(gateway, ("pixels", "megapixels"))
        assert all(item.ok for item in pixels.classify([SQUARE] * 2, ["red"]))
        with pytest.raises(RateLimitedError, match="megapixels per second") as limited:
            pixels.classify(SQUARE, ["red"])
        assert limited.value.retry_after is not None and limited.value.retry_after > 1
        assert refusals(gateway, ("pixels", "megapixels"))[("pixels", "megapixels")] == (
            before[("pixels", "megapixels")] + 1
        )
        assert all(item.ok for item in others.classify([SQUARE] * 2, ["red"]))  # its own budget


def test_image_urls_share_the_request_byte_budget(tiny_triton: LauncherTriton, image_web: ImageWebServer) -> None:
    """--max-request-bytes bounds what a request's URL bodies hold together, not each one: four
    URLs of a photo each well under --max-image-bytes, with room for 2.5 of them, cannot all be
    fetched; the ones past the budget are those images' own errors, naming the limit."""
    photo = len(image_web.photo)
    budget = int(photo * 2.5)
    config = gateway_config(
        tiny_triton.grpc_url,
        image_urls=True,
        url_allowed_networks="127.0.0.2/32",
        limits=Limits(max_image_bytes=photo * 2, max_request_bytes=budget),
    )
    with servers.gateway(config) as gateway, ClipClient(gateway.target) as client:
        assert all(item.ok for item in client.classify([ImageUrl(image_web.url("/photo.png"))] * 2, ["red"]))
        results = client.classify([ImageUrl(image_web.url(f"/photo.png?n={n}")) for n in range(4)], ["red"])
    fetched = [item for item in results if item.ok]
    refused = [item for item in results if not item.ok]
    assert len(fetched) <= 2 and len(refused) >= 2
    for item in refused:
        assert item.error is not None and f"more than the limit of {budget} bytes" in str(item.error)


IN_FLIGHT = 1_000_000  # bytes of bodies the gateway below holds at once
STALLED = 600_000  # what one stalled upload holds of it


def inflight_bytes() -> float:
    return REGISTRY.get_sample_value("clip_gateway_inflight_bytes") or 0.0


def test_bodies_in_flight_share_one_budget_and_past_it_a_request_is_busy(tiny_triton: LauncherTriton) -> None:
    """--max-inflight-bytes: an upload that stalls after 600 KB holds them; a second upload that
    would pass the 1 MB in flight is refused as busy (429, Retry-After) while it streams in, not
    read to its end; once the first one's connection is gone its bytes are free again."""
    config = gateway_config(
        tiny_triton.grpc_url,
        http_listen="127.0.0.1:0",
        max_inflight_bytes=IN_FLIGHT,
        http_body_read_timeout=60.0,
        http_body_total_timeout=120.0,
    )
    head = (
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {STALLED + 200_000}\r\n\r\n"
    )
    with servers.gateway(config) as gateway:
        host, port = gateway.http_base.removeprefix("http://").split(":")
        before = inflight_bytes()
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(head.encode() + b" " * STALLED)
            wait_for(lambda: inflight_bytes() - before >= STALLED, 30, "the stalled upload's bytes being held")
            answer = raw_exchange(gateway.http_base, head, iter([b" " * 50_000] * 16))
            assert answer.startswith(b"HTTP/1.1 429"), answer[:300]
            assert b"retry-after: 1" in answer.lower() and b"--max-inflight-bytes" in answer
        wait_for(lambda: inflight_bytes() == before, 30, "the stalled upload's bytes given back")
        status, _, models = http(gateway.http_base, "GET", "/v1/models")
        status, _, answer_json = http(
            gateway.http_base, "POST", "/v1/embeddings", {"model": models["data"][0]["id"], "input": "a cat"}
        )
        assert status == 200, answer_json


def in_flight_url_gateway(triton: LauncherTriton, url_total_timeout: float) -> GatewayConfig:
    """A gateway holding IN_FLIGHT bytes at once that fetches from the test web server, whose URLs
    time out after `url_total_timeout` seconds (a stalled read alone never does)."""
    return gateway_config(
        triton.grpc_url,
        max_inflight_bytes=IN_FLIGHT,
        image_urls=True,
        url_allowed_networks="127.0.0.2/32",
        url_read_timeout=30.0,
        url_total_timeout=url_total_timeout,
    )


def test_grpc_messages_are_held_in_the_same_budget_until_their_call_ends(
    tiny_triton: LauncherTriton, image_web: ImageWebServer
) -> None:
    """A gRPC message counts in --max-inflight-bytes from its arrival to its call's end: while a
    call of 600 KB waits on a slow image URL, a second call of 500 KB is refused as busy (with a
    retry delay) before any of its work, a small one still passes, and once the first call is over
    the second goes through."""
    config = in_flight_url_gateway(tiny_triton, url_total_timeout=8.0)
    noise = random.Random(7)
    big = encode(Image.frombytes("RGB", (450, 450), noise.randbytes(450 * 450 * 3)), "PNG")  # ~600 KB
    second = encode(Image.frombytes("RGB", (400, 400), noise.randbytes(400 * 400 * 3)), "PNG")  # ~480 KB
    assert len(big) >= STALLED and len(big) + len(second) > IN_FLIGHT
    with (
        servers.gateway(config) as gateway,
        ClipClient(config=ClientConfig(target=gateway.target, retry=NO_RETRY, timeout=30)) as client,
    ):
        before = inflight_bytes()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(client.classify, [big, ImageUrl(image_web.url("/slow-headers"))], ["cat"])
            wait_for(lambda: inflight_bytes() - before >= len(big), 30, "the first call's message being held")
            with pytest.raises(UnavailableError) as refused:
                client.classify(second, ["cat"])
            assert "--max-inflight-bytes" in refused.value.details and refused.value.retry_after == 1.0
            assert client.classify(SQUARE, ["cat"])[0].ok  # a small call fits beside the held one
            results = held.result(60)
        assert results[0].ok and not results[1].ok  # the URL timed out; the message was held all along
        wait_for(lambda: inflight_bytes() == before, 30, "the first call's bytes given back")
        assert client.classify(second, ["cat"])[0].ok
        with pytest.raises(RequestTooLargeError, match="--max-inflight-bytes"):  # could never fit: not busy
            client.classify(big + second, ["cat"])


def test_image_url_bodies_are_held_in_the_same_budget_while_they_are_fetched(
    tiny_triton: LauncherTriton, image_web: ImageWebServer
) -> None:
    """A URL body counts in --max-inflight-bytes as it arrives: while one call's URL has sent 600 KB
    and stalls, another call whose URL would pass the 1 MB is refused as busy once it would (not
    after its own timeout), a small URL still passes, and the stalled bytes come back at its end."""
    config = in_flight_url_gateway(tiny_triton, url_total_timeout=15.0)
    with (
        servers.gateway(config) as gateway,
        ClipClient(config=ClientConfig(target=gateway.target, retry=NO_RETRY, timeout=30)) as client,
    ):
        before = inflight_bytes()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(client.classify, ImageUrl(image_web.url(f"/stalls?n={STALLED}")), ["cat"])
            wait_for(lambda: inflight_bytes() - before >= STALLED, 30, "the stalled body's bytes being held")
            started = time.monotonic()
            with pytest.raises(UnavailableError) as refused:
                client.classify(ImageUrl(image_web.url("/stalls?n=500000")), ["cat"])
            assert time.monotonic() - started < 10  # refused at the limit, not at its 15 s fetch timeout
            assert "--max-inflight-bytes" in refused.value.details and refused.value.retry_after == 1.0
            assert client.classify(ImageUrl(image_web.url("/photo.png")), ["cat"])[0].ok
            assert not held.result(60)[0].ok  # its URL timed out
        wait_for(lambda: inflight_bytes() == before, 30, "the stalled body's bytes given back")
