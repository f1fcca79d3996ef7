"""External OIDC issuers: a joserfc test issuer whose JWKS is served over real HTTP on 127.0.0.1, a fake clock.

Fetches run on a background thread, so a test that needs keys installed primes them or polls (bounded)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc import jwt as jose_jwt

from authmw.client.jwks import JwksKeys, fetch_jwks
from authmw.errors import ConfigurationError, ExpiredToken, InvalidToken, IssuerUnavailable
from authmw.oidc import ExternalIdentity, OidcIssuer, cache_max_age, parse_jwks, peek_issuer
from tests.support.oidc_issuer import ALGORITHMS, AUDIENCE, ISS, KEYS, START, FakeClock, Issuer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def issuer(clock: FakeClock) -> Iterator[Issuer]:
    server = Issuer(clock)
    yield server
    server.gate.set()
    server.stop()


T = TypeVar("T")
PROMPT = 0.05  # seconds: a call that waits for the network takes far longer (the held issuer answers after 5 s)


def make_verifier(
    issuer: Issuer, clock: FakeClock, *, cache_size: int = 100, prime: bool = True, **options: Any
) -> OidcIssuer:
    """A verifier of the test issuer's tokens, its keys fetched first unless ``prime`` is False."""
    options = {"min_refetch": 10.0, "grace": 1000.0, **options}
    keys = JwksKeys(url=issuer.url, algorithms=ALGORITHMS, timer=clock, **options)
    if prime:
        assert keys.prime()
    return OidcIssuer(
        issuer=ISS,
        audience=AUDIENCE,
        algorithms=ALGORITHMS,
        user_claim="preferred_username",
        cache_size=cache_size,
        clock=clock,
        keys=keys,
    )


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def settled(issuer: Issuer) -> None:
    """Wait until no fetch of the issuer's JWKS is in flight (each runs on a thread named after the URL).

    A fetch's thread is started by the call that needs it, before that call returns: once none is in flight,
    ``issuer.hits`` is final for the calls made so far. Tests that show a call fetched nothing wait on this,
    not on a sleep that a slow machine could outrun."""
    wait_for(lambda: not any(thread.name.endswith(f" {issuer.url}") for thread in threading.enumerate()))


def eventually(call: Callable[[], T], seconds: float = 5.0) -> T:
    """``call()`` once it no longer raises IssuerUnavailable (its keys are being fetched in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except IssuerUnavailable:
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)


def prompt(call: Callable[[], object]) -> object:
    """``call()``, which must return or raise within PROMPT seconds; what it returned or raised."""
    started = time.monotonic()
    try:
        outcome = call()
    except Exception as exc:
        outcome = exc
    assert time.monotonic() - started < PROMPT
    return outcome


@pytest.fixture
def failures(caplog: pytest.LogCaptureFixture, issuer: Issuer) -> Callable[[], list[logging.LogRecord]]:
    """The failed fetches of this test's issuer logged so far (a fetch left over from another test may log too)."""
    caplog.set_level(logging.WARNING, logger="authmw.oidc")
    return lambda: [r for r in caplog.records if r.name == "authmw.oidc" and issuer.url in r.getMessage()]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: Any, sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


# --- valid tokens --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
def test_a_valid_token_names_the_user_of_the_user_claim(issuer: Issuer, clock: FakeClock, kid: str) -> None:
    verifier = make_verifier(issuer, clock)
    identity = verifier.verify(issuer.token(kid))
    assert identity == ExternalIdentity(ISS, "f81d4fae-7dec", "alice", "token-1", int(START), int(START) + 3600)
    assert issuer.hits == 1


def test_without_jti_the_token_id_is_the_sha256_of_its_signed_part(issuer: Issuer, clock: FakeClock) -> None:
    token = issuer.token(jti=None)
    verifier = make_verifier(issuer, clock)
    signed = token.rpartition(".")[0]
    assert verifier.verify(token).token_id == hashlib.sha256(signed.encode()).hexdigest()
    padded = token + "=="  # the same signature, re-encoded: still valid, and still the same token
    try:
        identity = verifier.verify(padded)
    except InvalidToken:
        return  # refused outright is fine too
    assert identity.token_id == hashlib.sha256(signed.encode()).hexdigest()


