"""Fetch image URLs without letting a caller reach what the gateway can reach (SSRF).

Every hop goes through the same checks: the URL by UrlPolicy; the host's addresses are resolved
once, all checked, and those very addresses handed to the connection (aiohttp asks our resolver,
so a second DNS answer cannot swap in an internal address between check and connect); the peer
the socket really reached is checked again before a byte of the body is read. Redirects are not
followed unless configured, and each one is re-checked like a new URL. Proxies from the
environment are ignored; only a configured proxy is used, and then the URL's host is resolved and
checked here before the request goes to the proxy (the proxy itself, which the operator chose, is
trusted; it resolves the name again, so DNS that answers differently within a second could still
mislead it). Names are resolved in a small thread pool of the fetcher's own, each lookup with a
timeout. Connect, read and total timeouts; the byte cap is enforced while streaming, not after;
the server is asked not to compress (a compressed image would not be an image).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.byte_budget import BudgetExceeded, ByteBudget
from gateway.url_policy import ImageUrlError, IPAddress, UrlPolicy, ip_literal

REDIRECTS = frozenset({301, 302, 303, 307, 308})
DNS_THREADS = 8  # lookups at once; a stuck one holds its thread, never the gateway's event loop
DNS_TIMEOUT = 2.0  # seconds per lookup
CHUNK_BYTES = 64 * 1024
USER_AGENT = "clip-serve-gateway (image fetcher)"

Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]


@dataclass(frozen=True)
class FetchSettings:
    max_redirects: int = 0
    connect_timeout: float = 3.0
    read_timeout: float = 5.0  # between two reads of the body
    total_timeout: float = 15.0  # a whole fetch, redirects included
    proxy: str = ""  # an explicit proxy URL; HTTP(S)_PROXY from the environment is never used


class SystemResolver:
    """getaddrinfo in a bounded pool of its own threads, with a timeout per lookup: a stuck DNS
    server costs a thread of this pool for a while, and the caller only DNS_TIMEOUT."""

    def __init__(self, threads: int = DNS_THREADS, timeout: float = DNS_TIMEOUT) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="url-dns")
        self.timeout = timeout

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        lookup = loop.run_in_executor(self._pool, socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            infos = await asyncio.wait_for(lookup, self.timeout)
        except TimeoutError:
            raise ImageUrlError(f"{host} did not resolve within {self.timeout:g} s") from None
        return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver: resolve, refuse if any answer is forbidden, return exactly those. The
    configured proxy's host is the one name exempt from the address checks."""

    def __init__(self, policy: UrlPolicy, resolve: Resolve, trusted_host: str | None = None) -> None:
        self.policy = policy
        self._resolve = resolve
        self.trusted_host = trusted_host

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self._resolve(host, port)
        except OSError as error:
            raise ImageUrlError(f"{host} does not resolve: {error.strerror or error}") from None
        if host != self.trusted_host:
            self.policy.check_addresses(host, addresses)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


