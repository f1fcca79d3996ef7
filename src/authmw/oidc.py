"""Tokens of external OIDC issuers, verified with the public keys each issuer publishes at its JWKS URL (no I/O).

:class:`OidcIssuer` verifies one issuer's tokens against a :class:`KeySet`; the edge fetches and refreshes the
set (:class:`authmw.client.jwks.JwksKeys`, which never makes a request wait for the network). A key verifies
exactly one algorithm, recorded when the key set is read, and a token whose header names another is refused, so no
token can pick its own algorithm (``none``, HS256 keyed with the public key, RS/ES swaps). A key set with no usable
keys (none fetched yet, or the issuer down past its grace period) refuses every token of its issuer, remembered
ones too, with :class:`~authmw.errors.IssuerUnavailable` (503).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authmw.cache import BoundedCache
from authmw.errors import ConfigurationError, ExpiredToken, InvalidToken
from authmw.tokens import PublicKey

__all__ = [
    "KEY_ALGORITHMS",
    "ExternalIdentity",
    "ExternalVerifier",
    "KeySet",
    "OidcIssuer",
    "TrustedIssuer",
    "cache_max_age",
    "parse_jwks",
    "peek_issuer",
]

#: The algorithm a key of each type verifies when its JWK names none (EC means P-256, OKP means Ed25519).
_KEY_ALGORITHM = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}
KEY_ALGORITHMS = tuple(sorted(_KEY_ALGORITHM.values()))
_MIN_RSA_BITS = 2048
_MAX_TOKEN = 8192  # a longer header value is not a token we accept: refused before any parsing
_MAX_USER_NAME = 64


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """Who a verified token of an external (OIDC) issuer names: the issuer's subject and user name, and the
    token's id (``jti``, else a digest of the token) and lifetime."""

    issuer: str
    subject: str
    user_name: str
    token_id: str
    issued_at: int
    expires_at: int


class ExternalVerifier(Protocol):
    """Verifies one external issuer's tokens (:class:`authmw.oidc.OidcIssuer` fetches its keys over HTTP)."""

    def verify(self, token: str) -> ExternalIdentity: ...

    def precheck(self, token: str) -> None:
        """Refuse, before a request's body is read and without fetching keys, what :meth:`verify` would."""


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """An external issuer the pipeline trusts: its tokens (``iss`` = ``issuer``) name users of ``domain``."""

    issuer: str
    domain: str
    verifier: ExternalVerifier = field(repr=False)


def peek_issuer(token: str) -> str | None:
    """The ``iss`` claim of a JWT, **unverified**, or None if unreadable.

    Only for choosing which verifier checks the token; anyone can write any ``iss``, so nothing else may rely on
    it.
    """
    if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        payload = json.loads(base64.b64decode(parts[1] + "=" * (-len(parts[1]) % 4), altchars=b"-_", validate=True))
    except (ValueError, RecursionError):
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None


class KeySet(Protocol):
    """An issuer's signing keys as :class:`OidcIssuer` reads them (kept fresh elsewhere)."""

    algorithms: tuple[str, ...]

    def check(self) -> None:
        """Raise :class:`~authmw.errors.IssuerUnavailable` when no key is usable."""

    def key(self, kid: str) -> tuple[str, PublicKey]:
        """The algorithm and key of ``kid``; :class:`~authmw.errors.InvalidToken` if there is none."""
        ...

    def __contains__(self, kid: object) -> bool: ...


def cache_max_age(cache_control: str) -> float | None:
    """The ``max-age`` of a Cache-Control header in seconds (0 for ``no-cache``/``no-store``), None if absent."""
    max_age = None
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-cache", "no-store"):
            return 0.0
        if name == "max-age" and value.strip().isdigit():
            max_age = float(value.strip())
    return max_age


def parse_jwks(body: bytes, algorithms: Iterable[str]) -> dict[str, tuple[str, PublicKey]]:
    """``kid`` → (algorithm, public key) for every usable signing key of a JWK set.

    Keys without a ``kid``, not for signing, of a type or algorithm not in ``algorithms``, RSA under 2048 bits,
    curves other than P-256/Ed25519, with private parts, or that do not parse are skipped; a ``kid`` used twice
    is dropped. :class:`ValueError` if the document is not a JSON object with a ``keys`` list.
    """
    allowed = frozenset(algorithms)
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, tuple[str, PublicKey]] = {}
    seen: set[str] = set()
    for jwk in document["keys"]:
        try:
            kid, entry = _parse_jwk(jwk, allowed)
        except (ValueError, TypeError, KeyError):
            continue
        if kid in seen:
            keys.pop(kid, None)  # ambiguous: neither key can be told apart by a token
        else:
            keys[kid] = entry
        seen.add(kid)
    return keys


