"""Tokens of external OIDC issuers, verified with the public keys each issuer publishes at its JWKS URL.

An edge module: :class:`JwksKeys` fetches the key set over HTTP (``httpx``, the ``client`` extra, unless a
``fetch`` is injected), always on a daemon thread, so verifying a token never waits for the network;
:class:`OidcIssuer` verifies one issuer's tokens against it. A key verifies exactly one algorithm, recorded when
the key set is read, and a token whose header names another is refused, so no token can pick its own algorithm
(``none``, HS256 keyed with the public key, RS/ES swaps). Until the first fetch has succeeded (call
:meth:`JwksKeys.prime` at start-up) tokens are refused with :class:`IssuerUnavailable` (503). When the issuer
cannot be reached, its last good keys keep working for ``grace`` seconds past their expiry; after that every
token of that issuer, cached or not, is refused with :class:`IssuerUnavailable` until the issuer answers again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authmw.errors import ConfigurationError, ExpiredToken, InvalidToken, IssuerUnavailable
from authmw.tokens import ExternalIdentity, PublicKey

__all__ = ["JwksKeys", "OidcIssuer", "cache_max_age", "fetch_jwks", "parse_jwks"]

logger = logging.getLogger("authmw.oidc")

#: The algorithm a key of each type verifies when its JWK names none (EC means P-256, OKP means Ed25519).
_KEY_ALGORITHM = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}
_MIN_RSA_BITS = 2048
_MIN_MAX_AGE, _MAX_MAX_AGE = 60.0, 86400.0
_REFRESH_AHEAD = 0.8  # share of max-age after which the next use refreshes in the background
_MAX_BACKOFF = 30.0
_ABANDON = 60.0  # seconds after which a fetch still in flight is given up on (the default one takes ≤ ~10 s)
_MAX_JWKS = 256 * 1024  # a key set is a few KiB; a larger answer is not one
_FETCH_DEADLINE = 3.0  # seconds a fetch may take, so a dripping server cannot hold the fetch thread
_MAX_TOKEN = 8192  # a longer header value is not a token we accept: refused before any parsing
_MAX_USER_NAME = 64
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})

Fetch = Callable[[str], tuple[bytes, float | None]]


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


def fetch_jwks(url: str, *, deadline: float = _FETCH_DEADLINE) -> tuple[bytes, float | None]:
    """GET ``url`` (no redirects, at most 256 KiB); the body and its Cache-Control max-age.

    A body still arriving ``deadline`` seconds (3) after the request began is abandoned (checked as each chunk
    arrives); the connect and each read also time out after ``deadline`` seconds of silence. Raises for any answer
    but 200, so the caller keeps its last good keys.
    """
    import httpx  # only this default fetcher needs the client extra

    give_up = time.monotonic() + deadline
    with httpx.stream("GET", url, timeout=deadline, follow_redirects=False) as response:
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"JWKS answered {response.status_code}", request=response.request, response=response
            )
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > _MAX_JWKS:
                raise ValueError("JWKS too large")
            if time.monotonic() > give_up:
                raise TimeoutError("JWKS not read within the deadline")
        return bytes(body), cache_max_age(response.headers.get("cache-control", ""))


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


class JwksKeys:
    """The public signing keys of one issuer, fetched from its JWKS ``url`` and kept fresh.

    :meth:`check` and :meth:`key` never fetch nor wait: they start a fetch on a daemon thread (one at a time) and
    answer from the keys at hand. Keys are fresh for the answer's Cache-Control max-age (``default_max_age``
    without one; always within 60 s and 24 h); from 80 % of it a use starts a refresh. With no keys yet, a use
    starts a fetch and raises :class:`IssuerUnavailable`; an unknown ``kid`` starts a refetch, at most once per
    ``min_refetch`` seconds (at least 1), and raises :class:`InvalidToken`. After a failed fetch (error, non-200,
    bad document) the issuer is not asked again for ``min(30, min_refetch)`` seconds, and the last good keys
    serve until ``grace`` seconds past their expiry, then :class:`IssuerUnavailable`. :meth:`prime` is for
    start-up: it fetches and waits.
    """

    def __init__(
        self,
        *,
        url: str,
        algorithms: Iterable[str],
        fetch: Fetch | None = None,
        min_refetch: float = 30.0,
        default_max_age: float = 300.0,
        grace: float = 3600.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.algorithms = tuple(algorithms)
        if not self.algorithms or not set(self.algorithms) <= set(_KEY_ALGORITHM.values()):
            raise ConfigurationError(f"JWKS algorithms must be among {', '.join(sorted(_KEY_ALGORITHM.values()))}")
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            raise ConfigurationError("a JWKS URL must be https (http only on the loopback interface)")
        if not _MIN_MAX_AGE <= default_max_age <= _MAX_MAX_AGE:
            raise ConfigurationError("default_max_age must be between 60 seconds and 24 hours")
        if not min_refetch >= 1:  # NaN too: anyone can send a made-up kid, so each one must not reach the issuer
            raise ConfigurationError("min_refetch must be at least 1 second")
        if not grace >= 0:
            raise ConfigurationError("grace cannot be negative")
        self.url, self.min_refetch, self.default_max_age, self.grace = url, min_refetch, default_max_age, grace
        self._fetch = fetch if fetch is not None else fetch_jwks
        self._timer = timer
        self._backoff = min(_MAX_BACKOFF, min_refetch)
        self._lock = threading.Lock()  # guards the state below; never held during a fetch
        # Replaced whole, never mutated, so readers need no lock.
        self._keys: Mapping[str, tuple[str, PublicKey]] = {}
        never = float("-inf")
        self._refresh_at = self._usable_until = never
        self._retry_at = never  # after a failed fetch: the issuer is not asked again before this
        self._unknown_at = never  # the last refetch started by an unknown kid
        self._fetching: threading.Event | None = None  # the fetch in flight, set when it has ended
        self._fetch_started = never  # when it began: one older than _ABANDON is given up on
        self._installed = never  # when the fetch whose keys are installed began
        self._due = never  # before this instant check() has nothing to do

    def __repr__(self) -> str:
        return f"JwksKeys(url={self.url!r}, algorithms={self.algorithms!r})"

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def check(self) -> None:
        """Raise :class:`IssuerUnavailable` if no keys are usable; start a fetch in the background when one is due."""
        now = self._timer()
        if now < self._due:  # the common case: one call and one comparison
            return
        with self._lock:
            fetch = self._idle(now) and now >= max(self._refresh_at, self._retry_at)
            done = self._begin() if fetch else None
            usable = now < self._usable_until
        if done is not None:
            self._launch(done)
        if not usable:
            raise IssuerUnavailable("the issuer's signing keys cannot be fetched")

    def key(self, kid: str) -> tuple[str, PublicKey]:
        """The algorithm and public key of ``kid``; :class:`InvalidToken` if the issuer has no such key (a refetch
        may start in the background), :class:`IssuerUnavailable` if no keys are usable."""
        self.check()
        found = self._keys.get(kid)
        if found is not None:
            return found
        with self._lock:
            # Per key set, not per kid, so a stream of made-up kids cannot hammer the issuer. A fetch in flight
            # (perhaps started by check() above) may bring the kid: no second one.
            now = self._timer()
            done = None
            if self._idle(now) and now >= self._retry_at and now - self._unknown_at >= self.min_refetch:
                self._unknown_at = now
                done = self._begin()
        if done is not None:
            self._launch(done)
        raise InvalidToken("unknown signing key")

    def prime(self, timeout: float = 5.0) -> bool:
        """For start-up, never the request path: unless fresh keys are installed, fetch now (or join the fetch in
        flight) and wait for it at most ``timeout`` seconds; whether usable keys are installed. A failed fetch is
        logged, not raised."""
        with self._lock:
            if self._timer() < self._refresh_at:
                return True
            done = None if self._idle(self._timer()) else self._fetching
            fetch = done is None
            if done is None:
                done = self._begin()
        if fetch:
            self._launch(done)
        done.wait(max(timeout, 0.0))
        return self._timer() < self._usable_until

    def _idle(self, now: float) -> bool:
        """No fetch in flight (lock held); one stuck for longer than ``_ABANDON`` (a server dripping its headers,
        an injected fetch that hangs) no longer counts, so refreshes go on."""
        return self._fetching is None or now - self._fetch_started > _ABANDON

    def _begin(self) -> threading.Event:
        """Mark a fetch in flight (lock held); :meth:`_launch` starts it."""
        done = self._fetching = threading.Event()
        self._fetch_started = self._timer()
        self._reschedule()
        return done

    def _launch(self, done: threading.Event) -> None:
        try:
            thread = threading.Thread(target=self._run, args=(done,), name=f"authmw-jwks-fetch {self.url}", daemon=True)
            thread.start()
        except RuntimeError as exc:  # no thread to be had: a failed fetch, or no fetch would ever start again
            self._failed(exc)
            self._end(done)

    def _run(self, done: threading.Event) -> None:
        try:
            self._load()
        finally:
            self._end(done)

    def _end(self, done: threading.Event) -> None:
        with self._lock:
            if self._fetching is done:  # not a newer fetch that replaced an abandoned one
                self._fetching = None
            self._reschedule()
        done.set()

    def _load(self) -> None:
        """Fetch and install the key set; if the issuer failed, log it and keep the last good keys."""
        started = self._timer()
        try:
            body, max_age = self._fetch(self.url)
            keys = parse_jwks(body, self.algorithms)
            if not keys:
                raise ValueError("no usable key")  # more likely a broken answer than an issuer with no keys
        except Exception as exc:
            self._failed(exc)
            return
        if max_age is None or not math.isfinite(max_age):
            max_age = self.default_max_age
        max_age = min(max(max_age, _MIN_MAX_AGE), _MAX_MAX_AGE)
        with self._lock:
            if started < self._installed:  # an abandoned fetch ending after a newer one: keep the newer keys
                return
            self._keys, self._installed = keys, started
            self._refresh_at = started + _REFRESH_AHEAD * max_age
            self._usable_until = started + max_age + self.grace
            self._retry_at = float("-inf")
            self._reschedule()

    def _failed(self, exc: Exception) -> None:
        logger.warning("fetching the JWKS at %s failed: %s", self.url, type(exc).__name__)
        with self._lock:
            self._retry_at = self._timer() + self._backoff
            self._reschedule()

    def _reschedule(self) -> None:
        """The next instant :meth:`check` must act (lock held): start a fetch, or refuse once grace is over."""
        if self._fetching is not None:  # act again when grace ends or the fetch is given up on
            self._due = min(self._usable_until, self._fetch_started + _ABANDON)
        else:
            self._due = min(max(self._refresh_at, self._retry_at), self._usable_until)


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
        jwks_url: str,
        audience: str | None = None,
        algorithms: Iterable[str] = ("RS256",),
        user_claim: str = "sub",
        leeway: float = 30.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        keys: JwksKeys | None = None,
    ) -> None:
        self.algorithms = tuple(algorithms)
        self.keys = keys if keys is not None else JwksKeys(url=jwks_url, algorithms=self.algorithms)
        if self.keys.url != jwks_url:
            raise ConfigurationError("the key set given is not the one at jwks_url")
        if not self.algorithms or not set(self.algorithms) <= set(self.keys.algorithms):
            raise ConfigurationError(f"{issuer}: algorithms must be among {', '.join(self.keys.algorithms)}")
        if not issuer or not user_claim:
            raise ConfigurationError("an OIDC issuer needs its issuer identifier and a user claim")
        if not 0 <= leeway <= 300 or cache_size < 0:
            raise ConfigurationError("leeway must be within 0-300 seconds and cache_size not negative")
        self.issuer, self.audience, self.user_claim, self.leeway = issuer, audience, user_claim, leeway
        self._clock, self._cache_size = clock, cache_size
        self._cache: OrderedDict[str, tuple[ExternalIdentity, str]] = OrderedDict()

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
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.popitem(last=False)
            self._cache[token] = (identity, kid)
        return identity

    def _decode(self, token: str, now: float) -> tuple[ExternalIdentity, str]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise InvalidToken("the token is malformed") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise InvalidToken("algorithm not allowed")
        if "crit" in header:
            raise InvalidToken("unsupported critical header")  # no JWS extension is understood here
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no signing key named")
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
        subject, user_name, jti = payload.get("sub"), payload.get(self.user_claim), payload.get("jti")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token names no subject")
        if not isinstance(user_name, str) or not 0 < len(user_name) <= _MAX_USER_NAME or not user_name.isprintable():
            raise InvalidToken("the token names no valid user")
        if jti is not None and (not isinstance(jti, str) or not jti):
            raise InvalidToken("the token's id is malformed")
        issued_at, expires_at = _numeric_date(payload["iat"]), _numeric_date(payload["exp"])
        not_before = payload.get("nbf")
        if issued_at > now + self.leeway:
            raise InvalidToken("the token was issued in the future")
        if not_before is not None and _numeric_date(not_before) > now + self.leeway:
            raise InvalidToken("the token is not valid yet")
        if expires_at + self.leeway <= now:
            raise ExpiredToken("the token has expired")
        # The signed part only: a signature can be re-encoded (padding, ECDSA malleability) without breaking it.
        signed = token.rpartition(".")[0]
        token_id = jti if jti is not None else hashlib.sha256(signed.encode()).hexdigest()
        return ExternalIdentity(self.issuer, subject, user_name, token_id, issued_at, expires_at), kid


def _b64url(value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValueError("base64url")
    return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)


def _numeric_date(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken("the token's times are malformed")
    return int(value)