def test_a_fetch_stuck_for_longer_than_a_minute_is_given_up(issuer: Issuer, clock: FakeClock) -> None:
    verifier = make_verifier(issuer, clock)
    assert verifier.keys.prime()
    issuer.gate.clear()  # the next fetch hangs
    clock.advance(0.8 * 300)  # refresh ahead of expiry: a background fetch starts and hangs
    verifier.verify(issuer.token(jti="a"))
    wait_for(lambda: issuer.hits == 2)
    clock.advance(61)  # the stuck fetch no longer counts: the next use starts another
    verifier.verify(issuer.token(jti="b"))
    issuer.gate.set()
    wait_for(lambda: issuer.hits == 3)


def test_without_a_configured_audience_any_audience_is_accepted(issuer: Issuer, clock: FakeClock) -> None:
    keys = JwksKeys(url=issuer.url, algorithms=["RS256"], timer=clock)
    assert keys.prime()
    verifier = OidcIssuer(issuer=ISS, clock=clock, keys=keys)
    assert verifier.verify(issuer.token(aud="someone-else")).user_name == "f81d4fae-7dec"  # user_claim "sub"


def test_clock_differences_within_the_leeway_are_tolerated(issuer: Issuer, clock: FakeClock) -> None:
    now = int(clock())
    token = issuer.token(iat=now + 25, nbf=now + 25, exp=now - 25)
    assert make_verifier(issuer, clock).verify(token).expires_at == now - 25


# --- refused tokens ------------------------------------------------------------------------------------------


def _tampered_payload(issuer: Issuer) -> str:
    head, _, signature = issuer.token().split(".")
    forged = b64(json.dumps({**claims_of(issuer.token()), "preferred_username": "root"}).encode())
    return f"{head}.{forged}.{signature}"


def _tampered_signature(issuer: Issuer) -> str:
    token = issuer.token()
    middle = len(token) - 20
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


def _alg_none(issuer: Issuer) -> str:
    return forge({"alg": "none", "kid": "rsa-1"}, claims_of(issuer.token()), lambda _: b"")


def _hs256_with_the_public_key(issuer: Issuer) -> str:
    secret = KEYS["rsa-1"].as_pem(private=False)
    payload = claims_of(issuer.token())
    return forge({"alg": "HS256", "kid": "rsa-1"}, payload, lambda data: hmac.new(secret, data, "sha256").digest())


def _nested_header(issuer: Issuer) -> str:
    _, payload, signature = issuer.token().split(".")
    return f"{b64(b'[' * 3000 + b']' * 3000)}.{payload}.{signature}"


def _rs256(issuer: Issuer, header: dict[str, Any]) -> str:
    """Signed with rsa-1 by hand, for headers joserfc refuses to write."""
    private = KEYS["rsa-1"].private_key
    assert isinstance(private, rsa.RSAPrivateKey)
    payload = claims_of(issuer.token())
    return forge({"alg": "RS256", **header}, payload, lambda data: private.sign(data, padding.PKCS1v15(), SHA256()))


REFUSED: dict[str, Callable[[Issuer], str]] = {
    "wrong-issuer": lambda i: i.token(iss="https://login.example.test/realms/other"),
    "issuer-prefix": lambda i: i.token(iss=ISS + "/"),
    "wrong-audience": lambda i: i.token(aud="someone-else"),
    "no-audience": lambda i: i.token(aud=None),
    "nbf-in-future": lambda i: i.token(nbf=int(i.clock()) + 120),
    "iat-far-future": lambda i: i.token(iat=int(i.clock()) + 3600, exp=int(i.clock()) + 7200),
    "no-exp": lambda i: i.token(exp=None),
    "no-iat": lambda i: i.token(iat=None),
    "no-sub": lambda i: i.token(sub=None),
    "exp-not-a-number": lambda i: i.token(exp="tomorrow"),
    "no-user-claim": lambda i: i.token(preferred_username=None),
    "user-name-too-long": lambda i: i.token(preferred_username="a" * 65),
    "user-name-not-text": lambda i: i.token(preferred_username=["alice"]),
    "user-name-with-newline": lambda i: i.token(preferred_username="alice\r\nX-Admin: 1"),
    "jti-not-text": lambda i: i.token(jti=7),
    "tampered-payload": _tampered_payload,
    "tampered-signature": _tampered_signature,
    "alg-none": _alg_none,
    "hs256-keyed-with-the-public-key": _hs256_with_the_public_key,
    "es256-header-on-an-rsa-kid": lambda i: i.token("ec-1/rsa-1"),
    "rs256-header-on-an-ec-kid": lambda i: i.token("rsa-1/ec-1"),
    "empty-kid": lambda i: i.token(header={"kid": ""}),
    "kid-not-text": lambda i: _rs256(i, {"kid": 7}),
    "crit-header": lambda i: _rs256(i, {"kid": "rsa-1", "crit": ["exp"], "exp": 1}),
    "nested-header": _nested_header,
    "not-a-jwt": lambda _: "not.a.token",
    "jwe-shaped": lambda _: "a.b.c.d.e",
}