def _parse_jwk(jwk: Any, allowed: frozenset[str]) -> tuple[str, tuple[str, PublicKey]]:
    if not isinstance(jwk, dict):
        raise TypeError("jwk")
    kid, kty = jwk.get("kid"), jwk.get("kty")
    if not isinstance(kid, str) or not kid or kty not in _KEY_ALGORITHM:
        raise ValueError("kid or kty")
    algorithm = jwk.get("alg", _KEY_ALGORITHM[kty])
    if algorithm != _KEY_ALGORITHM[kty] or algorithm not in allowed:
        raise ValueError("alg")
    operations = jwk.get("key_ops", ["verify"])
    if jwk.get("use", "sig") != "sig" or not isinstance(operations, list) or "verify" not in operations:
        raise ValueError("use")
    if "d" in jwk:
        raise ValueError("private")  # a published private key proves nothing about who signed
    key: PublicKey
    if kty == "RSA":
        n, e = int.from_bytes(_b64url(jwk["n"])), int.from_bytes(_b64url(jwk["e"]))
        if n.bit_length() < _MIN_RSA_BITS:
            raise ValueError("RSA key too small")
        key = rsa.RSAPublicNumbers(e, n).public_key()
    elif kty == "EC":
        x, y = _b64url(jwk["x"]), _b64url(jwk["y"])
        if jwk.get("crv") != "P-256" or len(x) != 32 or len(y) != 32:
            raise ValueError("curve")
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    else:
        if jwk.get("crv") != "Ed25519":
            raise ValueError("curve")
        key = ed25519.Ed25519PublicKey.from_public_bytes(_b64url(jwk["x"]))
    return kid, (algorithm, key)


