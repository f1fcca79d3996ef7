"""IAM tokens (``X-Auth-Token``): signed JWTs issued for a user and a scope, verified against a key set.

The algorithms a verifier accepts come from its configuration only, never from the token; the key is chosen
by the token's ``kid`` among the configured keys. A verified token is remembered (bounded) until it expires, so
a repeated token costs a dict lookup; revocation is the caller's check on the returned claims (the pipeline asks
the store, whose answers are cached and invalidated within a second).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authmw.cache import BoundedCache
from authmw.errors import ConfigurationError, ExpiredToken, InvalidToken

__all__ = ["DEFAULT_TTL", "ISSUER", "TOKEN_ALGORITHMS", "TokenClaims", "TokenSigner", "TokenVerifier"]

ISSUER = "authmw"
DEFAULT_TTL = 24 * 3600
#: What a key of each kind signs with.
ALGORITHMS = {"EdDSA": ed25519.Ed25519PrivateKey, "ES256": ec.EllipticCurvePrivateKey, "RS256": rsa.RSAPrivateKey}
#: The token signing algorithms, in the order the settings, the CLI and the store name them.
TOKEN_ALGORITHMS = tuple(ALGORITHMS)
_MAX_TOKEN = 8192  # a longer header value is not one of ours: refused before any parsing

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says: who, for which scope, until when (``project_id`` None: domain scope)."""

    token_id: str
    user_id: str
    user_name: str
    domain_id: str
    domain_name: str
    project_id: str | None
    project_name: str | None
    methods: tuple[str, ...]
    issued_at: int
    expires_at: int
    mfa: bool = False


class KeyReloads:
    """When a key set may be reloaded for an unknown ``kid``: at once when the key source's ``revision`` moved
    since the last reload (a rotation elsewhere), else at most once per ``interval`` seconds of ``timer`` (made-up
    kids cannot hammer the key source, nor delay a real rotation beyond one revision poll)."""

    __slots__ = ("_interval", "_last", "_revision", "_seen", "_timer")

    def __init__(self, interval: float, timer: Callable[[], float], revision: Callable[[], int] | None = None) -> None:
        self._interval, self._timer, self._revision = interval, timer, revision
        self._last = float("-inf")
        self._seen: int | None = None

    def due(self) -> bool:
        """Whether to reload now (and, if so, the reload is counted)."""
        now = self._timer()
        revision = None if self._revision is None else self._revision()
        if (revision is None or revision == self._seen) and now - self._last < self._interval:
            return False
        self._last, self._seen = now, revision
        return True


class TokenSigner:
    """Issues tokens with one private key (``kid`` in the header); ``ttl`` seconds of validity (24 h default)."""

    def __init__(
        self,
        kid: str,
        key: PrivateKey,
        *,
        algorithm: str = "EdDSA",
        ttl: int = DEFAULT_TTL,
        issuer: str = ISSUER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        kind = ALGORITHMS.get(algorithm)
        if kind is None or not isinstance(key, kind):
            raise ConfigurationError(
                f"a {type(key).__name__} cannot sign {algorithm}; allowed: {', '.join(ALGORITHMS)}"
            )
        if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
            raise ConfigurationError("ES256 needs a P-256 key")
        if not 60 <= ttl <= 7 * 24 * 3600:
            raise ConfigurationError("a token lives between 60 seconds and 7 days")
        self.kid, self._key, self.algorithm, self.ttl, self.issuer, self._clock = (
            kid,
            key,
            algorithm,
            ttl,
            issuer,
            clock,
        )

    def __repr__(self) -> str:
        return f"TokenSigner(kid={self.kid!r}, algorithm={self.algorithm!r})"

    def issue(
        self,
        *,
        user_id: str,
        user_name: str,
        domain_id: str,
        domain_name: str,
        project_id: str | None = None,
        project_name: str | None = None,
        methods: Iterable[str] = ("password",),
        not_before: int | None = None,
    ) -> tuple[str, TokenClaims]:
        """A new token and its claims; ``not_before``: the user's password change time, which a token issued now
        must not predate (the change covers the second it was made in)."""
        now = max(int(self._clock()), not_before or 0)
        claims = TokenClaims(
            os.urandom(16).hex(),
            user_id,
            user_name,
            domain_id,
            domain_name,
            project_id,
            project_name,
            tuple(methods),
            now,
            now + self.ttl,
        )
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user_id,
            "jti": claims.token_id,
            "iat": now,
            "exp": claims.expires_at,
            "name": user_name,
            "domain": {"id": domain_id, "name": domain_name},
            "methods": list(claims.methods),
        }
        if project_id is not None:
            payload["project"] = {"id": project_id, "name": project_name}
        import jwt  # on use: it imports cryptography.x509 (~25 ms); the store and the CLI need this module's types

        token = jwt.encode(payload, self._key, algorithm=self.algorithm, headers={"kid": self.kid})
        return token, claims