@pytest.mark.parametrize("make", REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_token_is_refused_as_invalid(issuer: Issuer, clock: FakeClock, make: Callable[[Issuer], str]) -> None:
    verifier = make_verifier(issuer, clock)
    verifier.verify(issuer.token(jti="warm-up"))  # the key set is loaded, so only the token can be at fault
    token = make(issuer)
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)
    assert type(refused.value) is InvalidToken
    assert issuer.hits == 1


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda i: i.token("ec-1/rsa-1"), "the algorithm does not match the signing key"),
        (lambda i: i.token("rsa-1/ec-1"), "the algorithm does not match the signing key"),
        (lambda i: _rs256(i, {"kid": "rsa-1", "crit": ["b64"], "b64": True}), "unsupported critical header"),
    ],
    ids=["es256-on-rsa", "rs256-on-ec", "crit"],
)
def test_the_header_is_checked_before_the_signature(
    issuer: Issuer, clock: FakeClock, make: Callable[[Issuer], str], detail: str
) -> None:
    # pyjwt would refuse these too; authmw must not depend on it, so the refusal has to come from the header check.
    with pytest.raises(InvalidToken) as refused:
        make_verifier(issuer, clock).verify(make(issuer))
    assert refused.value.detail == detail


def test_no_kid_header_at_all_is_refused(issuer: Issuer, clock: FakeClock) -> None:
    payload = claims_of(issuer.token())
    token = jose_jwt.encode({"alg": "RS256"}, payload, KEYS["rsa-1"], algorithms=["RS256"])
    with pytest.raises(InvalidToken):
        make_verifier(issuer, clock).verify(token)


def test_an_expired_token_is_refused_as_expired(issuer: Issuer, clock: FakeClock) -> None:
    token = issuer.token(iat=int(clock()) - 7200, exp=int(clock()) - 31)
    with pytest.raises(ExpiredToken):
        make_verifier(issuer, clock).verify(token)


def test_an_oversized_token_is_refused_before_any_parsing(issuer: Issuer, clock: FakeClock) -> None:
    token = issuer.token(padding="x" * 8200)
    with pytest.raises(InvalidToken):
        make_verifier(issuer, clock, prime=False).verify(token)
    settled(issuer)
    assert issuer.hits == 0


# --- the key set: unknown kids, rotation, refresh ahead of expiry --------------------------------------------


def test_an_unknown_kid_is_refused_at_once_and_found_by_one_background_refetch(
    issuer: Issuer, clock: FakeClock
) -> None:
    verifier = make_verifier(issuer, clock)
    issuer.published.append("rsa-2")  # rotated in at the issuer
    token = issuer.token("rsa-2", jti="rotated")
    refused = prompt(lambda: verifier.verify(token))
    assert isinstance(refused, InvalidToken)
    assert refused.detail == "unknown signing key"
    wait_for(lambda: "rsa-2" in verifier.keys)
    assert verifier.verify(token).token_id == "rotated"
    settled(issuer)
    assert issuer.hits == 2  # the prime, then exactly one refetch