class ImageFetcher:
    """One per gateway; `fetch` may be called concurrently."""

    def __init__(self, settings: FetchSettings, policy: UrlPolicy, resolve: Resolve | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self._system = SystemResolver() if resolve is None else None
        self._resolve: Resolve = resolve or self._system  # type: ignore[assignment]
        self._session: aiohttp.ClientSession | None = None
        self.proxy_host = URL(settings.proxy).host if settings.proxy else None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = CheckedResolver(self.policy, self._resolve, trusted_host=self.proxy_host)
            connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=64)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                auto_decompress=False,  # a gzip bomb stays the size it was sent at
                # ask for the bytes as they are: we never decompress, so a compressed body would
                # only fail later as "not an image"
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def _check_host(self, url: URL) -> None:
        """With a proxy, aiohttp never resolves the URL's host (the proxy does): check it here."""
        host = url.host or ""
        literal = ip_literal(host)
        if literal is not None:
            self.policy.check_address(literal)
            return
        try:
            addresses = await self._resolve(host, url.port or 0)
        except OSError as error:
            raise ImageUrlError(f"{host} does not resolve: {error.strerror or error}") from None
        self.policy.check_addresses(host, addresses)

    async def fetch(
        self, raw_url: str, max_bytes: int, timeout: float | None = None, budget: ByteBudget | None = None
    ) -> bytes:
        """The body of `raw_url` (after allowed redirects), or ImageUrlError saying why not; at most
        `max_bytes`, and each chunk drawn from `budget` (the request's, shared by its URLs)."""
        budget = budget or ByteBudget(max_bytes)
        total = min(self.settings.total_timeout, timeout) if timeout else self.settings.total_timeout
        try:
            async with asyncio.timeout(total):
                return await self._follow(raw_url, max_bytes, budget)
        except TimeoutError:
            raise ImageUrlError(f"fetching the URL took longer than {total:g} s") from None

    async def _follow(self, raw_url: str, max_bytes: int, budget: ByteBudget) -> bytes:
        url = self.policy.check_url(raw_url)
        for hop in range(self.settings.max_redirects + 1):
            location = await self._get(url, max_bytes, budget)
            if isinstance(location, bytes):
                return location
            if hop == self.settings.max_redirects:
                allowed = self.settings.max_redirects
                raise ImageUrlError(
                    f"the URL redirects ({allowed} redirect{'s' if allowed != 1 else ''} allowed"
                    f"{'; this server follows none' if not allowed else ''})"
                )
            try:
                target = str(url.join(URL(location)))
            except (ValueError, TypeError):
                raise ImageUrlError("the URL redirects to a Location that is not a URL") from None
            url = self.policy.check_url(target)
        raise AssertionError("unreachable")

    async def _get(self, url: URL, max_bytes: int, budget: ByteBudget) -> bytes | str:
        """The body, or the Location of a redirect."""
        timeout = aiohttp.ClientTimeout(
            sock_connect=self.settings.connect_timeout, sock_read=self.settings.read_timeout
        )
        if self.settings.proxy:
            await self._check_host(url)
        try:
            async with self._client().get(
                url, allow_redirects=False, timeout=timeout, proxy=self.settings.proxy or None
            ) as response:
                if not self.settings.proxy:
                    self._check_peer(response, url)
                if response.status in REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageUrlError(f"the URL answered HTTP {response.status} without a Location")
                    return location
                if response.status != 200:
                    raise ImageUrlError(f"the URL answered HTTP {response.status}, not 200")
                return await _read_capped(response, max_bytes, budget)
        except ImageUrlError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise ImageUrlError(f"{url.host} did not answer within the connect/read timeouts") from None
        except aiohttp.ClientConnectorError as error:
            raise ImageUrlError(f"could not connect to {url.host}: {error.os_error.strerror or error}") from None
        except (aiohttp.ClientError, ValueError) as error:
            raise ImageUrlError(f"fetching the URL failed: {type(error).__name__}") from None

    def _check_peer(self, response: aiohttp.ClientResponse, url: URL) -> None:
        connection = response.connection
        transport = connection.transport if connection is not None else None
        peer: Any = transport.get_extra_info("peername") if transport is not None else None
        if not peer:
            return  # the body was already read into memory (a tiny response); the resolver checked it
        address = ip_literal(str(peer[0]))
        if address is not None:
            self.policy.check_address(address)
        elif url.host:
            raise ImageUrlError(f"could not tell which address {url.host} connected to")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._system is not None:
            self._system.close()


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int, budget: ByteBudget) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise ImageUrlError(f"the image is {declared} bytes, more than the limit of {max_bytes}")
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        try:
            budget.take(len(chunk))
        except BudgetExceeded as exceeded:
            raise ImageUrlError(str(exceeded)) from None
        body += chunk
        if len(body) > max_bytes:
            raise ImageUrlError(f"the image is more than the limit of {max_bytes} bytes")
    if not body:
        raise ImageUrlError("the URL answered with an empty body")
    return bytes(body)