class TokenVerifier:
    """Verifies tokens signed by any of ``keys`` (``kid`` → public key) with an allowed algorithm.

    ``algorithms`` is the allow-list (EdDSA only by default); ``leeway`` seconds of clock difference are
    tolerated on ``iat``/``exp``; up to ``cache_size`` verified tokens are remembered until they expire.
    ``refresh`` (optional) returns the current key set; it is called for an unknown ``kid`` as
    :class:`KeyReloads` allows (``revision`` is the key source's change counter, if it has one).
    """

    def __init__(
        self,
        keys: Mapping[str, PublicKey],
        *,
        algorithms: Iterable[str] = ("EdDSA",),
        issuer: str = ISSUER,
        leeway: float = 30.0,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.time,
        refresh: Callable[[], Mapping[str, PublicKey]] | None = None,
        refresh_interval: float = 10.0,
        timer: Callable[[], float] = time.monotonic,
        revision: Callable[[], int] | None = None,
    ) -> None:
        self.algorithms = tuple(algorithms)
        unknown = set(self.algorithms) - ALGORITHMS.keys()
        if unknown or not self.algorithms:
            raise ConfigurationError(f"token algorithms must be among {', '.join(ALGORITHMS)}")
        self._keys = dict(keys)
        self.issuer, self.leeway, self._clock = issuer, leeway, clock
        self._cache: BoundedCache[str, TokenClaims] = BoundedCache(cache_size)
        self._refresh, self._reloads = refresh, KeyReloads(refresh_interval, timer, revision)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; :class:`InvalidToken` (forged, malformed, unknown key, wrong algorithm or
        issuer) or :class:`ExpiredToken`."""
        claims = self._cache.get(token)
        now = self._clock()
        if claims is not None:
            if claims.expires_at + self.leeway > now:
                return claims
            self._cache.pop(token, None)
            raise ExpiredToken("the token has expired")
        claims = self._decode(token, now)
        self._cache.put(token, claims)
        return claims

    def update(self, keys: Mapping[str, PublicKey]) -> None:
        """Verify with ``keys`` from now on (the store's key set after a rotation, read by the caller)."""
        self._keys = dict(keys)

    def forget(self, token: str) -> None:
        """Drop a remembered token (revoked: the next check verifies it again and asks about revocation)."""
        self._cache.pop(token, None)

    def _key(self, kid: str) -> PublicKey | None:
        """The key for ``kid``; an unknown one makes the key set reload when allowed (a key rotated in by another
        process is found)."""
        key = self._keys.get(kid)
        if key is None and self._refresh is not None and self._reloads.due():
            self._keys = dict(self._refresh())
            key = self._keys.get(kid)
        return key

    def _decode(self, token: str, now: float) -> TokenClaims:
        import jwt  # on use, as in TokenSigner.issue

        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
            raise InvalidToken("not a token")
        try:
            header = _header_of(token)
            kid = header.get("kid")
            key = self._key(kid) if isinstance(kid, str) else None
            if key is None:
                raise InvalidToken("unknown signing key")
            algorithm = algorithm_of(key)
            # A key verifies exactly its own algorithm: the header must name that one, and it must be allowed.
            if header.get("alg") != algorithm or algorithm not in self.algorithms:
                raise InvalidToken("algorithm not allowed for this key")
            payload = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "sub", "jti"], "verify_exp": False, "verify_iat": False},
            )
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):  # forged headers can nest or mistype
            raise InvalidToken("the token is not valid") from None
        try:
            claims = _claims_of(payload)
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("the token's claims are malformed") from None
        if claims.issued_at > now + self.leeway:
            raise InvalidToken("the token was issued in the future")
        if claims.expires_at + self.leeway <= now:
            raise ExpiredToken("the token has expired")
        return claims


def algorithm_of(key: PublicKey) -> str:
    """The one algorithm a public key verifies: Ed25519 → EdDSA, P-256 → ES256, RSA → RS256."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    return "ES256" if isinstance(key, ec.EllipticCurvePublicKey) else "RS256"


def iso_time(seconds: int, *, micros: bool = True) -> str:
    """A time in UTC as Huawei IAM writes a token's (``2026-11-28T09:00:00.000000Z``), or with ``micros=False``
    as the ``g:CurrentTime`` condition key holds it (``2026-11-28T09:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z" if micros else "%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _header_of(token: str) -> dict[str, Any]:
    """The JOSE header, read to pick the key (``jwt.decode`` checks everything again, signature included)."""
    head = token.partition(".")[0]
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    if not isinstance(header, dict):
        raise ValueError("header")
    return header


def _claims_of(payload: Mapping[str, Any]) -> TokenClaims:
    domain = payload["domain"]
    project = payload.get("project")
    methods = payload.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise TypeError("methods")
    texts = [payload["jti"], payload["sub"], payload["name"], domain["id"], domain["name"]]
    if project is not None:
        texts += [project["id"], project["name"]]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("claims")
    issued, expires = payload["iat"], payload["exp"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (issued, expires)):
        raise TypeError("times")
    return TokenClaims(
        payload["jti"],
        payload["sub"],
        payload["name"],
        domain["id"],
        domain["name"],
        None if project is None else project["id"],
        None if project is None else project["name"],
        tuple(methods),
        issued,
        expires,
        bool(payload.get("mfa", False)),
    )