def test_made_up_kids_refetch_once_per_min_refetch(issuer: Issuer, clock: FakeClock) -> None:
    verifier = make_verifier(issuer, clock, min_refetch=10.0)
    verifier.verify(issuer.token())
    assert issuer.hits == 1
    with pytest.raises(InvalidToken):
        verifier.verify(issuer.token("rsa-1/made-up-1"))
    settled(issuer)
    assert issuer.hits == 2
    clock.advance(9.9)
    for n in range(2, 5):  # other kids inside the window: refused, and the issuer is not asked
        with pytest.raises(InvalidToken):
            verifier.verify(issuer.token(f"rsa-1/made-up-{n}"))
        with pytest.raises(InvalidToken):
            verifier.keys.key(f"made-up-{n}")
    settled(issuer)
    assert issuer.hits == 2
    clock.advance(0.1)
    with pytest.raises(InvalidToken):
        verifier.verify(issuer.token("rsa-1/made-up-5"))
    settled(issuer)
    assert issuer.hits == 3


def test_an_unknown_kid_past_max_age_makes_one_fetch_not_two(issuer: Issuer, clock: FakeClock) -> None:
    issuer.max_age = 100
    verifier = make_verifier(issuer, clock)
    clock.advance(100)  # the refresh check() starts is the one the unknown kid waits for
    # Held at the issuer, so that it is still in flight when the kid is looked up: on a loaded machine that
    # preempted the test between the two, the refresh could be over already (then a fetch for the kid is allowed).
    issuer.gate.clear()
    with pytest.raises(InvalidToken):
        verifier.verify(issuer.token("rsa-1/made-up"))
    issuer.gate.set()
    settled(issuer)
    assert issuer.hits == 2


def test_keys_are_refreshed_in_the_background_ahead_of_expiry(issuer: Issuer, clock: FakeClock) -> None:
    issuer.max_age = 100
    verifier = make_verifier(issuer, clock)
    verifier.verify(issuer.token(jti="a"))
    clock.advance(79.9)
    verifier.verify(issuer.token(jti="b"))
    assert issuer.hits == 1  # before 80 % of max-age nothing is fetched
    clock.advance(0.1)
    issuer.published.append("rsa-2")
    issuer.gate.clear()  # the issuer holds the refresh until the caller has its answer
    started = time.monotonic()
    assert verifier.verify(issuer.token(jti="c")).token_id == "c"
    verifier.verify(issuer.token(jti="d"))  # a refresh is in flight: no second one
    assert time.monotonic() - started < 2.0
    wait_for(lambda: issuer.hits == 1 + 1)
    assert "rsa-2" not in verifier.keys
    issuer.gate.set()
    wait_for(lambda: "rsa-2" in verifier.keys)
    verifier.verify(issuer.token("rsa-2"))
    settled(issuer)
    assert issuer.hits == 2


@pytest.mark.parametrize(
    ("max_age", "refresh_after"),
    [(100, 80.0), (5, 48.0), (None, 240.0), (10**6, 69120.0)],
    ids=["header", "raised-to-60s", "default-300s", "capped-at-24h"],
)
def test_the_issuers_max_age_bounded_sets_the_refresh(
    issuer: Issuer, clock: FakeClock, max_age: int | None, refresh_after: float
) -> None:
    issuer.max_age = max_age
    verifier = make_verifier(issuer, clock)
    verifier.verify(issuer.token(exp=int(clock()) + 10**6))
    clock.advance(refresh_after - 0.5)
    verifier.verify(issuer.token(jti="later", exp=int(clock()) + 10))
    settled(issuer)
    assert issuer.hits == 1
    clock.advance(0.5)
    verifier.verify(issuer.token(jti="due", exp=int(clock()) + 10))
    wait_for(lambda: issuer.hits == 2)


def test_past_max_age_the_last_keys_answer_while_the_refresh_runs(issuer: Issuer, clock: FakeClock) -> None:
    issuer.max_age = 100
    verifier = make_verifier(issuer, clock)
    verifier.verify(issuer.token())
    issuer.published = ["ec-1"]  # rsa-1 withdrawn
    clock.advance(100)
    issuer.gate.clear()
    assert verifier.verify(issuer.token(jti="during")).token_id == "during"
    wait_for(lambda: issuer.hits == 2)
    issuer.gate.set()
    wait_for(lambda: "rsa-1" not in verifier.keys)
    with pytest.raises(InvalidToken):
        verifier.verify(issuer.token(jti="after"))


