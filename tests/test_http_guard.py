"""Unit tests of small pieces of the HTTP layer and the gateway's admission: the Guard's key check
(driven as an ASGI callable), the work slots, and the gateway settings that turn things on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.admission import Admission, Busy, RateLimited, WorkSlots
from gateway.auth import TENANT, ApiKeys
from gateway.config import GatewayConfig, parse
from gateway.http_api.guard import Guard, route_label


class BlockingApp:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(
    app: Any, path: str = "/v1/models", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or []}
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def test_the_work_slots_refuse_at_once_and_come_back() -> None:
    async def scenario() -> None:
        slots = WorkSlots(2, retry_after=1.5)
        async with slots.slot(), slots.slot():
            with pytest.raises(Busy, match="limit of 2") as busy:
                async with slots.slot():
                    raise AssertionError("a third slot was given")
            assert busy.value.retry_after == 1.5
        async with slots.slot():  # the slots came back
            assert slots.used == 1
        assert slots.used == 0

    asyncio.run(scenario())


def test_a_call_refused_a_slot_spends_none_of_its_keys_rate() -> None:
    """Admission.enter: slots first, then the key's rate; a busy refusal costs no rate tokens, and a
    call over its rate gives its slot back."""

    async def scenario() -> None:
        admission = Admission(
            GatewayConfig(max_concurrent_rpcs=1, rate_limit_requests=1.0, rate_limit_burst_seconds=1.0)
        )
        TENANT.set("tenant-b")
        async with admission.enter(1, 0):  # tenant-b holds the only slot
            TENANT.set("tenant-a")
            for _ in range(3):
                with pytest.raises(Busy):
                    async with admission.enter(1, 0):
                        raise AssertionError("a second slot was given")
        assert admission.slots.used == 0
        async with admission.enter(1, 0):  # tenant-a's one saved-up request was not spent by the refusals
            pass
        with pytest.raises(RateLimited):  # ... and now it is
            async with admission.enter(1, 0):
                raise AssertionError("admitted over the key's rate")
        assert admission.slots.used == 0  # the call over its rate gave its slot back

    asyncio.run(scenario())


def test_keys_are_required_except_on_open_paths() -> None:
    async def scenario() -> None:
        inner = BlockingApp()
        inner.release.set()
        guard = Guard(inner, keys=ApiKeys([("k1", "k1")]), max_body_bytes=1000)
        assert (await call(guard))[0] == 401
        assert (await call(guard, headers=[(b"authorization", b"Bearer k2")]))[0] == 401
        assert (await call(guard, headers=[(b"authorization", b"Bearer k1")]))[0] == 200
        twice = [(b"authorization", b"Bearer k1"), (b"authorization", b"Bearer k1")]
        assert (await call(guard, headers=twice))[0] == 401  # as over gRPC: which one counts is no guess
        assert (await call(guard, path="/v1/health/ready"))[0] == 200

    asyncio.run(scenario())


def test_metric_routes_are_bounded() -> None:
    assert route_label("/v1/embeddings") == "/v1/embeddings"
    assert route_label("/v1/models/openai/clip-vit-base-patch16") == "/v1/models/{id}"
    assert route_label("/wp-admin/../../etc/passwd") == "other"


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, False),
        (["--image-urls"], {}, True),
        ([], {"CLIP_GATEWAY_IMAGE_URLS": "true"}, True),
        (["--no-image-urls"], {"CLIP_GATEWAY_IMAGE_URLS": "1"}, False),
        ([], {"CLIP_GATEWAY_IMAGE_URLS": "off"}, False),
    ],
)
def test_image_urls_setting(argv: list[str], env: dict[str, str], expected: bool) -> None:
    assert parse(argv, env).image_urls is expected


def test_a_mistyped_boolean_is_an_error() -> None:
    with pytest.raises(ValueError, match="CLIP_GATEWAY_IMAGE_URLS"):
        parse([], {"CLIP_GATEWAY_IMAGE_URLS": "sometimes"})