class OidcIssuer:
    """Verifies the tokens of one external issuer: ``iss`` must be ``issuer``, signed by a key from its JWKS.

    ``audience`` (if set) must be among the token's ``aud``; ``user_claim`` names the user; ``leeway`` seconds of
    clock difference are tolerated on ``iat``/``nbf``/``exp``; up to ``cache_size`` verified tokens are remembered
    until they expire. ``keys`` (public: call ``keys.prime()`` at start-up) defaults to a :class:`JwksKeys` of
    ``jwks_url`` with its default timings. :meth:`verify` never waits for the network. RS256 only by default: the
    algorithm every OIDC provider supports.
    """

    def __init__(
        self,
        *,
        issuer: str,
        keys: KeySet,
        audience: str | None = None,
        algorithms: Iterable[str] = ("RS256",),
        user_claim: str = "sub",
        leeway: float = 30.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms, self.keys = tuple(algorithms), keys
        if not self.algorithms or not set(self.algorithms) <= set(self.keys.algorithms):
            raise ConfigurationError(f"{issuer}: algorithms must be among {', '.join(self.keys.algorithms)}")
        if not issuer or not user_claim:
            raise ConfigurationError("an OIDC issuer needs its issuer identifier and a user claim")
        if not 0 <= leeway <= 300 or cache_size < 0:
            raise ConfigurationError("leeway must be within 0-300 seconds and cache_size not negative")
        self.issuer, self.audience, self.user_claim, self.leeway = issuer, audience, user_claim, leeway
        self._clock = clock
        self._cache: BoundedCache[str, tuple[ExternalIdentity, str]] = BoundedCache(cache_size)

    def __repr__(self) -> str:
        return f"OidcIssuer(issuer={self.issuer!r}, audience={self.audience!r})"

    def verify(self, token: str) -> ExternalIdentity:
        """The identity a valid token names; :class:`InvalidToken` (forged, malformed, unknown key, wrong algorithm,
        issuer or audience, not yet valid), :class:`ExpiredToken`, or :class:`IssuerUnavailable` (no usable keys:
        none fetched yet, or grace is over). Never fetches nor waits: see :class:`JwksKeys`."""
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
            raise InvalidToken("not a token")
        hit = self._cache.get(token)
        if hit is not None:
            identity, kid = hit
            if identity.expires_at + self.leeway <= self._clock():
                self._cache.pop(token, None)
                raise ExpiredToken("the token has expired")
            self.keys.check()  # past grace a remembered token is refused like any other
            if kid in self.keys:
                return identity
            self._cache.pop(token, None)  # the issuer withdrew its key: verify afresh
        identity, kid = self._decode(token, self._clock())
        self._cache.put(token, (identity, kid))
        return identity

    def precheck(self, token: str) -> None:
        """What can be checked before a request's body is read, never fetching: a remembered token, or one whose
        ``kid`` is in the key set at hand, is verified in full (:meth:`verify`); with an unknown ``kid`` (a
        rotation :meth:`verify` would look for) only what needs no key is checked: the header's algorithm and
        ``kid``, and the claims ``iss``, ``aud``, ``sub``, the user claim, ``iat``, ``nbf`` and ``exp``. Raises as
        :meth:`verify` does; the signature of such a token is left to :meth:`verify`."""
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
            raise InvalidToken("not a token")
        if token in self._cache:
            self.verify(token)
            return
        try:
            header = jwt.get_unverified_header(token)
            payload = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise InvalidToken("the token is malformed") from None
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self.keys:
            self.verify(token)
            return
        self._check_header(header)
        if payload.get("iss") != self.issuer:
            raise InvalidToken("the token is not valid")
        if self.audience is not None:
            audience = payload.get("aud")
            audiences = [audience] if isinstance(audience, str) else audience
            if not isinstance(audiences, list) or self.audience not in audiences:
                raise InvalidToken("the token is not valid")
        self._check_claims(payload, self._clock())

    def _check_header(self, header: dict[str, Any]) -> str:
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise InvalidToken("algorithm not allowed")
        if "crit" in header:
            raise InvalidToken("unsupported critical header")  # no JWS extension is understood here
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no signing key named")
        return kid

    def _decode(self, token: str, now: float) -> tuple[ExternalIdentity, str]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise InvalidToken("the token is malformed") from None
        kid = self._check_header(header)
        algorithm = header["alg"]
        key_algorithm, key = self.keys.key(kid)
        if algorithm != key_algorithm:
            raise InvalidToken("the algorithm does not match the signing key")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                options={
                    "require": ["exp", "iat", "iss", "sub"],
                    "verify_aud": self.audience is not None,
                    # Times are checked below against the injected clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise InvalidToken("the token is not valid") from None
        issued_at, expires_at, subject, user_name = self._check_claims(payload, now)
        jti = payload.get("jti")
        if jti is not None and (not isinstance(jti, str) or not jti):
            raise InvalidToken("the token's id is malformed")
        # The signed part only: a signature can be re-encoded (padding, ECDSA malleability) without breaking it.
        signed = token.rpartition(".")[0]
        token_id = jti if jti is not None else hashlib.sha256(signed.encode()).hexdigest()
        return ExternalIdentity(self.issuer, subject, user_name, token_id, issued_at, expires_at), kid

    def _check_claims(self, payload: Any, now: float) -> tuple[int, int, str, str]:
        """The claims every token needs, and its times against ``now``: (iat, exp, sub, user name)."""
        if not isinstance(payload, dict) or not all(claim in payload for claim in ("exp", "iat", "iss", "sub")):
            raise InvalidToken("the token is not valid")
        subject, user_name = payload.get("sub"), payload.get(self.user_claim)
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token names no subject")
        if not isinstance(user_name, str) or not 0 < len(user_name) <= _MAX_USER_NAME or not user_name.isprintable():
            raise InvalidToken("the token names no valid user")
        issued_at, expires_at = _numeric_date(payload["iat"]), _numeric_date(payload["exp"])
        not_before = payload.get("nbf")
        if issued_at > now + self.leeway:
            raise InvalidToken("the token was issued in the future")
        if not_before is not None and _numeric_date(not_before) > now + self.leeway:
            raise InvalidToken("the token is not valid yet")
        if expires_at + self.leeway <= now:
            raise ExpiredToken("the token has expired")
        return issued_at, expires_at, subject, user_name


def _b64url(value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValueError("base64url")
    return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)


def _numeric_date(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken("the token's times are malformed")
    return int(value)