def test_a_cached_token_is_refused_once_its_key_is_withdrawn(issuer: Issuer, clock: FakeClock) -> None:
    issuer.max_age = 100
    verifier = make_verifier(issuer, clock)
    token = issuer.token()
    verifier.verify(token)
    issuer.published = ["ec-1"]
    clock.advance(80)
    # The refresh is held at the issuer while the token is checked again: otherwise it may be over (rsa-1 gone)
    # before that check, on a loaded machine that preempts the test between starting the fetch and reading the keys.
    issuer.gate.clear()
    verifier.verify(token)  # still the old keys, without waiting: the refresh runs in the background
    wait_for(lambda: issuer.hits == 2)
    issuer.gate.set()
    wait_for(lambda: "rsa-1" not in verifier.keys)
    with pytest.raises(InvalidToken):
        verifier.verify(token)


# --- the cache -----------------------------------------------------------------------------------------------


def test_a_cached_token_is_answered_without_verifying_and_expires(issuer: Issuer, clock: FakeClock) -> None:
    verifier = make_verifier(issuer, clock)
    token = issuer.token(exp=int(clock()) + 120)
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    clock.advance(120 + 30)
    with pytest.raises(ExpiredToken):
        verifier.verify(token)


def test_the_cache_is_bounded_oldest_out(issuer: Issuer, clock: FakeClock) -> None:
    verifier = make_verifier(issuer, clock, cache_size=2)
    a, b, c = (issuer.token(jti=name) for name in "abc")
    identity_a, identity_b = verifier.verify(a), verifier.verify(b)
    verifier.verify(c)
    assert verifier.verify(b) is identity_b
    assert verifier.verify(a) is not identity_a
    assert verifier.verify(a) == identity_a


# --- the issuer down -----------------------------------------------------------------------------------------


def _take_down(issuer: Issuer, how: str) -> None:
    if how == "500":
        issuer.status = 500
    elif how == "bad-document":
        issuer.document = b"<html>maintenance</html>"
    else:
        issuer.stop()


def _bring_back(issuer: Issuer, how: str) -> None:
    issuer.status, issuer.document = 200, None
    if how == "stopped":
        issuer.start()


@pytest.mark.parametrize("how", ["500", "bad-document", "stopped"])
def test_while_the_issuer_is_down_its_keys_last_until_grace_ends(
    issuer: Issuer, clock: FakeClock, how: str, failures: Callable[[], list[logging.LogRecord]]
) -> None:
    issuer.max_age = 100
    verifier = make_verifier(issuer, clock, min_refetch=10.0, grace=1000.0)
    cached = issuer.token(jti="cached")
    verifier.verify(cached)
    _take_down(issuer, how)

    clock.advance(85)  # the background refresh fails
    assert verifier.verify(cached).token_id == "cached"
    settled(issuer)
    assert len(failures()) == 1
    hits = issuer.hits
    clock.advance(5)  # within the backoff: the issuer is not asked again, not even for an unknown kid
    verifier.verify(cached)
    verifier.verify(issuer.token(jti="fresh-1"))
    with pytest.raises(InvalidToken):
        verifier.verify(issuer.token("rsa-1/made-up"))
    settled(issuer)
    assert issuer.hits == hits
    assert len(failures()) == 1

    clock.advance(60)  # expired, within grace: the last good keys answer; the refresh fails in the background
    assert verifier.verify(cached).token_id == "cached"
    assert verifier.verify(issuer.token(jti="fresh-2")).token_id == "fresh-2"
    settled(issuer)
    assert len(failures()) == 2

    clock.advance(100 + 1000 - 150)  # grace is over: cached and new tokens alike are refused
    with pytest.raises(IssuerUnavailable):
        verifier.verify(cached)
    with pytest.raises(IssuerUnavailable):
        verifier.verify(issuer.token(jti="fresh-3"))
    settled(issuer)
    assert len(failures()) == 3  # the fetch the first refusal started

    _bring_back(issuer, how)
    clock.advance(10)
    with pytest.raises(IssuerUnavailable):  # starts the fetch; answers without waiting for it
        verifier.verify(cached)
    assert eventually(lambda: verifier.verify(cached)).token_id == "cached"
    assert verifier.verify(issuer.token(jti="fresh-4")).token_id == "fresh-4"

    # The URL and the exception type only: no body, no key material.
    error = {"500": "HTTPStatusError", "bad-document": "JSONDecodeError", "stopped": "ConnectError"}[how]
    expected = f"fetching the JWKS at {issuer.url} failed: {error}"
    assert [(r.levelno, r.getMessage()) for r in failures()] == [(logging.WARNING, expected)] * 3


