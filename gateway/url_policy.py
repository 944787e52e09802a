"""Which image URLs the gateway may fetch, decided before any connection is made.

Two questions, both pure: is the URL itself acceptable (scheme, host, no credentials, length), and
may the gateway connect to a given IP address. The second is asked of every address a host name
resolves to, and of IP literals, with the embedded IPv4 address of IPv4-mapped, IPv4-compatible,
6to4 and NAT64 forms checked as well: `::ffff:127.0.0.1` is loopback, whatever its spelling.
Only globally routable unicast addresses pass, unless an operator allows a network explicitly.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})
MAX_URL_CHARS = 2048

# Ranges Python's is_global does not exclude (3.11) or that we refuse regardless.
_ALWAYS_DENIED: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "reserved (local-use NAT64)"),
    (ipaddress.ip_network("2001::/32"), "reserved (Teredo)"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class ImageUrlError(Exception):
    """An image URL gave no image; the message says why, in words a caller can act on."""


class UrlRefused(ImageUrlError):
    """Policy forbids fetching this URL; nothing was connected to."""


@dataclass(frozen=True)
class UrlPolicy:
    allowed_networks: tuple[IPNetwork, ...] = ()  # exempt from the deny list (e.g. an internal CDN)

    @classmethod
    def from_setting(cls, networks: str) -> UrlPolicy:
        """`networks`: comma-separated CIDRs, e.g. "10.1.2.0/24,fd00::/8"; empty allows none."""
        parsed = []
        for item in networks.split(","):
            if item.strip():
                parsed.append(ipaddress.ip_network(item.strip(), strict=False))
        return cls(tuple(parsed))

    def check_url(self, raw: str) -> URL:
        """The parsed URL, or UrlRefused naming what is wrong with it."""
        if len(raw) > MAX_URL_CHARS:
            raise UrlRefused(f"the URL has {len(raw)} characters, more than {MAX_URL_CHARS}")
        if any(ord(char) < 0x21 or ord(char) == 0x7F for char in raw):
            raise UrlRefused("the URL contains whitespace or control characters")
        try:
            url = URL(raw)
        except (ValueError, TypeError) as error:
            raise UrlRefused(f"the URL does not parse: {error}") from None
        scheme = (url.scheme or "").lower()
        if scheme not in SCHEMES:
            raise UrlRefused(f"scheme {scheme + ':' if scheme else '(none)'} is not allowed; only http and https")
        if not url.host:
            raise UrlRefused("the URL has no host")
        if url.user is not None or url.password is not None:
            raise UrlRefused("credentials in the URL are not allowed")
        literal = ip_literal(url.host)
        if literal is not None:
            self.check_address(literal)
        elif (legacy := legacy_ipv4(url.host)) is not None:
            raise UrlRefused(
                f"host {url.host} is a non-standard spelling of the IPv4 address {legacy}; "
                "write addresses in dotted-decimal form"
            )
        return url

    def check_address(self, address: IPAddress) -> None:
        """UrlRefused unless the gateway may connect to `address`."""
        problem = self.refusal(address)
        if problem is not None:
            raise UrlRefused(f"{address} is {problem}: the gateway does not fetch from such addresses")

    def refusal(self, address: IPAddress, explain: bool = True) -> str | None:
        """Why `address` is refused (e.g. "loopback"), or None if it may be used. `explain` adds
        which embedded address was judged; off where the address itself must not be told."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # The same host as the IPv4 address, judged as that.
            problem = self.refusal(address.ipv4_mapped, explain)
            if problem is None or not explain:
                return problem
            return f"{problem} (the IPv4-mapped form of {address.ipv4_mapped})"
        for candidate in (*embedded_ipv4(address), address):
            if any(candidate in network for network in self.allowed_networks):
                continue
            problem = _category(candidate)
            if problem is not None:
                if candidate == address or not explain:
                    return problem
                return f"{problem} ({candidate} inside {address})"
        return None

    def check_addresses(self, host: str, addresses: Sequence[IPAddress]) -> None:
        """Every address a name resolves to must pass: one private answer among public ones is
        how DNS-based SSRF gets in."""
        if not addresses:
            raise UrlRefused(f"{host} does not resolve to any address")
        for address in addresses:
            problem = self.refusal(address, explain=False)
            if problem is not None:
                # The rule, never the address: a caller must not learn what internal names resolve to.
                raise UrlRefused(
                    f"{host} resolves to an address that is {problem}: the gateway does not fetch from there"
                )


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address inet_aton reads from decimal, octal, hex or short forms ("2130706433",
    "0x7f.1", "0177.0.0.1"), which resolvers accept and which hide an address from a glance."""
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def embedded_ipv4(address: IPAddress) -> Iterable[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries, which a network may route to."""
    if isinstance(address, ipaddress.IPv4Address):
        return ()
    found = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _category(address: IPAddress) -> str | None:
    for network, name in _ALWAYS_DENIED:
        if address.version == network.version and address in network:
            return name
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (where cloud metadata services answer)"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None
