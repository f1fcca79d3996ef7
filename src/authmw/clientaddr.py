"""The client address of a request: the socket peer, or the right-most untrusted hop behind trusted proxies.

Forwarding headers are written by whoever sends them, so they are believed only as far as a chain of
trusted proxies vouches for them: starting at the socket peer and walking the hops right to left, each
trusted proxy hands over to the hop it reports, and the first address that is not a trusted proxy is the
client. Nothing is trusted by default. Which header carries the chain is configuration (``header``:
``x-forwarded-for``, the default, or RFC 7239 ``forwarded``), never the client's choice: the other header is
ignored, since a load balancer appends to the one it writes and passes the other through as the client sent it.
A hop that is not an IP address (``unknown``, an obfuscated ``_node``, garbage) where the client should be
gives ``None``: no address, which no IP whitelist admits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from authmw.identity import IpAddress, IpWhitelist, unmapped

__all__ = ["FORWARDED_HEADERS", "TrustedProxies", "parse_address"]

#: The forwarding headers a deployment may choose from (the load balancer's), lower-case.
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")

_MAX_HOPS = 64  # a forwarding chain longer than this is not a real deployment; its far end is ignored


def parse_address(text: str) -> IpAddress | None:
    """An address as hops write it: ``192.0.2.1``, ``192.0.2.1:8080``, ``2001:db8::1``, ``[2001:db8::1]:443``;
    IPv4-mapped IPv6 becomes IPv4. None when it is not an address (zone ids included)."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        host, bracket, _port = text[1:].partition("]")
        if not bracket:
            return None
        text = host
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    if "%" in text:
        return None
    try:
        return unmapped(ipaddress.ip_address(text))
    except ValueError:
        return None


def _split_quoted(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes (RFC 7230 quoted-string, backslash escapes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _forwarded_hops(value: str) -> list[str]:
    """The ``for=`` of each element of a ``Forwarded`` header, left to right ("" when an element has none)."""
    hops = []
    for element in _split_quoted(value, ","):
        found = ""
        for pair in _split_quoted(element, ";"):
            name, equals, raw = pair.partition("=")
            if equals and name.strip().lower() == "for":
                found = raw.strip()
        hops.append(found)
    return hops


class TrustedProxies:
    """The proxies whose forwarding headers are believed: addresses or CIDR blocks, IPv4 and IPv6.

    ``header`` is the forwarding header the trusted proxies write (one of :data:`FORWARDED_HEADERS`); only it
    is read. ``trusts_everything`` is True when a block covers every address (``0.0.0.0/0`` or ``::/0``): then
    any client can claim any address, which a deployment should be warned about at start-up.
    """

    def __init__(self, entries: Iterable[str] = (), *, header: str = "x-forwarded-for") -> None:
        if header not in FORWARDED_HEADERS:
            raise ValueError(f"forwarded_header must be one of {', '.join(FORWARDED_HEADERS)}, not {header!r}")
        self.header = header
        try:  # the same entries, with the same rules, as an IP whitelist
            self._proxies = IpWhitelist.parse(entries)
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None
        self.networks = self._proxies.networks
        self.trusts_everything = any(net.prefixlen == 0 for net in self.networks)
        self._peers: dict[str, str | None] = {}  # socket peer → its normal form (parsing costs microseconds)

    def __repr__(self) -> str:
        return f"TrustedProxies({list(self._proxies.entries)}, header={self.header!r})"

    def trusts(self, address: IpAddress | None) -> bool:
        return address is not None and bool(self.networks) and self._proxies.contains(address)

    def client_address(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """The client's address for a request from ``peer`` with lower-case ``headers``."""
        if not self.networks:
            if peer is None:
                return None
            known = self._peers.get(peer, "")
            if known != "":
                return known
            address = parse_address(peer)
            if len(self._peers) >= 10_000:
                self._peers.clear()
            self._peers[peer] = normal = None if address is None else str(address)
            return normal
        address = None if peer is None else parse_address(peer)
        if not self.trusts(address):
            return None if address is None else str(address)
        value = headers.get(self.header)
        if value is None:
            return str(address)
        hops = _forwarded_hops(value) if self.header == "forwarded" else value.split(",")
        for hop in reversed(hops[-_MAX_HOPS:]):
            address = parse_address(hop)
            if not self.trusts(address):
                return None if address is None else str(address)
        return str(address)  # every hop is a trusted proxy: the left-most one is as far as we can see