@pytest.mark.parametrize("how", ["500", "stopped"])
def test_never_fetched_and_down_is_issuer_unavailable_with_backoff(
    issuer: Issuer, clock: FakeClock, how: str, failures: Callable[[], list[logging.LogRecord]]
) -> None:
    _take_down(issuer, how)
    verifier = make_verifier(issuer, clock, min_refetch=10.0, prime=False)
    token = issuer.token()
    with pytest.raises(IssuerUnavailable):
        verifier.verify(token)
    settled(issuer)
    assert len(failures()) == 1
    with pytest.raises(IssuerUnavailable):
        verifier.verify(token)
    settled(issuer)
    assert issuer.hits == (1 if how == "500" else 0)
    assert len(failures()) == 1
    _bring_back(issuer, how)
    clock.advance(9.9)
    with pytest.raises(IssuerUnavailable):  # still within the backoff
        verifier.verify(token)
    settled(issuer)
    assert issuer.hits == (1 if how == "500" else 0)
    clock.advance(0.1)
    assert eventually(lambda: verifier.verify(token)).user_name == "alice"
    assert issuer.hits == (2 if how == "500" else 1)


# --- never waiting for the issuer, and priming at start-up ---------------------------------------------------


Situation = Callable[[Issuer, FakeClock], tuple[OidcIssuer, str, type[Exception] | None]]


def _no_keys_yet(issuer: Issuer, clock: FakeClock) -> tuple[OidcIssuer, str, type[Exception] | None]:
    return make_verifier(issuer, clock, prime=False), "rsa-1", IssuerUnavailable


def _past_max_age(issuer: Issuer, clock: FakeClock) -> tuple[OidcIssuer, str, type[Exception] | None]:
    verifier = make_verifier(issuer, clock)
    clock.advance(300)
    return verifier, "rsa-1", None


def _unknown_kid(issuer: Issuer, clock: FakeClock) -> tuple[OidcIssuer, str, type[Exception] | None]:
    return make_verifier(issuer, clock), "made-up", InvalidToken


SITUATIONS: dict[str, Situation] = {
    "no-keys-yet": _no_keys_yet,
    "past-max-age": _past_max_age,
    "unknown-kid": _unknown_kid,
}


@pytest.mark.parametrize("situation", SITUATIONS.values(), ids=SITUATIONS.keys())
def test_a_held_issuer_never_makes_a_caller_wait(issuer: Issuer, clock: FakeClock, situation: Situation) -> None:
    verifier, kid, refusal = situation(issuer, clock)
    hits = issuer.hits
    issuer.gate.clear()  # the issuer holds its answer for 5 s
    token = issuer.token(f"rsa-1/{kid}", jti="held")
    lookups = [prompt(lambda: verifier.verify(token)), prompt(lambda: verifier.keys.key(kid))]
    checks = [prompt(verifier.keys.check) for _ in range(3)]
    wait_for(lambda: issuer.hits == hits + 1)  # one fetch started, held by the issuer
    lookups += [prompt(lambda: verifier.verify(token)), prompt(lambda: verifier.keys.key(kid))]
    checks += [prompt(verifier.keys.check)]
    if refusal is None:  # the last good keys answer
        assert isinstance(lookups[0], ExternalIdentity)
        assert isinstance(lookups[2], ExternalIdentity)
        assert lookups[1] == lookups[3] == verifier.keys.key(kid)
    else:
        assert [type(answer) for answer in lookups] == [refusal] * 4
    check_answer = IssuerUnavailable if refusal is IssuerUnavailable else type(None)
    assert [type(answer) for answer in checks] == [check_answer] * 4
    issuer.gate.set()  # the held fetch ends; one started by the calls above would reach the issuer too
    settled(issuer)
    assert issuer.hits == hits + 1


