"""API keys with names: the keys file format, usage per key name in the metrics (never the key),
per-key rate limits answered as retryable, and unauthenticated calls refused unparsed."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clip_client import NO_RETRY, ClientConfig, ClipClient, ImageUrl, RateLimitedError
from gateway.auth import KeysFileError, load_keys
from gateway.config import Limits
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.images import SMALL_JPEG
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton
from tests.support.web import ImageWebServer
from tests.test_http_api import http

KEYS = "# tenants\nsearch: k#1 with spaces: and colons\nbilling:billing-key\n"


def test_keys_file_takes_any_printable_character(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(KEYS)
    keys = load_keys(keys_file, "ops: ops-key")
    assert keys.tenant("Bearer k#1 with spaces: and colons") == "search"  # "#" no longer cuts the key
    assert keys.tenant("Bearer ops-key") == "ops"  # the key given beside the file counts too
    longest = "k" * 505  # what a 512-character header carries after "Bearer "
    assert load_keys(None, f"long: {longest}").tenant(f"Bearer {longest}") == "long"
    assert keys.tenant("Bearer k") is None and keys.tenant("Bearer billing-key") == "billing"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("bad name!: key\n", "is not a key name"),
        ("a: one\na: two\n", "repeated: a"),
        ("a:\n", "the key is empty"),
        ("anonymous: a-key\n", "'anonymous' is reserved"),
        ("long: " + "k" * 506 + "\n", "the key is 506 characters; an authorization header carries at most 505"),
        ("# only a comment\n\n", "holds no keys: write `name: key` lines, or pass --allow-no-keys"),
    ],
)
def test_keys_file_mistakes_are_refused_with_the_line(tmp_path: Path, text: str, problem: str) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(text)
    with pytest.raises(KeysFileError, match=re.escape(problem)):
        load_keys(keys_file, None)


def test_an_empty_keys_file_opens_the_gateway_only_when_asked(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# no keys yet\n")
    assert not load_keys(keys_file, None, allow_no_keys=True)


@pytest.fixture(scope="module")
def keyed(tiny_triton: LauncherTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    keys_file = tmp_path_factory.mktemp("keys") / "keys"
    keys_file.write_text(KEYS)
    config = gateway_config(
        tiny_triton.grpc_url,
        api_keys_file=str(keys_file),
        http_listen="127.0.0.1:0",
        rate_limit_requests=2.0,
        rate_limit_burst_seconds=1.0,
    )
    with servers.gateway(config) as gateway:
        yield gateway


def test_usage_is_counted_per_key_name_never_per_key(keyed: GatewayThread) -> None:
    def images(tenant: str) -> float:
        return servers.metric(keyed.metrics_url, "clip_gateway_tenant_images_total", tenant=tenant)

    before = images("billing")
    with ClipClient(config=ClientConfig(target=keyed.target, api_key="billing-key")) as client:
        assert all(item.ok for item in client.classify([SMALL_JPEG] * 3, ["cat"]))
    assert images("billing") == before + 3
    exposition = urllib_text(keyed.metrics_url)
    assert 'tenant="billing"' in exposition and "billing-key" not in exposition and "k#1" not in exposition
    requests = servers.metric(
        keyed.metrics_url, "clip_gateway_tenant_requests_total", tenant="billing", method="Classify", code="OK"
    )
    assert requests >= 1


def urllib_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_a_key_over_its_rate_is_told_when_to_retry(keyed: GatewayThread) -> None:
    config = ClientConfig(target=keyed.target, api_key="k#1 with spaces: and colons", retry=NO_RETRY)
    with ClipClient(config=config) as client:
        with pytest.raises(RateLimitedError) as limited:
            for _ in range(10):  # 2 per second, a burst of 2
                client.model_info()
                client.classify(SMALL_JPEG, ["cat"])
        assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 1.0
        assert "search" in str(limited.value)
    # the same over HTTP: 429 with Retry-After, this key's name in the message
    image = "data:image/jpeg;base64," + base64.b64encode(SMALL_JPEG).decode()
    statuses = []
    for _ in range(6):
        status, headers, answer = http(
            keyed.http_base,
            "POST",
            "/v1/classifications",
            {"image": image, "labels": ["cat"]},
            key="billing-key",
        )
        statuses.append(status)
        if status == 429:
            assert answer["error"]["code"] == "rate_limited" and int(headers["retry-after"]) >= 1
            break
    assert statuses[-1] == 429, statuses
    # with retries on, the client waits as told and gets through
    with ClipClient(config=ClientConfig(target=keyed.target, api_key="billing-key", timeout=30)) as client:
        for _ in range(4):
            assert client.classify(SMALL_JPEG, ["cat"])[0].ok


def test_rate_limit_details_are_data(keyed: GatewayThread) -> None:
    metadata = (("authorization", "Bearer billing-key"),)
    with grpc.insecure_channel(keyed.target) as channel:
        from clip_api import clip_service_pb2 as pb
        from clip_api import clip_service_pb2_grpc

        stub = clip_service_pb2_grpc.ClipServiceStub(channel)
        request = pb.ClassifyRequest(images=[pb.Image(data=SMALL_JPEG)], labels=["cat"])
        error = None
        for _ in range(10):
            try:
                stub.Classify(request, metadata=metadata, timeout=30)
            except grpc.RpcError as raised:
                error = raised
                break
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    kinds = set()
    for detail in status.details:
        for kind in (error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                kinds.add(kind.__name__)
    assert kinds == {"QuotaFailure", "RetryInfo"}


def keys_file(folder: Path, *names: str) -> str:
    """A keys file giving each name the key `<name>-key`."""
    path = folder / "keys"
    path.write_text("".join(f"{name}: {name}-key\n" for name in names))
    return str(path)


def client_for(gateway: GatewayThread, name: str) -> ClipClient:
    return ClipClient(config=ClientConfig(target=gateway.target, api_key=f"{name}-key", retry=NO_RETRY, timeout=30))


def refusals(gateway: GatewayThread, *series: tuple[str, str]) -> dict[tuple[str, str], float]:
    """clip_gateway_rate_limited_total for each (tenant, limit)."""
    samples = servers.scrape(gateway.metrics_url)
    return {
        (tenant, limit): samples.get(
            ("clip_gateway_rate_limited_total", frozenset({("tenant", tenant), ("limit", limit)})), 0.0
        )
        for tenant, limit in series
    }


def test_each_key_has_its_own_bucket_on_the_same_protocol(tiny_triton: LauncherTriton, tmp_path: Path) -> None:
    """Two keys over gRPC: one key spending its whole bucket takes nothing from the other's. One
    request per 100 s and a burst of one request: a key's second call is refused (no refill can
    come in time), and the other key's first call still passes; a bucket shared by every key
    would refuse it."""
    config = gateway_config(
        tiny_triton.grpc_url,
        api_keys_file=keys_file(tmp_path, "alpha", "beta"),
        rate_limit_requests=0.01,
        rate_limit_burst_seconds=1.0,  # capacity max(0.01 x 1, one request) = 1
    )
    series = [("alpha", "requests"), ("beta", "requests")]
    with servers.gateway(config) as gateway, client_for(gateway, "alpha") as alpha, client_for(gateway, "beta") as beta:
        before = refusals(gateway, *series)
        assert alpha.classify(SMALL_JPEG, ["cat"])[0].ok
        with pytest.raises(RateLimitedError, match="alpha"):
            alpha.classify(SMALL_JPEG, ["cat"])
        assert beta.classify(SMALL_JPEG, ["cat"])[0].ok  # beta's bucket is still full
        with pytest.raises(RateLimitedError, match="beta"):
            beta.classify(SMALL_JPEG, ["cat"])
        with pytest.raises(RateLimitedError, match="alpha"):  # and beta's call gave alpha nothing back
            alpha.classify(SMALL_JPEG, ["cat"])
        after = refusals(gateway, *series)
    assert {key: after[key] - before[key] for key in series} == {("alpha", "requests"): 2, ("beta", "requests"): 1}


def test_a_key_limited_in_images_is_refused_once_its_images_are_spent(
    tiny_triton: LauncherTriton, tmp_path: Path
) -> None:
    """`--rate-limit-images`: a key may save up one request of `--max-images` images (4 here) and
    refills one image per 1,000 s. After 3 images, a call of 2 is refused (as images, with the
    key's name), one of 1 still fits, then nothing does; the other key still has its 4. Each
    refusal is counted in clip_gateway_rate_limited_total under the key's name and `images`."""
    config = gateway_config(
        tiny_triton.grpc_url,
        api_keys_file=keys_file(tmp_path, "pictures", "others"),
        rate_limit_images=0.001,
        limits=Limits(max_images=4),  # the bucket holds max(0.001 x 1 s, 4 images)
    )
    series = [("pictures", "images"), ("others", "images"), ("pictures", "requests")]
    with (
        servers.gateway(config) as gateway,
        client_for(gateway, "pictures") as pictures,
        client_for(gateway, "others") as others,
    ):
        before = refusals(gateway, *series)

        def refused() -> dict[tuple[str, str], float]:
            now = refusals(gateway, *series)
            return {key: now[key] - before[key] for key in series if now[key] != before[key]}

        assert all(item.ok for item in pictures.classify([SMALL_JPEG] * 3, ["cat"]))
        with pytest.raises(RateLimitedError) as limited:
            pictures.classify([SMALL_JPEG] * 2, ["cat"])
        assert "'pictures'" in str(limited.value) and "images per second" in str(limited.value)
        assert limited.value.retry_after is not None and limited.value.retry_after > 100  # 1 image at 0.001/s
        assert refused() == {("pictures", "images"): 1}
        assert pictures.classify(SMALL_JPEG, ["cat"])[0].ok  # the one image left fits
        with pytest.raises(RateLimitedError):
            pictures.classify(SMALL_JPEG, ["cat"])
        assert all(item.ok for item in others.classify([SMALL_JPEG] * 4, ["cat"]))  # its own 4 images
        assert refused() == {("pictures", "images"): 2}  # nothing for the other key, nothing as requests


def test_an_unauthenticated_call_is_refused_before_its_message_is_parsed(keyed: GatewayThread) -> None:
    """Bytes that are no valid message: parsed, they would be INVALID_ARGUMENT; refused unparsed,
    UNAUTHENTICATED."""
    with grpc.insecure_channel(keyed.target, options=[("grpc.max_send_message_length", 32 << 20)]) as channel:
        raw = channel.unary_unary("/clip.v1.ClipService/Classify")
        with pytest.raises(grpc.RpcError) as refused:
            raw(b"\xff" * (8 << 20), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_one_key_cannot_take_every_work_slot(
    tiny_triton: LauncherTriton, image_web: ImageWebServer, tmp_path: Path
) -> None:
    """Four work slots, a key may hold half of them. `slow` sends four calls whose image URL
    answers its headers only after 30 s (each call holds its slot until the fetch times out, 8 s):
    two are admitted, two are refused as that key's quota at once; meanwhile `other` is served.
    Without the share, `slow` would hold all four slots and `other` would be refused as busy."""
    config = gateway_config(
        tiny_triton.grpc_url,
        api_keys_file=keys_file(tmp_path, "slow", "other"),
        max_concurrent_rpcs=4,
        key_slot_share=0.5,
        image_urls=True,
        url_allowed_networks="127.0.0.2/32",
        url_total_timeout=8.0,
        url_read_timeout=8.0,
    )
    stalled = ImageUrl(image_web.url("/slow-headers"))
    with servers.gateway(config) as gateway, client_for(gateway, "other") as other:
        before = refusals(gateway, ("slow", "concurrency"))[("slow", "concurrency")]

        def call() -> str:
            with client_for(gateway, "slow") as slow:
                try:
                    slow.classify([stalled], ["cat"])
                    return "answered"
                except RateLimitedError as error:
                    assert "its share of the gateway's work slots" in str(error)
                    return "refused"

        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(call) for _ in range(4)]
            wait_for(lambda: sum(call.done() for call in calls) == 2, 6, "two of the slow key's calls refused")
            assert servers.metric(gateway.metrics_url, "clip_gateway_work_slots_used") == 2
            assert other.classify(SMALL_JPEG, ["cat"])[0].ok  # the other key still gets a slot
            outcomes = sorted(call.result(timeout=60) for call in calls)
        after = refusals(gateway, ("slow", "concurrency"))[("slow", "concurrency")]
    assert outcomes == ["answered", "answered", "refused", "refused"]
    assert after - before == 2
