"""Client address behind trusted proxies: X-Forwarded-For or RFC 7239 Forwarded (the configured one only),
right-most untrusted hop."""

from __future__ import annotations

import pytest

from authmw.clientaddr import TrustedProxies, parse_address
from authmw.models import Request

ENTRIES = ["10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.10"]
PROXIES = TrustedProxies(ENTRIES)
RFC7239 = TrustedProxies(ENTRIES, header="forwarded")


def client(proxies: TrustedProxies, peer: str | None, *headers: tuple[str, str]) -> str | None:
    return proxies.client_address(peer, Request.build("GET", "/", list(headers)).headers)


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # nobody trusted: the peer, whatever the headers say
        ("203.0.113.5", [("X-Forwarded-For", "1.1.1.1")], "203.0.113.5"),
        # an untrusted peer's headers are ignored even when we have trusted proxies
        ("198.51.100.7", [("X-Forwarded-For", "1.1.1.1")], "198.51.100.7"),
        # one trusted proxy
        ("10.1.2.3", [("X-Forwarded-For", "198.51.100.7")], "198.51.100.7"),
        # a spoofed left part: the right-most untrusted hop wins
        ("10.1.2.3", [("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.9.9.9")], "198.51.100.7"),
        # several headers are one list
        ("10.1.2.3", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.7")], "198.51.100.7"),
        # every hop trusted: the left-most
        ("10.1.2.3", [("X-Forwarded-For", "10.4.4.4, 192.0.2.10")], "10.4.4.4"),
        # a trusted proxy without forwarding headers is the client
        ("10.1.2.3", [], "10.1.2.3"),
        # ports and brackets
        ("10.1.2.3", [("X-Forwarded-For", "198.51.100.7:5555")], "198.51.100.7"),
        ("10.1.2.3", [("X-Forwarded-For", "[2001:db8::1]:443")], "2001:db8::1"),
        # garbage where the client should be: no address
        ("10.1.2.3", [("X-Forwarded-For", "unknown")], None),
        ("10.1.2.3", [("X-Forwarded-For", "198.51.100.7, not-an-ip")], None),
        ("10.1.2.3", [("X-Forwarded-For", "")], None),
        ("10.1.2.3", [("X-Forwarded-For", "fe80::1%eth0")], None),
        # RFC 7239 (forwarded_header: forwarded)
        ("10.1.2.3", [("Forwarded", "for=198.51.100.7;proto=https;by=10.1.2.3")], "198.51.100.7"),
        ("10.1.2.3", [("Forwarded", 'for="[2001:db8::7]:4711", for=10.5.5.5')], "2001:db8::7"),
        ("10.1.2.3", [("Forwarded", 'For="198.51.100.7:80"')], "198.51.100.7"),
        ("10.1.2.3", [("Forwarded", "for=6.6.6.6, for=198.51.100.7")], "198.51.100.7"),
        ("10.1.2.3", [("Forwarded", 'for=_hidden;by="x,y", for=10.2.2.2')], None),
        ("10.1.2.3", [("Forwarded", "proto=https")], None),
        ("10.1.2.3", [("Forwarded", 'for="198.51.100.7\\";junk"')], None),
        # the configured header only, whatever else the client sent
        ("10.1.2.3", [("X-Forwarded-For", "6.6.6.6"), ("Forwarded", "for=198.51.100.7")], "198.51.100.7"),
        # IPv6 proxies and mapped addresses
        ("2001:db8:ffff::9", [("X-Forwarded-For", "::ffff:198.51.100.7")], "198.51.100.7"),
        ("::ffff:10.1.2.3", [("X-Forwarded-For", "198.51.100.7")], "198.51.100.7"),
        # a peer we cannot parse
        (None, [("X-Forwarded-For", "198.51.100.7")], None),
        ("garbage", [("X-Forwarded-For", "198.51.100.7")], None),
    ],
)
def test_client_address(peer: str | None, headers: list[tuple[str, str]], expected: str | None) -> None:
    rfc7239 = any(name == "Forwarded" for name, _value in headers)
    proxies = TrustedProxies() if expected == "203.0.113.5" else RFC7239 if rfc7239 else PROXIES
    assert client(proxies, peer, *headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        [("Forwarded", "for=6.6.6.6")],
        [("X-Forwarded-For", "198.51.100.7"), ("Forwarded", "for=6.6.6.6")],
        [("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "198.51.100.7")],
    ],
)
def test_a_spoofed_forwarded_header_is_ignored_by_default(headers: list[tuple[str, str]]) -> None:
    # The load balancer appends to X-Forwarded-For and passes the client's Forwarded through untouched.
    expected = "198.51.100.7" if any(name == "X-Forwarded-For" for name, _ in headers) else "10.1.2.3"
    assert client(PROXIES, "10.1.2.3", *headers) == expected


def test_forwarded_header_forwarded_reads_only_forwarded() -> None:
    spoofed = ("X-Forwarded-For", "6.6.6.6")
    assert client(RFC7239, "10.1.2.3", spoofed, ("Forwarded", "for=198.51.100.7")) == "198.51.100.7"
    assert client(RFC7239, "10.1.2.3", spoofed) == "10.1.2.3"  # no Forwarded: the proxy itself


@pytest.mark.parametrize("header", ["X-Forwarded-For", "x-real-ip", "", "both"])
def test_an_unknown_forwarded_header_is_refused(header: str) -> None:
    with pytest.raises(ValueError, match="forwarded_header"):
        TrustedProxies(ENTRIES, header=header)


def test_nothing_is_trusted_by_default() -> None:
    proxies = TrustedProxies()
    assert not proxies.trusts_everything
    assert client(proxies, "127.0.0.1", ("X-Forwarded-For", "1.1.1.1")) == "127.0.0.1"


def test_trusting_everything_is_flagged() -> None:
    assert TrustedProxies(["0.0.0.0/0"]).trusts_everything
    assert TrustedProxies(["::/0"]).trusts_everything
    assert not TrustedProxies(["10.0.0.0/8"]).trusts_everything


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "proxy.example.com", "", "fe80::1%eth0"])
def test_bad_configuration_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        TrustedProxies([entry])


