"""The image fetcher and its address policy on their own: what needs a fake DNS answer (names
that resolve to internal addresses), redirects, proxies (the environment's, ignored; a configured
one, with the URL's host checked here), compression, and the DNS pool."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import threading

import pytest

from gateway.image_fetcher import FetchSettings, ImageFetcher, SystemResolver
from gateway.url_policy import ImageUrlError, IPAddress, UrlPolicy, UrlRefused
from tests.support.web import Canary, ForwardProxy, ImageWebServer

ALLOW_WEB = UrlPolicy.from_setting("127.0.0.2/32")


def fake_dns(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in answers:
            raise OSError(-2, "Name or service not known")
        return [ipaddress.ip_address(a) for a in answers[host]]

    return resolve


def fetch(fetcher: ImageFetcher, url: str, max_bytes: int = 10_000_000) -> bytes:
    async def run() -> bytes:
        try:
            return await fetcher.fetch(url, max_bytes)
        finally:
            await fetcher.close()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("answers", "fragment"),
    [
        (["10.1.2.3"], "internal.example resolves to an address that is private"),
        (["169.254.169.254"], "resolves to an address that is link-local"),
        (["fd00::5"], "resolves to an address that is private"),
        (["::ffff:10.0.0.1"], "resolves to an address that is private"),
        (["93.184.216.34", "127.0.0.1"], "resolves to an address that is loopback"),  # one bad answer is enough
    ],
)
def test_names_resolving_to_internal_addresses_are_refused(answers: list[str], fragment: str, canary: Canary) -> None:
    """Refused by the rule, without telling the caller what the internal name resolves to."""
    fetcher = ImageFetcher(FetchSettings(), UrlPolicy(), fake_dns({"internal.example": answers}))
    with pytest.raises(UrlRefused, match=re.escape(fragment)) as refused:
        fetch(fetcher, f"http://internal.example:{canary.port}/cat.png")
    assert not any(answer in str(refused.value) for answer in answers if answer != "93.184.216.34")
    assert "10.0.0.1" not in str(refused.value)
    assert canary.connections == []


def test_the_resolved_address_is_the_one_connected_to(image_web: ImageWebServer, photo_png: bytes) -> None:
    """A name the fake DNS maps to the allowed web server is fetched from exactly there."""
    fetcher = ImageFetcher(FetchSettings(), ALLOW_WEB, fake_dns({"images.example": ["127.0.0.2"]}))
    assert fetch(fetcher, f"http://images.example:{image_web.port}/photo.png") == photo_png


def test_unresolvable_names_say_so() -> None:
    fetcher = ImageFetcher(FetchSettings(), UrlPolicy(), fake_dns({}))
    with pytest.raises(ImageUrlError, match=re.escape("nowhere.example does not resolve")):
        fetch(fetcher, "http://nowhere.example/cat.png")


def test_redirects_are_not_followed_by_default(image_web: ImageWebServer) -> None:
    fetcher = ImageFetcher(FetchSettings(), ALLOW_WEB)
    with pytest.raises(ImageUrlError, match="this server follows none"):
        fetch(fetcher, image_web.url("/redirect?to=/photo.png"))


def test_an_allowed_redirect_is_followed(image_web: ImageWebServer, photo_png: bytes) -> None:
    fetcher = ImageFetcher(FetchSettings(max_redirects=1), ALLOW_WEB)
    assert fetch(fetcher, image_web.url("/redirect?to=/photo.png")) == photo_png


def test_the_server_is_asked_for_the_image_uncompressed(image_web: ImageWebServer, photo_png: bytes) -> None:
    """We never decompress; a server that would gzip for a client asking for it sends the bytes
    as they are to us."""
    assert fetch(ImageFetcher(FetchSettings(), ALLOW_WEB), image_web.url("/maybe-gzip")) == photo_png
    assert image_web.accept_encodings[-1] == "identity"


def test_a_malformed_redirect_is_the_images_own_error(image_web: ImageWebServer) -> None:
    fetcher = ImageFetcher(FetchSettings(max_redirects=2), ALLOW_WEB)
    with pytest.raises(ImageUrlError, match="redirects to a Location that is not a URL"):
        fetch(fetcher, image_web.url("/bad-redirect"))


def test_dns_lookups_run_in_a_bounded_pool_with_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS server that never answers costs a lookup its timeout, and never more threads than the
    pool has; the gateway's event loop and the default executor are not involved."""
    release = threading.Event()
    busy: list[str] = []

    real_getaddrinfo = socket.getaddrinfo

    def stuck(host: str, *args: object, **kwargs: object) -> object:
        if not host.endswith(".example"):  # another part of this test process (a live gateway) looking up
            return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]
        busy.append(threading.current_thread().name)
        release.wait(30)
        return []

    monkeypatch.setattr("gateway.image_fetcher.socket.getaddrinfo", stuck)
    resolver = SystemResolver(threads=2, timeout=0.2)

    async def lookups() -> list[BaseException | list[IPAddress]]:
        return await asyncio.gather(*(resolver(f"host{i}.example", 80) for i in range(5)), return_exceptions=True)

    try:
        outcomes = asyncio.run(lookups())
    finally:
        release.set()
        resolver.close()
    assert all(
        isinstance(outcome, ImageUrlError) and "did not resolve within 0.2 s" in str(outcome) for outcome in outcomes
    )
    assert len(set(busy)) <= 2 and all(name.startswith("url-dns") for name in busy)


def test_with_a_proxy_the_urls_host_is_checked_here_and_the_proxy_is_trusted(
    image_web: ImageWebServer, photo_png: bytes
) -> None:
    """The proxy (a private name the operator chose) is used; a URL whose host resolves to an
    internal address is refused before the proxy hears of it."""
    with ForwardProxy("127.0.0.3", {"images.example": image_web.url("")}) as proxy:
        dns = fake_dns(
            {"proxy.internal": ["127.0.0.3"], "images.example": ["93.184.216.34"], "db.internal": ["10.0.3.7"]}
        )
        settings = FetchSettings(proxy=f"http://proxy.internal:{proxy.port}")
        fetcher = ImageFetcher(settings, UrlPolicy(), dns)
        assert fetch(fetcher, "http://images.example/photo.png") == photo_png
        with pytest.raises(
            UrlRefused, match=re.escape("db.internal resolves to an address that is private")
        ) as refused:
            fetch(ImageFetcher(settings, UrlPolicy(), dns), "http://db.internal/secrets.png")
        assert "10.0.3.7" not in str(refused.value)
        assert proxy.requests == ["http://images.example/photo.png"]


def test_proxies_from_the_environment_are_ignored(
    monkeypatch: pytest.MonkeyPatch, image_web: ImageWebServer, canary: Canary, photo_png: bytes
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{canary.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch(ImageFetcher(FetchSettings(), ALLOW_WEB), image_web.url("/photo.png")) == photo_png
    assert canary.connections == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.255.255.254", False),
        ("::1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("224.0.0.251", False),
        ("ff02::1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("192.0.0.8", False),
        ("198.18.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::1", False),  # local-use NAT64
        ("2001::1", False),  # Teredo
    ],
)
def test_address_policy(address: str, allowed: bool) -> None:
    assert (UrlPolicy().refusal(ipaddress.ip_address(address)) is None) == allowed


def test_allowed_networks_exempt_only_themselves() -> None:
    policy = UrlPolicy.from_setting("127.0.0.2/32, 10.1.0.0/16")
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.2")) is None
    assert policy.refusal(ipaddress.ip_address("10.1.200.3")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert policy.refusal(ipaddress.ip_address("10.2.0.1")) == "private"
