"""IAM tokens: issue and verify, the algorithm allow-list, keys by kid, expiry on an injected clock, the cache."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authmw.errors import ConfigurationError, ExpiredToken, InvalidToken
from authmw.tokens import TokenSigner, TokenVerifier

T0 = 1_800_000_000
ED = ed25519.Ed25519PrivateKey.generate()
P256 = ec.generate_private_key(ec.SECP256R1())
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
USER = {"user_id": "u1", "user_name": "alice", "domain_id": "d1", "domain_name": "acme"}


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def pair(key: Any = ED, algorithm: str = "EdDSA", **verifier: Any) -> tuple[TokenSigner, TokenVerifier, Clock]:
    clock = Clock()
    signer = TokenSigner("k1", key, algorithm=algorithm, clock=clock)
    verifier.setdefault("algorithms", (algorithm,))
    return signer, TokenVerifier({"k1": key.public_key()}, clock=clock, **verifier), clock


@pytest.mark.parametrize(("key", "algorithm"), [(ED, "EdDSA"), (P256, "ES256"), (RSA, "RS256")])
def test_a_token_round_trips(key: Any, algorithm: str) -> None:
    signer, verifier, _clock = pair(key, algorithm)
    token, issued = signer.issue(**USER, project_id="p1", project_name="cn-north-4")
    claims = verifier.verify(token)
    assert claims == issued
    assert (claims.user_name, claims.project_name, claims.methods) == ("alice", "cn-north-4", ("password",))
    assert claims.expires_at - claims.issued_at == 24 * 3600
    assert jwt.get_unverified_header(token)["kid"] == "k1"


def test_a_domain_scoped_token() -> None:
    signer, verifier, _clock = pair()
    token, _ = signer.issue(**USER)
    claims = verifier.verify(token)
    assert claims.project_id is None and claims.domain_name == "acme"


def test_the_algorithm_comes_from_the_configuration_only() -> None:
    signer, _verifier, clock = pair(P256, "ES256")
    token, _ = signer.issue(**USER)
    eddsa_only = TokenVerifier({"k1": P256.public_key()}, clock=clock)  # EdDSA by default
    with pytest.raises(InvalidToken):
        eddsa_only.verify(token)


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_forged_tokens_are_refused() -> None:
    signer, verifier, _clock = pair()
    token, _ = signer.issue(**USER)
    header, payload, signature = _segments(token)
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    raw_public = ED.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    forged = [
        f"{header}.{_b64({**claims, 'sub': 'admin'})}.{signature}",  # tampered payload
        f"{header}.{payload}.{signature[:-4]}AAAA",  # tampered signature
        f"{_b64({'alg': 'none', 'kid': 'k1'})}.{payload}.",  # alg none
        jwt.encode(claims, raw_public, algorithm="HS256", headers={"kid": "k1"}),  # the public key as an HMAC key
        jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "k1"}),
        jwt.encode(claims, ED, algorithm="EdDSA", headers={"kid": "k2"}),  # unknown kid
        jwt.encode(claims, ED, algorithm="EdDSA"),  # no kid
        jwt.encode({**claims, "iss": "someone-else"}, ED, algorithm="EdDSA", headers={"kid": "k1"}),
        jwt.encode({k: v for k, v in claims.items() if k != "jti"}, ED, algorithm="EdDSA", headers={"kid": "k1"}),
        jwt.encode({**claims, "domain": "acme"}, ED, algorithm="EdDSA", headers={"kid": "k1"}),  # malformed claims
        jwt.encode({**claims, "exp": "tomorrow"}, ED, algorithm="EdDSA", headers={"kid": "k1"}),
        jwt.encode({**claims, "iat": T0 + 3600}, ED, algorithm="EdDSA", headers={"kid": "k1"}),  # from the future
        "",
        "not-a-token",
        "a.b.c",
        "x" * 10_000,
    ]
    for token in forged:
        with pytest.raises(InvalidToken):
            verifier.verify(token)


def test_expiry_follows_the_injected_clock_and_the_cache() -> None:
    signer, verifier, clock = pair()
    token, claims = signer.issue(**USER)
    assert verifier.verify(token) == claims  # now cached
    clock.now = claims.expires_at + 29  # within the leeway
    assert verifier.verify(token) == claims
    clock.now = claims.expires_at + 31
    with pytest.raises(ExpiredToken):
        verifier.verify(token)  # the cached entry expires too
    with pytest.raises(ExpiredToken):
        verifier.verify(token)  # and uncached
    fresh = TokenVerifier({"k1": ED.public_key()}, clock=clock)
    with pytest.raises(ExpiredToken):
        fresh.verify(token)


def test_the_cache_is_bounded_and_forgets_on_request() -> None:
    clock = Clock()
    signer = TokenSigner("k1", ED, clock=clock)
    verifier = TokenVerifier({"k1": ED.public_key()}, cache_size=2, clock=clock)
    tokens = [signer.issue(**USER)[0] for _ in range(3)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._cache) == 2 and tokens[0] not in verifier._cache
    verifier.forget(tokens[2])
    assert tokens[2] not in verifier._cache
    assert verifier.verify(tokens[2]).user_id == "u1"


def test_rotation_keeps_old_keys_valid_while_listed() -> None:
    clock = Clock()
    old, new = (
        TokenSigner("old", ED, clock=clock),
        TokenSigner("new", ed25519.Ed25519PrivateKey.generate(), clock=clock),
    )
    keys = {"old": ED.public_key(), "new": new._key.public_key()}  # type: ignore[union-attr]
    verifier = TokenVerifier(keys, clock=clock)
    assert verifier.verify(old.issue(**USER)[0]).user_id == "u1"
    assert verifier.verify(new.issue(**USER)[0]).user_id == "u1"


@pytest.mark.parametrize(
    ("key", "algorithm", "options"),
    [
        (ED, "ES256", {}),
        (P256, "EdDSA", {}),
        (ec.generate_private_key(ec.SECP384R1()), "ES256", {}),
        (ED, "HS256", {}),
        (ED, "EdDSA", {"ttl": 10}),
        (ED, "EdDSA", {"ttl": 30 * 24 * 3600}),
    ],
)
def test_bad_signer_configurations(key: Any, algorithm: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        TokenSigner("k", key, algorithm=algorithm, **options)


@pytest.mark.parametrize("algorithms", [(), ("HS256",), ("none",), ("EdDSA", "RS512")])
def test_bad_verifier_algorithms(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError):
        TokenVerifier({}, algorithms=algorithms)


def test_no_key_material_in_the_signer_repr() -> None:
    signer, _verifier, _clock = pair()
    raw = ED.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    assert repr(signer) == "TokenSigner(kid='k1', algorithm='EdDSA')" and raw.hex() not in repr(signer)


def test_an_unknown_kid_reloads_the_key_set_at_most_once_per_interval() -> None:
    clock = Clock()
    ticks = [0.0]
    new_key = ed25519.Ed25519PrivateKey.generate()
    calls: list[int] = []

    def refresh() -> dict[str, Any]:
        calls.append(1)
        return {"k1": ED.public_key(), "k2": new_key.public_key()}

    verifier = TokenVerifier({"k1": ED.public_key()}, clock=clock, refresh=refresh, timer=lambda: ticks[0])
    rotated = TokenSigner("k2", new_key, clock=clock).issue(**USER)[0]
    assert verifier.verify(rotated).user_id == "u1" and len(calls) == 1  # found by one reload
    made_up = jwt.encode({"sub": "x"}, ED, algorithm="EdDSA", headers={"kid": "k9"})
    for _ in range(5):
        with pytest.raises(InvalidToken):
            verifier.verify(made_up)
    assert len(calls) == 1  # no reload within the interval of the last one
    ticks[0] += 10
    with pytest.raises(InvalidToken):
        verifier.verify(made_up)
    with pytest.raises(InvalidToken):
        verifier.verify(made_up)
    assert len(calls) == 2  # one reload once the interval passed, then none again


def test_a_key_verifies_only_its_own_algorithm_even_when_several_are_allowed() -> None:
    signer, _verifier, clock = pair()
    token, _ = signer.issue(**USER)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    verifier = TokenVerifier(
        {"k1": ED.public_key(), "k2": P256.public_key()}, algorithms=("EdDSA", "ES256"), clock=clock
    )
    assert verifier.verify(token).user_name == "alice"
    attacker = ec.generate_private_key(ec.SECP256R1())
    swapped = [
        jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": "k1"}),  # ES256 named for the Ed25519 key
        jwt.encode(claims, ED, algorithm="EdDSA", headers={"kid": "k2"}),  # EdDSA named for the P-256 key
    ]
    for forged in swapped:
        with pytest.raises(InvalidToken):  # never a TypeError (a 500) from PyJWT's key handling
            verifier.verify(forged)


@pytest.mark.parametrize("depth", [3_000, 100_000])
def test_deeply_nested_headers_and_payloads_are_invalid_tokens(depth: int) -> None:
    _signer, verifier, _clock = pair()
    nested = base64.urlsafe_b64encode(b"[" * depth).rstrip(b"=").decode()
    for token in (f"{nested}.e30.sig", f"{_b64({'alg': 'EdDSA', 'kid': 'k1'})}.{nested}.sig"):
        with pytest.raises(InvalidToken):
            verifier.verify(token[:8192])
