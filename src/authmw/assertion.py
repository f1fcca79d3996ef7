"""``X-Authmw-Assertion``: a short-lived signed statement of what the sidecar established about a request.

The proxy signs (EdDSA, the store's token signing key, ``kid`` in the header) the identity, workspace and
action, bound to the request it forwards: method (``htm``), raw path (``htu``), raw query (``htq``) and request
id (``jti``), for ``assertion_ttl`` seconds, and addressed to one upstream (``aud``: ``assertion_audience``,
by default the origin of the proxy's ``upstream`` URL, e.g. ``http://127.0.0.1:9000``). An upstream on an
untrusted network verifies it with :func:`verify_assertion`, its own audience and the proxy's public keys
(``/.well-known/jwks.json``) and reads identity from the claims it returns, never from the plain ``X-Authmw-*``
headers: a forged header is worthless, and a captured assertion is refused on any other method, path, query or
upstream (sidecars of one store sign with the same key); :class:`UsedAssertions` remembers each ``jti`` until
``exp`` to refuse a second use. Only ``EdDSA`` is accepted, whatever the token says.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from itertools import islice
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from authmw.tokens import PublicKey

__all__ = [
    "ISSUER",
    "InvalidAssertion",
    "UsedAssertions",
    "jwk_of",
    "keys_from_jwks",
    "sign_assertion",
    "verify_assertion",
]

ISSUER = "authmw"


class InvalidAssertion(ValueError):
    """The assertion is missing, malformed, forged, expired or bound to another request."""


def sign_assertion(
    claims: Mapping[str, Any],
    key: ed25519.Ed25519PrivateKey,
    kid: str,
    *,
    method: str,
    path: str,
    query: str,
    request_id: str,
    ttl: int = 60,
    now: float | None = None,
    audience: str | None = None,
) -> str:
    """A compact JWS over ``claims`` plus issuer, times and the request binding (``htm``, ``htu``, ``htq``,
    ``jti``): ``path`` and ``query`` exactly as the upstream receives them; ``aud`` when ``audience`` is given."""
    issued = int(time.time() if now is None else now)
    binding: dict[str, Any] = {"htm": method, "htu": path, "htq": query, "jti": request_id}
    if audience is not None:
        binding["aud"] = audience
    payload = {**claims, "iss": ISSUER, "iat": issued, "exp": issued + ttl, **binding}
    # The JWS PyJWT's jwt.encode makes, byte for byte (a test holds them equal), without its per-call work
    # (header merging and sorting, key and algorithm checks): it is signed once per request on the sidecar's and
    # authz's hot path, where that work cost a quarter of the assertion.
    signing_input = _jws_header(kid) + b"." + _b64url(_compact(payload).encode())
    return (signing_input + b"." + _b64url(key.sign(signing_input))).decode()


#: ``json.dumps(..., separators=(",", ":"))`` without building an encoder per call (which it does for any separators).
_compact = json.JSONEncoder(separators=(",", ":")).encode


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=16)
def _jws_header(kid: str) -> bytes:
    """The encoded protected header of an assertion signed with ``kid`` (PyJWT's: sorted keys, ``typ`` JWT)."""
    return _b64url(json.dumps({"alg": "EdDSA", "kid": kid, "typ": "JWT"}, separators=(",", ":")).encode())


def verify_assertion(
    token: str,
    keys: Mapping[str, ed25519.Ed25519PublicKey],
    *,
    method: str,
    path: str,
    query: str,
    request_id: str | None = None,
    audience: str | None = None,
    leeway: float = 5.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a valid assertion for the request the upstream received; raises :class:`InvalidAssertion`.

    ``keys`` maps ``kid`` → public key (see :func:`keys_from_jwks`). ``method``, ``path`` and ``query`` are the
    request's as received, raw (ASGI: ``raw_path`` and ``query_string``; WSGI: ``REQUEST_URI`` split at ``?``):
    an assertion made for any other request is refused. ``request_id``, if given, must be its ``jti``.
    ``audience``, if given (an upstream should always give it), must be its ``aud``: the proxy's
    ``assertion_audience``, by default the origin of its ``upstream`` URL.
    """
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidAssertion("unknown signing key")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            issuer=ISSUER,
            leeway=leeway,
            audience=audience,
            options={
                "require": ["exp", "iat", "iss", "htm", "htu", "htq", "jti", *(["aud"] if audience else [])],
                "verify_iat": now is None,
                "verify_aud": audience is not None,
            },
        )
    except jwt.InvalidAudienceError:
        raise InvalidAssertion("assertion addressed to another upstream") from None
    except jwt.PyJWTError:
        raise InvalidAssertion("invalid assertion") from None
    if now is not None and claims["exp"] + leeway < now:
        raise InvalidAssertion("assertion expired")
    bound = (claims["htm"], claims["htu"], claims["htq"])
    if bound != (method, path, query) or (request_id is not None and claims["jti"] != request_id):
        raise InvalidAssertion("assertion bound to another request")
    return claims


class UsedAssertions:
    """The ``jti`` of each accepted assertion, kept until its ``exp`` (plus ``leeway``), so that a second use is
    refused. At most ``capacity`` are kept: when that many are still live, a new one is refused too (fail
    closed) rather than forgetting one that could then be replayed. Thread-safe; clock and lock injected."""

    __slots__ = ("_clock", "_live", "_lock", "capacity", "leeway")

    def __init__(
        self,
        capacity: int = 100_000,
        *,
        leeway: float = 5.0,
        clock: Callable[[], float] = time.time,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.capacity, self.leeway, self._clock = capacity, leeway, clock
        self._lock = lock if lock is not None else threading.Lock()
        self._live: dict[str, float] = {}  # jti → until when; insertion order is nearly expiry order

    def use(self, claims: Mapping[str, Any]) -> None:
        """Record the assertion of ``claims`` (from :func:`verify_assertion`) as used; raises
        :class:`InvalidAssertion` if it was used before, or if too many live ones are remembered."""
        jti, until = str(claims["jti"]), float(claims["exp"]) + self.leeway
        now = self._clock()
        with self._lock:
            live = self._live
            for seen in list(islice(live, 2)):  # two out per use keeps the front clear; a full sweep only when full
                if live[seen] <= now:
                    del live[seen]
            if jti in live and live[jti] > now:
                raise InvalidAssertion("assertion already used")
            if len(live) >= self.capacity:
                for seen in [k for k, v in live.items() if v <= now]:
                    del live[seen]
                if len(live) >= self.capacity:
                    raise InvalidAssertion("too many assertions in use")
            live[jti] = until


def jwk_of(kid: str, public: PublicKey) -> dict[str, str]:
    """The JWK of a token or assertion public key: Ed25519 (RFC 8037), P-256 or RSA."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk: dict[str, str] = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}
    jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, ed25519.Ed25519PublicKey]:
    """``kid`` → public key for every Ed25519 key of a JWKS document (others are skipped)."""
    keys = {}
    for entry in jwks.get("keys", ()):
        if isinstance(entry, dict) and entry.get("kty") == "OKP" and entry.get("crv") == "Ed25519":
            x = str(entry.get("x", ""))
            try:
                raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
                keys[str(entry.get("kid", ""))] = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            except ValueError:
                continue
    return keys
