"""Tokens of an external OIDC issuer (joserfc, JWKS on loopback) through ``authmw proxy``, configured by
``token_issuers``: accepted for the user they name, refused precisely, and when the issuer goes down accepted for
the grace period, then refused."""

from __future__ import annotations

import base64
import hmac
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from authmw.assembly import trusted_issuers
from authmw.errors import ConfigurationError
from authmw.proxy.server import keep_issuers
from authmw.settings import Settings
from tests.support.forms import SETTINGS, Form, running
from tests.support.oidc_issuer import AUDIENCE, ISS, KEYS, FakeClock, Issuer
from tests.support.raw import status_of
from tests.support.world import World

GRACE = 120


class WallClock:
    """The issuer signs with the real time (the proxy checks expiry with it)."""

    def __call__(self) -> float:
        return time.time()


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    server = Issuer(WallClock())  # type: ignore[arg-type]
    yield server
    server.stop()


def issuer_settings(issuer: Issuer, **changes: Any) -> Settings:
    entry = {
        "issuer": ISS,
        "jwks_url": issuer.url,
        "domain": "default",
        "audience": AUDIENCE,
        "user_claim": "preferred_username",
        "algorithms": ["RS256", "ES256"],
        "grace": GRACE,
        **changes,
    }
    return replace(SETTINGS, token_issuers=(entry,))


@pytest.fixture(scope="module")
def proxy(world: World, issuer: Issuer) -> Iterator[Form]:
    with running("proxy", world, issuer_settings(issuer)) as form:
        yield form


def notebooks(form: Form, world: World, token: str) -> httpx.Response:
    return httpx.get(f"{form.url}/v1/{world.project}/notebooks", headers={"X-Auth-Token": token}, timeout=30)


def test_a_token_of_the_issuer_acts_as_the_user_it_names(proxy: Form, world: World, issuer: Issuer) -> None:
    for kid in ("rsa-1", "ec-1"):
        answer = notebooks(proxy, world, issuer.token(kid, preferred_username="scientist"))
        assert answer.status_code == 200, answer.text
        facts = proxy.facts(answer.json())
        assert (facts["user"], facts["method"], facts["project"]) == ("scientist", "token", world.project)
    denied = notebooks(proxy, world, issuer.token(preferred_username="outsider"))  # the store's policies decide
    assert (denied.status_code, denied.json()["error_code"]) == (403, "action_denied")


@pytest.mark.parametrize(
    ("claims", "header", "code"),
    [
        ({"preferred_username": "nobody"}, None, "invalid_token"),  # no such user in the issuer's domain
        ({"preferred_username": "stranger"}, None, "invalid_token"),  # a user of another domain
        ({"preferred_username": "scientist", "aud": "someone-else"}, None, "invalid_token"),
        ({"preferred_username": "scientist", "iss": ISS + "/other"}, None, "invalid_token"),  # not trusted
        ({"preferred_username": "scientist", "iat": 1_000, "exp": 2_000}, None, "token_expired"),
        ({"preferred_username": "scientist"}, {"alg": "HS256"}, "invalid_token"),
    ],
)
def test_refusals(proxy: Form, world: World, issuer: Issuer, claims: dict[str, Any], header: Any, code: str) -> None:
    token = issuer.token(**claims)
    if header is not None:  # alg confusion: HS256 keyed with the issuer's public key, which anyone can fetch
        payload = token.split(".")[1]
        head = _b64(json.dumps({**header, "kid": "rsa-1", "typ": "JWT"}).encode())
        secret = KEYS["rsa-1"].as_pem(private=False)
        token = f"{head}.{payload}.{_b64(hmac.new(secret, f'{head}.{payload}'.encode(), 'sha256').digest())}"
    answer = notebooks(proxy, world, token)
    assert (answer.status_code, answer.json()["error_code"]) == (401, code)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_tampered_token_is_refused(proxy: Form, world: World, issuer: Issuer) -> None:
    token = issuer.token(preferred_username="scientist")
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}{'AAAA' if not signature.endswith('AAAA') else 'BBBB'}"
    answer = notebooks(proxy, world, forged)
    assert (answer.status_code, answer.json()["error_code"]) == (401, "invalid_token")