def test_prime_fetches_and_waits(issuer: Issuer, clock: FakeClock) -> None:
    keys = JwksKeys(url=issuer.url, algorithms=ALGORITHMS, timer=clock)
    assert "rsa-1" not in keys
    assert keys.prime() is True
    assert "rsa-1" in keys
    assert issuer.hits == 1
    keys.check()
    assert keys.key("rsa-1")[0] == "RS256"
    assert keys.prime() is True  # fresh keys: nothing to fetch
    settled(issuer)
    assert issuer.hits == 1
    clock.advance(240)  # due for a refresh: fetched again
    issuer.published = ["ec-1"]
    assert keys.prime() is True
    assert issuer.hits == 2
    assert "rsa-1" not in keys


@pytest.mark.parametrize("how", ["held", "500", "stopped"])
def test_prime_with_a_held_or_failing_issuer_is_false_within_its_timeout(
    issuer: Issuer, clock: FakeClock, how: str, failures: Callable[[], list[logging.LogRecord]]
) -> None:
    if how == "held":
        issuer.gate.clear()
    else:
        _take_down(issuer, how)
    keys = JwksKeys(url=issuer.url, algorithms=ALGORITHMS, timer=clock)
    started = time.monotonic()
    assert keys.prime(timeout=0.3) is False
    assert time.monotonic() - started < 0.3 + PROMPT
    with pytest.raises(IssuerUnavailable):
        keys.check()
    if how != "held":
        assert len(failures()) == 1


def test_prime_joins_the_fetch_in_flight(issuer: Issuer, clock: FakeClock) -> None:
    verifier = make_verifier(issuer, clock, prime=False)
    issuer.gate.clear()
    with pytest.raises(IssuerUnavailable):
        verifier.verify(issuer.token())  # starts a fetch, held
    wait_for(lambda: issuer.hits == 1)
    assert verifier.keys.prime(timeout=0.1) is False  # the held fetch is still in flight: no second one
    release = threading.Timer(0.2, issuer.gate.set)
    release.start()
    assert verifier.keys.prime() is True
    release.join()
    assert issuer.hits == 1
    assert verifier.verify(issuer.token()).user_name == "alice"


def test_the_default_fetcher_gives_up_on_a_dripping_answer_at_its_deadline(issuer: Issuer) -> None:
    issuer.drip = 0.02  # headers at once, then the body a byte at a time: about 30 s for the key set
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        fetch_jwks(issuer.url, deadline=0.5)
    assert 0.5 <= time.monotonic() - started < 0.5 + 0.2
    issuer.drip = None
    body, max_age = fetch_jwks(issuer.url, deadline=0.5)
    assert set(parse_jwks(body, ALGORITHMS)) == {"rsa-1", "ec-1", "ed-1"}
    assert max_age == 300


def _jwk(name: str, /, **changes: Any) -> dict[str, Any]:
    return {**KEYS[name].as_dict(private=False), **changes}


MALFORMED = {
    "not-json": b"<html>",
    "a-list": b"[]",
    "no-keys": b"{}",
    "keys-not-a-list": b'{"keys": {}}',
    "empty-keys": b'{"keys": []}',
    "small-rsa-key": json.dumps({"keys": [_jwk("rsa-small")]}).encode(),
    "p384-curve": json.dumps({"keys": [_jwk("ec-384")]}).encode(),
    "p384-named-p256": json.dumps({"keys": [_jwk("ec-384", crv="P-256")]}).encode(),
}


