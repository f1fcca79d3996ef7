"""Client addresses: how they are parsed, IP whitelists of them, and the client address of a request (the socket
peer, or the right-most untrusted hop behind trusted proxies).

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
from dataclasses import dataclass

from authmw.cache import BoundedCache

__all__ = ["FORWARDED_HEADERS", "IpWhitelist", "TrustedProxies", "parse_address", "unmapped"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The forwarding headers a deployment may choose from (the load balancer's), lower-case.
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")

_MAX_HOPS = 64  # a forwarding chain longer than this is not a real deployment; its far end is ignored
_MEMO_CHAIN = 256  # the longest forwarding header whose client is remembered (10,000 of them at most)


@dataclass(frozen=True, slots=True)
class IpWhitelist:
    """Addresses and CIDR blocks (IPv4 and IPv6); an empty whitelist allows every address."""

    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> IpWhitelist:
        """Parse entries such as ``192.0.2.7`` or ``2001:db8::/32``; raises ValueError naming a bad entry.

        IPv4-mapped IPv6 entries (``::ffff:10.0.0.0/104``) become their IPv4 form, as client addresses do;
        zone ids (``fe80::1%eth0``) are refused; an entry given twice counts once.
        """
        networks: dict[IpNetwork, None] = {}
        for entry in entries:
            text = entry.strip() if isinstance(entry, str) else ""
            try:
                if not text or "%" in text:
                    raise ValueError
                network = ipaddress.ip_network(text, strict=True)
            except ValueError:
                raise ValueError(
                    f"not an IP address or CIDR block (host bits must be zero, no zone id): {entry!r}"
                ) from None
            networks[_unmapped(network)] = None
        return cls(tuple(networks))

    @property
    def entries(self) -> tuple[str, ...]:
        """Canonical text of each entry (a single address without its prefix length)."""
        return tuple(
            str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net) for net in self.networks
        )

    def allows(self, address: str | None) -> bool:
        """True when the whitelist is empty or ``address`` falls in one entry (unparsable addresses never do)."""
        if not self.networks:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return self.contains(unmapped(ip))

    def contains(self, ip: IpAddress) -> bool:
        """Whether ``ip`` (already :func:`unmapped`) falls in one entry."""
        return any(ip in net for net in self.networks if net.version == ip.version)


def unmapped(ip: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it carries (how a dual-stack socket reports IPv4)."""
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip if mapped is None else mapped


def _unmapped(network: IpNetwork) -> IpNetwork:
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is None or network.prefixlen < 96:
        return network
    return ipaddress.IPv4Network((mapped, network.prefixlen - 96))


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
        # socket peer → its normal form (parsing costs microseconds)
        self._peers: BoundedCache[str, str | None] = BoundedCache(10_000)
        # (peer, forwarding header) → the client: behind a proxy both repeat (Envoy's address, each client's chain),
        # and parsing every hop with ipaddress was a tenth of an authz check
        self._chains: BoundedCache[tuple[str | None, str | None], str | None] = BoundedCache(10_000)

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
            normal = None if address is None else str(address)
            self._peers.put(peer, normal)
            return normal
        value = headers.get(self.header)
        if value is not None and len(value) > _MEMO_CHAIN:  # a chain this long is no regular's: not kept
            return self._client(peer, value)
        key = (peer, value)
        known = self._chains.get(key, "")
        if known != "":
            return known
        found = self._client(peer, value)
        self._chains.put(key, found)
        return found

    def _client(self, peer: str | None, value: str | None) -> str | None:
        address = None if peer is None else parse_address(peer)
        if not self.trusts(address):
            return None if address is None else str(address)
        if value is None:
            return str(address)
        hops = _forwarded_hops(value) if self.header == "forwarded" else value.split(",")
        for hop in reversed(hops[-_MAX_HOPS:]):
            address = parse_address(hop)
            if not self.trusts(address):
                return None if address is None else str(address)
        return str(address)  # every hop is a trusted proxy: the left-most one is as far as we can see