def test_when_the_issuer_goes_down_tokens_work_for_the_grace_period_then_not(world: World) -> None:
    down = Issuer(WallClock())  # type: ignore[arg-type]
    settings = issuer_settings(down)
    timer = FakeClock()
    try:
        with running("proxy", world, settings) as form:
            # The configured issuer, with its key freshness on an injected timer (the proxy's own guard).
            form.guard.issuers = {t.issuer: t for t in trusted_issuers(settings, timer=timer)}
            cached = down.token(preferred_username="scientist", jti="cached")
            assert notebooks(form, world, cached).status_code == 200
            down.stop()
            timer.advance(300 + GRACE - 1)  # past the JWKS max-age (300 s), inside the grace period
            for token in (cached, down.token(preferred_username="scientist", jti="fresh")):
                assert notebooks(form, world, token).status_code == 200
            timer.advance(2)  # the grace period is over
            for token in (cached, down.token(preferred_username="scientist", jti="late")):
                answer = notebooks(form, world, token)
                assert (answer.status_code, answer.json()["error_code"]) == (503, "issuer_unavailable")
            down.start()  # back: the next request (after the retry backoff) starts a fetch and is not kept waiting
            timer.advance(31)
            answer = notebooks(form, world, cached)
            assert (answer.status_code, answer.json()["error_code"]) == (503, "issuer_unavailable")
            deadline = time.monotonic() + 5
            while answer.status_code == 503 and time.monotonic() < deadline:  # until the fetch installed the keys
                time.sleep(0.02)
                answer = notebooks(form, world, cached)
            assert answer.status_code == 200
    finally:
        down.stop()


BASE = {"issuer": ISS, "jwks_url": "http://127.0.0.1:1/j", "domain": "default", "audience": "api"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**BASE, "colour": "red"}, "unknown key"),
        ({"issuer": ISS, "jwks_url": "http://127.0.0.1:1/j", "audience": "api"}, "required"),
        ({**BASE, "issuer": "authmw"}, "authmw's own"),
        ({**BASE, "domain": "nowhere"}, "no domain"),
        ({key: value for key, value in BASE.items() if key != "audience"}, "audience is required"),
        ({**BASE, "jwks_url": "http://idp.example/j"}, "https"),
        ({**BASE, "algorithms": ["HS256"]}, "algorithms"),
        ({**BASE, "grace": "long"}, "token_issuers"),
    ],
)
def test_bad_issuer_configuration_is_refused_at_start(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        trusted_issuers(replace(SETTINGS, token_issuers=(entry,)), domains=["default"])


def test_an_external_token_is_checked_revoked_and_exchanged_like_an_iam_token(
    proxy: Form, world: World, issuer: Issuer
) -> None:
    token = issuer.token(preferred_username="scientist", jti="to-revoke", exp=int(time.time()) + 1200)
    tokens = proxy.url + "/v3/auth/tokens"
    assert httpx.head(tokens, headers={"X-Auth-Token": token, "X-Subject-Token": token}).status_code == 200
    exchanged = httpx.post(
        proxy.url + "/v3.0/OS-CREDENTIAL/securitytokens",
        json={"auth": {"identity": {"methods": ["token"], "token": {"duration_seconds": 3600}}}},
        headers={"X-Auth-Token": token},
    )
    assert exchanged.status_code == 201, exchanged.text
    expires = exchanged.json()["credential"]["expires_at"]  # capped by the external token's own expiry
    left = time.mktime(time.strptime(expires[:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(time.gmtime())
    assert 1190 <= left <= 1200
    revoked = httpx.delete(tokens, headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert revoked.status_code == 204
    time.sleep(0.3)  # the store's refresh
    answer = notebooks(proxy, world, token)
    assert (answer.status_code, answer.json()["error_code"]) == (401, "invalid_token")
    other = issuer.token(preferred_username="scientist", jti="another")  # the revocation names one token only
    assert notebooks(proxy, world, other).status_code == 200


def test_a_reload_keeps_the_key_sets_of_issuers_configured_as_before(issuer: Issuer) -> None:
    before = issuer_settings(issuer)
    old = SimpleNamespace(issuers={t.issuer: t for t in trusted_issuers(before)})
    same = SimpleNamespace(issuers={t.issuer: t for t in trusted_issuers(before)})
    keep_issuers(old, same, before, before)  # type: ignore[arg-type]
    assert same.issuers[ISS] is old.issuers[ISS]  # last good keys and grace survive the reload
    changed = issuer_settings(issuer, grace=10)
    other = SimpleNamespace(issuers={t.issuer: t for t in trusted_issuers(changed)})
    keep_issuers(old, other, before, changed)  # type: ignore[arg-type]
    assert other.issuers[ISS] is not old.issuers[ISS]


def test_a_forged_token_naming_the_issuer_is_refused_before_its_body(proxy: Form, world: World) -> None:
    """Review finding 4: the precheck passed any token whose unverified ``iss`` named a configured issuer, so an
    unauthenticated client made the proxy read and hold a 12 MiB body. Now it is refused from the head alone."""
    forged = ".".join(
        [_b64(json.dumps({"alg": "RS256", "kid": "x"}).encode()), _b64(json.dumps({"iss": ISS}).encode()), "AAAA"]
    )
    split = urlsplit(proxy.url)
    head = (
        f"POST /v2/{world.project}/training-jobs HTTP/1.1\r\nHost: {split.netloc}\r\nX-Auth-Token: {forged}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {12 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection((split.hostname or "", split.port or 80)) as sock:
        sock.sendall(head.encode())  # and never a byte of the body
        status, answer = status_of(sock, 10.0)
    assert status == 401, answer