@pytest.mark.parametrize("document", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_jwks_is_a_failed_fetch(issuer: Issuer, clock: FakeClock, document: bytes) -> None:
    issuer.document = document
    verifier = make_verifier(issuer, clock, prime=False)
    assert verifier.keys.prime() is False
    with pytest.raises(IssuerUnavailable):
        verifier.verify(issuer.token())
    settled(issuer)
    assert issuer.hits == 1  # within the backoff the failed prime is not repeated


def test_unusable_keys_are_skipped_and_the_rest_used() -> None:
    private_rsa = KEYS["rsa-2"].as_dict(private=True)
    document = {
        "keys": [
            _jwk("rsa-1"),
            _jwk("ec-1"),
            _jwk("ed-1", use="enc"),
            _jwk("rsa-2", kid=None),
            {**private_rsa, "kid": "private"},
            _jwk("rsa-small"),
            _jwk("ec-384"),
            _jwk("rsa-2", kid="wrong-alg", alg="ES256"),
            _jwk("rsa-2", kid="no-verify", key_ops=["encrypt"]),
            _jwk("rsa-2", kid="bad-base64", n="!!!"),
            _jwk("rsa-2", kid="twice"),
            _jwk("ec-1", kid="twice"),
            {"kid": "oct", "kty": "oct", "k": "c2VjcmV0"},
            "not-a-key",
        ]
    }
    keys = parse_jwks(json.dumps(document).encode(), ALGORITHMS)
    assert {kid: algorithm for kid, (algorithm, _) in keys.items()} == {"rsa-1": "RS256", "ec-1": "ES256"}
    # With ES256 alone the RSA "twice" is not a key at all, so the EC one is no longer ambiguous.
    assert set(parse_jwks(json.dumps(document).encode(), ["ES256"])) == {"ec-1", "twice"}


def test_a_key_of_an_algorithm_not_allowed_is_unknown(issuer: Issuer, clock: FakeClock) -> None:
    keys = JwksKeys(url=issuer.url, algorithms=["ES256"], timer=clock)
    assert keys.prime()
    verifier = OidcIssuer(issuer=ISS, algorithms=["ES256"], clock=clock, keys=keys)
    assert verifier.verify(issuer.token("ec-1")).subject == "f81d4fae-7dec"
    with pytest.raises(InvalidToken):
        verifier.verify(issuer.token("rsa-1"))


# --- helpers and configuration -------------------------------------------------------------------------------


def test_peek_issuer_reads_the_unverified_iss(issuer: Issuer) -> None:
    assert peek_issuer(issuer.token()) == ISS
    assert peek_issuer(_tampered_signature(issuer)) == ISS  # unverified: the signature plays no part
    assert peek_issuer(issuer.token(iss=7)) is None
    assert peek_issuer(forge({"alg": "none"}, ["not", "an", "object"], lambda _: b"")) is None
    for garbage in ("", "abc", "a.b.c", "a.b.c.d.e", "x" * 9000):
        assert peek_issuer(garbage) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [("public, max-age=120", 120.0), ("max-age=0", 0.0), ("no-store", 0.0), ("private", None), ("", None)],
)
def test_cache_max_age(header: str, expected: float | None) -> None:
    assert cache_max_age(header) == expected


CONFIG_ERRORS: dict[str, Callable[[], object]] = {
    "hs256-keys": lambda: JwksKeys(url="https://idp.example/jwks", algorithms=["HS256"]),
    "no-algorithms": lambda: JwksKeys(url="https://idp.example/jwks", algorithms=[]),
    "plain-http": lambda: JwksKeys(url="http://idp.example/jwks", algorithms=["RS256"]),
    "max-age-too-small": lambda: JwksKeys(url="https://idp.example/jwks", algorithms=["RS256"], default_max_age=5),
    "min-refetch-0": lambda: JwksKeys(url="https://idp.example/jwks", algorithms=["RS256"], min_refetch=0),
    "min-refetch-under-1s": lambda: JwksKeys(url="https://idp.example/jwks", algorithms=["RS256"], min_refetch=0.9),
    "min-refetch-nan": lambda: JwksKeys(url="https://idp.example/jwks", algorithms=["RS256"], min_refetch=math.nan),
    "negative-grace": lambda: JwksKeys(url="https://idp.example/jwks", algorithms=["RS256"], grace=-1),
    "hs256-issuer": lambda: OidcIssuer(
        issuer=ISS, algorithms=["HS256"], keys=JwksKeys(url="https://idp.example/jwks", algorithms=["RS256"])
    ),
    "algorithm-not-in-key-set": lambda: OidcIssuer(
        issuer=ISS, algorithms=["ES256"], keys=JwksKeys(url="https://idp.example/jwks", algorithms=["RS256"])
    ),
}


@pytest.mark.parametrize("build", CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys())
def test_invalid_configuration_fails_at_start_up(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError):
        build()