def test_mapped_proxy_entries_match_ipv4_peers() -> None:
    proxies = TrustedProxies(["::ffff:10.0.0.0/104"])
    assert client(proxies, "10.1.2.3", ("X-Forwarded-For", "198.51.100.7")) == "198.51.100.7"


def test_a_very_long_chain_is_cut() -> None:
    hops = ", ".join(["198.51.100.7"] + ["10.0.0.1"] * 500)
    assert client(PROXIES, "10.1.2.3", ("X-Forwarded-For", hops)) == "10.0.0.1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("192.0.2.1", "192.0.2.1"), (" 192.0.2.1:80 ", "192.0.2.1"), ('"[::1]:8"', "::1"), ("[::1", None), ("x", None)],
)
def test_parse_address(text: str, expected: str | None) -> None:
    found = parse_address(text)
    assert (None if found is None else str(found)) == expected


def test_the_client_of_a_chain_is_remembered_and_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a proxy the peer and the chain repeat: the second request parses nothing, and gets the same answer
    as the first; a changed chain or peer is worked out afresh; a chain longer than 256 characters is not kept."""
    import authmw.clientaddr as clientaddr

    proxies = TrustedProxies(["10.0.0.0/8"])
    parsed: list[str] = []
    real = clientaddr.parse_address
    monkeypatch.setattr(clientaddr, "parse_address", lambda text: parsed.append(text) or real(text))
    chain = {"x-forwarded-for": "6.6.6.6, 198.51.100.7"}
    assert proxies.client_address("10.1.2.3", chain) == "198.51.100.7"
    seen = len(parsed)
    assert proxies.client_address("10.1.2.3", chain) == "198.51.100.7"
    assert len(parsed) == seen
    assert proxies.client_address("10.1.2.3", {"x-forwarded-for": "198.51.100.8"}) == "198.51.100.8"
    assert proxies.client_address("198.51.100.9", chain) == "198.51.100.9"  # an untrusted peer: its own address
    assert proxies.client_address("10.1.2.3", {}) == "10.1.2.3"
    long = {"x-forwarded-for": ", ".join(["10.0.0.1"] * 40) + ", 198.51.100.7"}
    for _ in range(2):
        seen = len(parsed)
        assert proxies.client_address("10.1.2.3", long) == "198.51.100.7"
        assert len(parsed) > seen
