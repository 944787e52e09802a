"""Image URLs through the real gateway and client: the good case, and a table of hostile URLs that
must each be refused with a clear message without anything connecting to the canary.

The test gateway allows exactly 127.0.0.2 (where the test web server listens); the canary listens
on 127.0.0.1 and ::1. Every hostile URL either points at the canary under some disguise, or at an
internal address nobody listens on, or is a hostile answer from the allowed web server.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from clip_client import NO_RETRY, ClientConfig, ClipClient, DeadlineExceededError, ImageUrl, InvalidRequestError
from tests.conftest import URL_API_KEY, URL_MAX_IMAGE_BYTES
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton
from tests.support.web import Canary, ImageWebServer

LABELS = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def url_client(url_gateway: GatewayThread) -> Iterator[ClipClient]:
    with ClipClient(config=ClientConfig(target=url_gateway.target, api_key=URL_API_KEY)) as client:
        yield client


@pytest.mark.may_skip(reason="a machine without an IPv6 loopback cannot host the [::1] canary")
def test_the_canary_listens_on_ipv6_loopback(canary: Canary) -> None:
    """Without it the IPv6 cases below point at nothing and prove less; say so rather than pass."""
    if canary.port6 is None:
        pytest.skip(canary.ipv6_error)
    with socket.create_connection(("::1", canary.port6), timeout=5):
        pass
    wait_for(lambda: canary.connections, 5, "the canary recording the connection")
    canary.connections.clear()


def hostile_urls(canary: Canary, web: ImageWebServer) -> list[tuple[str, str]]:
    """(url, a fragment the refusal must contain)."""
    c = canary.port
    c6 = canary.port6 or c
    hostname = socket.gethostname()
    cases = [
        (f"http://127.0.0.1:{c}/cat.png", "127.0.0.1 is loopback"),
        (f"http://localhost:{c}/cat.png", "localhost resolves to an address that is loopback"),
        (f"http://2130706433:{c}/", "non-standard spelling of the IPv4 address 127.0.0.1"),
        (f"http://0177.0.0.1:{c}/", "non-standard spelling of the IPv4 address 127.0.0.1"),
        (f"http://0x7f.0.0.1:{c}/", "non-standard spelling of the IPv4 address 127.0.0.1"),
        (f"http://0x7f000001:{c}/", "non-standard spelling of the IPv4 address 127.0.0.1"),
        (f"http://127.1:{c}/", "non-standard spelling of the IPv4 address 127.0.0.1"),
        (f"http://[::ffff:127.0.0.1]:{c}/", "loopback (the IPv4-mapped form of 127.0.0.1)"),
        (f"http://[::ffff:7f00:1]:{c}/", "loopback (the IPv4-mapped form of 127.0.0.1)"),
        (f"http://[::1]:{c6}/", "::1 is loopback"),
        (f"http://[2002:7f00:1::]:{c}/", "loopback (127.0.0.1 inside 2002:7f00:1::)"),
        (f"http://[64:ff9b::7f00:1]:{c}/", "loopback (127.0.0.1 inside 64:ff9b::7f00:1)"),
        (f"http://0.0.0.0:{c}/", "0.0.0.0 is unspecified"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        (
            "http://[::ffff:169.254.169.254]/latest/meta-data/",
            "link-local (where cloud metadata services answer) (the IPv4-mapped form of 169.254.169.254)",
        ),
        ("http://[fe80::1]/", "fe80::1 is link-local"),
        ("http://10.0.0.1/cat.png", "10.0.0.1 is private"),
        ("http://192.168.1.1/cat.png", "192.168.1.1 is private"),
        ("http://100.64.0.1/cat.png", "100.64.0.1 is not globally routable"),
        ("http://224.0.0.1/cat.png", "224.0.0.1 is multicast"),
        ("file:///etc/passwd", "scheme file: is not allowed"),
        (f"gopher://127.0.0.1:{c}/_GET", "scheme gopher: is not allowed"),
        (f"ftp://127.0.0.1:{c}/cat.png", "scheme ftp: is not allowed"),
        (f"http://user:secret@127.0.0.2:{web.port}/photo.png", "credentials in the URL are not allowed"),
        (f"http://127.0.0.2:{web.port}/photo.png\r\nX-Injected: 1", "whitespace or control characters"),
        ("http://" + "a" * 3000 + ".example/", "more than 2048"),
        (web.url(f"/redirect?to=http://127.0.0.1:{c}/cat.png"), "127.0.0.1 is loopback"),
        (web.url(f"/redirect?to=http://localhost:{c}/cat.png"), "localhost resolves to an address that is loopback"),
        (web.url("/bad-redirect"), "redirects to a Location that is not a URL"),
        (web.url(f"/redirect?to=http://[::ffff:127.0.0.1]:{c}/"), "the IPv4-mapped form of 127.0.0.1"),
        (web.url("/redirect?to=file:///etc/passwd"), "scheme file: is not allowed"),
        (web.url("/loop"), "the URL redirects (2 redirects allowed)"),
        (web.url("/huge"), f"more than the limit of {URL_MAX_IMAGE_BYTES} bytes"),
        (web.url("/huge-declared"), f"more than the limit of {URL_MAX_IMAGE_BYTES}"),
        (web.url("/slow-body"), "took longer than 3 s"),
        (web.url("/slow-headers"), "did not answer within the connect/read timeouts"),
        (web.url("/missing"), "answered HTTP 404"),
        (web.url("/empty"), "empty body"),
    ]
    if resolves_internally(hostname):
        cases.append((f"http://{hostname}:{c}/cat.png", f"{hostname} resolves to"))  # this machine's own name
    return cases


def resolves_internally(name: str) -> bool:
    try:
        infos = socket.getaddrinfo(name, 80)
    except OSError:
        return False
    return not all(ipaddress.ip_address(info[4][0]).is_global for info in infos)


def test_the_table_is_big_enough(canary: Canary, image_web: ImageWebServer) -> None:
    assert len(hostile_urls(canary, image_web)) >= 20


def test_a_good_url_classifies_like_its_bytes(
    url_client: ClipClient, image_web: ImageWebServer, photo_png: bytes
) -> None:
    by_url = url_client.classify([ImageUrl(image_web.url("/photo.png"))], LABELS)
    by_bytes = url_client.classify([photo_png], LABELS)
    assert by_url[0].ok, by_url[0].error
    assert [s.label for s in by_url[0].labels] == [s.label for s in by_bytes[0].labels]
    assert [s.score for s in by_url[0].labels] == pytest.approx([s.score for s in by_bytes[0].labels], abs=1e-5)
    vectors = url_client.embed(images=[ImageUrl(image_web.url("/photo.png")), photo_png])
    assert np.abs(vectors.images[0] - vectors.images[1]).max() <= 1e-6


def test_every_hostile_url_is_refused_and_the_canary_hears_nothing(
    url_client: ClipClient, canary: Canary, image_web: ImageWebServer, photo_png: bytes
) -> None:
    good = ImageUrl(image_web.url("/photo.png"))
    for url, fragment in hostile_urls(canary, image_web):
        result = url_client.classify([ImageUrl(url), good, photo_png], LABELS)
        bad, *neighbours = list(result)
        assert not bad.ok, url
        assert bad.error is not None and bad.error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in str(bad.error), (url, str(bad.error))
        assert all(item.ok for item in neighbours), url  # one bad URL never fails the others
        assert canary.connections == [], url


def test_a_fetched_non_image_is_that_images_error(url_client: ClipClient, image_web: ImageWebServer) -> None:
    result = url_client.classify([ImageUrl(image_web.url("/text"))], LABELS)
    assert not result[0].ok and "image" in str(result[0].error).lower()


def test_by_default_loopback_is_refused_and_nothing_is_fetched(
    tiny_triton: LauncherTriton, image_web: ImageWebServer, canary: Canary
) -> None:
    """The same good URL, on a gateway with fetching on but no network allowed."""
    with servers.gateway(gateway_config(tiny_triton.grpc_url, image_urls=True)) as gateway:
        before = len(image_web.requests)
        with ClipClient(gateway.target) as client:
            result = client.classify([ImageUrl(image_web.url("/photo.png"))], LABELS)
        assert "127.0.0.2 is loopback" in str(result[0].error)
        assert len(image_web.requests) == before


def test_urls_are_refused_where_fetching_is_off(clip_client: ClipClient, image_web: ImageWebServer) -> None:
    assert clip_client.model_info().limits.image_urls is False
    with pytest.raises(InvalidRequestError) as raised:
        clip_client.classify([ImageUrl(image_web.url("/photo.png"))], LABELS)
    assert raised.value.field_violations[0].field == "images[0].url"
    assert "does not fetch image URLs" in raised.value.field_violations[0].description


def test_model_info_says_urls_are_on(url_client: ClipClient) -> None:
    assert url_client.model_info().limits.image_urls is True


def test_fetch_outcomes_are_counted(
    url_gateway: GatewayThread, url_client: ClipClient, image_web: ImageWebServer
) -> None:
    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("clip_gateway_image_fetches_total", {"outcome": outcome}) or 0.0

    ok, refused = count("ok"), count("refused")
    url_client.classify([ImageUrl(image_web.url("/photo.png")), ImageUrl("http://10.0.0.1/")], LABELS)
    assert count("ok") == ok + 1 and count("refused") == refused + 1


def test_fetches_end_when_their_call_ends(url_gateway: GatewayThread, image_web: ImageWebServer) -> None:
    """A call that runs out of time takes its image fetches with it: the slow web server sees both
    of its clients leave, instead of trickling bytes to a fetch nobody will read."""
    before = len(image_web.disconnects)
    slow = [ImageUrl(image_web.url("/slow-body?a")), ImageUrl(image_web.url("/slow-body?b"))]
    config = ClientConfig(target=url_gateway.target, api_key=URL_API_KEY, retry=NO_RETRY)
    with ClipClient(config=config) as client:
        started = time.monotonic()
        try:
            result = client.classify(slow, LABELS, timeout=1.0)
        except DeadlineExceededError:
            pass
        else:
            # The fetches are given the call's remaining time, so they may run out a moment before
            # the call does (seen in CI): then the answer comes in time, each image saying why.
            assert len(result) == 2 and all("took longer than" in str(item.error) for item in result), result
        assert time.monotonic() - started < 1.0 + 1.2  # ends at its deadline; margin for a loaded machine
    wait_for(lambda: len(image_web.disconnects) - before >= 2, 10, "both slow fetches ended")
