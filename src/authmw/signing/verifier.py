"""The signature verifier: picks the scheme, applies authmw's rules around it, checks the signature."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, Protocol
from urllib.parse import unquote_plus

from authmw.errors import (
    AuthmwError,
    BodyDigestMismatch,
    BodyTooLarge,
    ConfigurationError,
    CredentialScopeMismatch,
    DateOutOfWindow,
    HeaderNotSigned,
    InvalidSecurityToken,
    MalformedRequest,
    MissingCredentials,
    MultipleCredentials,
    PresignedUrlExpired,
    SchemeDisabled,
    SecurityTokenMismatch,
    SecurityTokenRequired,
    SignatureMismatch,
    SignedHeaderMissing,
    StoreUnavailable,
    UnsignedPayloadRefused,
    UnsupportedPayload,
    UnsupportedScheme,
)
from authmw.models import AccessKey, AuthMethod, Credential, CredentialKind, Request, _new_credential
from authmw.signing.awschunked import verify_aws_chunked
from authmw.signing.base import UNSIGNED_PAYLOAD, Scheme, SignedParts, check_identifier
from authmw.signing.registry import SCHEMES
from authmw.signing.replay import ReplayGuard
from authmw.signing.sigv4 import PRESIGNED, S3_SERVICES

__all__ = [
    "Inspection",
    "KeySource",
    "ReplayGuardLike",
    "SecurityTokenResolver",
    "StaticKeys",
    "Verifier",
]

logger = logging.getLogger("authmw.signing")

STREAMING_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
# What is left to check of the body once the signature holds (see Verifier._payload_plan).
_DIGEST, _CHUNKED, _UNSIGNED = "digest", "chunked", "unsigned"
# Stands in for an unknown access key so the decoy check hits the same derived-key caches every time.
_DECOY_ACCESS_KEY = "authmw-decoy-access-key"
# Enum members as globals: reading one off its class costs ten times a global's (each credential reads two).
_AKSK, _TEMPORARY_METHOD = AuthMethod.AKSK, AuthMethod.TEMPORARY
_SIGNATURE, _TEMPORARY_KIND = CredentialKind.SIGNATURE, CredentialKind.TEMPORARY
DEFAULT_MAX_BODY = 12 * 1024 * 1024
DEFAULT_MAX_SKEW = 15 * 60
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}").fullmatch
_ALGORITHM_NAME = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+){1,5}").fullmatch
_PRESIGN_KEYS = frozenset({"X-Amz-Signature", "X-Amz-Algorithm", "X-Amz-Credential"})


def _has_presigned_fields(query: str) -> bool:
    if "X-Amz-" not in query:  # the common case: decide without parsing
        return False
    return any(unquote_plus(item.partition("=")[0]) in _PRESIGN_KEYS for item in query.split("&"))


class KeySource(Protocol):
    """Where the verifier finds the secret of a permanent access key."""

    def get_access_key(self, access_key: str) -> AccessKey | None: ...


class SecurityTokenResolver(Protocol):
    """Validates a security token and returns the temporary key it carries (issue: temporary credentials).

    Must raise :class:`~authmw.errors.InvalidSecurityToken` for a token that is invalid, expired or does
    not belong to ``access_key``.
    """

    def resolve(self, token: str, access_key: str) -> AccessKey: ...


class ReplayGuardLike(Protocol):
    """Refuses a request seen before: the seam for a replay window shared by several processes (e.g. in Redis).

    ``remember`` must, atomically: raise :class:`~authmw.errors.ReplayedRequest` if ``fingerprint`` is live; raise
    :class:`~authmw.errors.ReplayCacheFull` if no room is left, or :class:`~authmw.errors.ReplayQuotaExceeded` if
    ``owner`` holds its quota of live fingerprints; else keep ``fingerprint`` (a 16-byte digest)
    until ``until`` (epoch seconds, inclusive), charged to ``owner``. See
    :class:`~authmw.signing.replay.ReplayGuard`.
    """

    def remember(self, fingerprint: bytes, until: float, owner: str) -> None: ...


class StaticKeys:
    """A fixed set of access keys, e.g. from configuration or tests."""

    def __init__(self, keys: Mapping[str, str] | Iterable[AccessKey]) -> None:
        items = [AccessKey(ak, sk) for ak, sk in keys.items()] if isinstance(keys, Mapping) else list(keys)
        self._keys = {key.access_key: key for key in items}

    def get_access_key(self, access_key: str) -> AccessKey | None:
        return self._keys.get(access_key)


@dataclass(frozen=True, slots=True)
class Inspection:
    """The full story of one verification, for ``authmw verify-request`` and debugging."""

    valid: bool
    scheme: str
    access_key: str
    reason: str | None
    canonical_request: str = field(repr=False)  # holds every signed header value, tokens included
    string_to_sign: str = field(repr=False)
    credential: Credential | None = None


@dataclass(slots=True)
class _Trace:
    scheme: Scheme | None = None
    parts: SignedParts | None = None
    canonical_request: str = ""
    string_to_sign: str = ""


class Verifier:
    """Verifies AK/SK request signatures of every registered scheme.

    Safe defaults: 15 minutes of clock skew each way, signed bodies up to 12 MiB (413 beyond), every
    available scheme enabled, each signed request accepted once (an in-memory
    :class:`~authmw.signing.replay.ReplayGuard`; ``replay_guard=False`` turns that off).
    ``allow_unsigned_payload`` defaults to True because the official SDKs send ``UNSIGNED-PAYLOAD`` for every
    non-JSON upload (and botocore's S3 client streams ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``); the signature
    then still covers method, path, query, signed headers and time, but not the body. Turn it off where body
    integrity matters more than SDK uploads.
    """

    def __init__(
        self,
        *,
        keys: KeySource | Mapping[str, str],
        clock: Callable[[], float] = time.time,
        max_skew: int = DEFAULT_MAX_SKEW,
        max_body: int = DEFAULT_MAX_BODY,
        allow_unsigned_payload: bool = True,
        schemes: Iterable[str] | None = None,
        disabled_schemes: Iterable[str] = (),
        replay_guard: ReplayGuardLike | bool = True,
        security_tokens: SecurityTokenResolver | None = None,
        regions: Iterable[str] | None = None,
        services: Iterable[str] | None = None,
        signed_if_present: Iterable[str] = (),
    ) -> None:
        if max_skew < 0 or max_body < 0:
            raise ConfigurationError("max_skew and max_body must not be negative")
        enabled = set(SCHEMES if schemes is None else schemes)
        disabled = set(disabled_schemes)
        unknown = (enabled | disabled) - SCHEMES.keys()
        if unknown:
            raise ConfigurationError(
                f"unknown or unavailable signature schemes: {', '.join(sorted(unknown))} "
                f"(available: {', '.join(sorted(SCHEMES))})"
            )
        self._keys: KeySource = StaticKeys(keys) if isinstance(keys, Mapping) else keys
        self._clock = clock
        self.max_skew = max_skew
        self.max_body = max_body
        self.allow_unsigned_payload = allow_unsigned_payload
        self.enabled = frozenset(enabled - disabled)
        self._schemes = {name: SCHEMES[name] for name in self.enabled}
        #: Refuses a signed request (not a presigned URL) accepted before: an in-memory guard by default.
        self.replay_guard: ReplayGuardLike | None = None
        if replay_guard is True:
            self.replay_guard = ReplayGuard(clock=clock)
        elif replay_guard is not False and replay_guard is not None:  # not truthiness: an empty guard has len 0
            self.replay_guard = replay_guard
        self.security_tokens = security_tokens
        self.regions = None if regions is None else frozenset(regions)
        self.services = None if services is None else frozenset(services)
        #: Headers that must be signed whenever they are sent (the pipeline reads them: X-Workspace-Id, ...).
        self.signed_if_present = tuple(name.lower() for name in signed_if_present)
        # Unknown access keys are checked against a random secret so they cost the same as a wrong signature.
        self._decoy = secrets.token_urlsafe(30)

    # -- public verbs ----------------------------------------------------------------------------------

    def verify(self, request: Request) -> Credential:
        """Return the verified :class:`Credential` or raise an :class:`AuthmwError` leaf."""
        return self._guarded(request, None)

    def inspect(self, request: Request) -> Inspection:
        """Verify and report every intermediate stage; never raises for bad input."""
        trace = _Trace()
        try:
            credential = self._guarded(request, trace)
        except AuthmwError as exc:
            if trace.parts is not None and not trace.canonical_request:
                self._trace_anyway(request, trace)
            return Inspection(
                valid=False,
                scheme=trace.scheme.name if trace.scheme else "",
                access_key=trace.parts.access_key if trace.parts else "",
                reason=f"{exc.code}: {exc.detail}",
                canonical_request=trace.canonical_request,
                string_to_sign=trace.string_to_sign,
            )
        return Inspection(
            True,
            credential.scheme,
            credential.access_key,
            None,
            trace.canonical_request,
            trace.string_to_sign,
            credential,
        )

    def scheme_of(self, request: Request) -> str | None:
        """The registry name of the signature scheme the request uses, or None if it carries none."""
        authorization = request.headers.get("authorization")
        if authorization is not None:
            return authorization.partition(" ")[0]
        return PRESIGNED if _has_presigned_fields(request.query) else None

    def precheck(self, request: Request) -> None:
        """Refuse what the request line and headers decide alone, before the body is read: the scheme and its
        fields, the signed headers, the credential scope, the time window, and that the access key (or security
        token) exists. The signature itself needs the body: :meth:`verify` checks it, and everything here again.

        An unknown access key is refused here with the same ``signature_mismatch`` as a wrong signature, but
        before the body arrives: a client sending a body can tell it apart. Access key ids are identifiers, not
        secrets; not reading megabytes for a key that does not exist is worth more.
        """
        try:
            _scheme, parts = self._head(request, None)
            if self._key(parts) is None:
                self._unknown(parts)
        except AuthmwError:
            raise
        except (ValueError, LookupError, UnicodeError, OverflowError) as exc:
            logger.debug("unexpected %s while prechecking a signature", type(exc).__name__)
            raise MalformedRequest("request could not be parsed") from None

    # -- the pipeline ----------------------------------------------------------------------------------

    def _guarded(self, request: Request, trace: _Trace | None) -> Credential:
        try:
            return self._verify(request, trace)
        except AuthmwError:
            raise
        except (ValueError, LookupError, UnicodeError, OverflowError) as exc:
            # Defence in depth: no input may surface as anything but an authmw error. DEBUG, not WARNING:
            # any client can trigger this, and must not be able to flood the log.
            logger.debug("unexpected %s while verifying a signature", type(exc).__name__)
            raise MalformedRequest("request could not be parsed") from None

    def _select(self, request: Request) -> Scheme:
        authorization = request.headers.get("authorization")
        presigned = _has_presigned_fields(request.query)
        if authorization is None:
            if not presigned:
                raise MissingCredentials("no signature in the request")
            name = PRESIGNED
        elif presigned:
            raise MultipleCredentials("both an Authorization header and a presigned query")
        else:
            name = authorization.partition(" ")[0]
        scheme = self._schemes.get(name)
        if scheme is None:
            if name in SCHEMES:
                raise SchemeDisabled(f"scheme {name} is disabled")
            # Named only when it looks like an algorithm: the header might hold a bare token instead.
            shown = repr(name) if _ALGORITHM_NAME(name) else "(not an algorithm name)"
            raise UnsupportedScheme(f"unsupported scheme {shown}")
        return scheme

    def _head(self, request: Request, trace: _Trace | None) -> tuple[Scheme, SignedParts]:
        """What the request line and headers decide alone: the scheme and its fields, the signed headers, the
        credential scope and the time window (shared by :meth:`precheck` and :meth:`verify`)."""
        scheme = self._select(request)
        if trace is not None:
            trace.scheme = scheme
        parts = scheme.parse(request)
        if trace is not None:
            trace.parts = parts
        self._check_signed_headers(scheme, parts, request)
        if parts.region is not None:
            self._check_scope(parts)
        now = self._clock()
        if parts.expires is not None:
            self._check_expiry(parts, now)
        elif abs(now - parts.timestamp) > self.max_skew:
            raise DateOutOfWindow(f"request time differs from server time by more than {self.max_skew}s")
        return scheme, parts

    def _key(self, parts: SignedParts) -> AccessKey | None:
        """The access key the request names (temporary, through its security token), or None if unknown; a store
        failing with anything but an authmw error is unavailable (503)."""
        try:
            if parts.security_token is None:
                return self._keys.get_access_key(parts.access_key)
            return self._resolve_token(parts.security_token, parts.access_key)
        except AuthmwError:
            raise
        except Exception as exc:
            logger.error("key lookup failed: %s", type(exc).__name__)
            raise StoreUnavailable("key store unavailable") from None

    def _verify(self, request: Request, trace: _Trace | None) -> Credential:
        scheme, parts = self._head(request, trace)
        payloads, body_check = self._payload_plan(scheme, parts, request)
        key = self._key(parts)
        if key is not None:
            secret, checked = key.secret_key, parts
        else:  # checked against a decoy whose derived keys are cached, so it costs what a known key does
            check_identifier(parts.access_key, "access key")  # client-chosen: bounded before it is logged
            secret = self._decoy
            checked = parts._replace(access_key=_DECOY_ACCESS_KEY) if scheme.keyed_by_access_key else parts
        matched = ""
        for payload in payloads:
            for canonical in scheme.canonical_requests(request, parts, payload):
                string_to_sign = scheme.string_to_sign(parts, canonical)
                if scheme.verify(secret, checked, string_to_sign):  # no early exit: each candidate costs the same
                    if not matched:
                        matched = string_to_sign
                        if trace is not None:
                            trace.canonical_request, trace.string_to_sign = canonical, string_to_sign
                elif trace is not None and not trace.canonical_request:
                    trace.canonical_request, trace.string_to_sign = canonical, string_to_sign
        if key is None:
            self._unknown(parts)
        if not matched:
            raise SignatureMismatch("signature does not match (or unknown access key)")
        if key.temporary and parts.security_token is None:
            raise SecurityTokenRequired("temporary access keys need X-Security-Token")
        if body_check:  # only now: an unauthenticated request never makes authmw hash or decode its body
            self._check_body(scheme, request, body_check)
        replay = self.replay_guard
        if replay is not None and not scheme.presigned:  # a presigned URL is a link, reusable until it expires
            # A MAC is the request's fingerprint (one valid lower-case hex spelling per string to sign and
            # secret); ECDSA/SM2 signatures are randomised and malleable, so for them it is a digest of what was
            # signed. Neither covers unsigned headers or an unsigned body: altering those is still a replay.
            if scheme.asymmetric:
                fingerprint = hashlib.blake2b(f"{parts.access_key}\n{matched}".encode(), digest_size=16).digest()
            else:
                fingerprint = bytes.fromhex(parts.signature[:32])
            # Charged to the user behind the key: temporary keys cost nothing to mint, so one per key would not bind.
            owner = key.session.user_id if key.session is not None else key.owner or f"key:{parts.access_key}"
            replay.remember(fingerprint, parts.timestamp + self.max_skew + 1, owner)
        temporary = key.temporary
        return _new_credential(  # every field, positional: the hot path's constructor
            _TEMPORARY_METHOD if temporary else _AKSK,
            scheme.name,
            parts.access_key,
            key.owner,
            parts.timestamp,
            parts.region,
            parts.service,
            parts.security_token,
            body_check in (_UNSIGNED, _CHUNKED),
            None,
            False,
            key.session,
            None,
            _TEMPORARY_KIND if temporary else _SIGNATURE,
        )

    def _unknown(self, parts: SignedParts) -> NoReturn:
        """Refuse a key the store does not know: a temporary key's form without its security token is told so
        (the form is public, the store's keys are not looked at); any other is a signature mismatch."""
        check_identifier(parts.access_key, "access key")  # client-chosen: bounded before it is logged
        if parts.security_token is None and AccessKey.looks_temporary(parts.access_key):
            raise SecurityTokenRequired("temporary access keys need X-Security-Token")
        raise SignatureMismatch("signature does not match (or unknown access key)")

    def _check_signed_headers(self, scheme: Scheme, parts: SignedParts, request: Request) -> None:
        signed = parts.signed_headers
        if not scheme.presigned and parts.date_source not in signed:
            raise HeaderNotSigned(f"{parts.date_source} must be signed")
        if "host" not in signed:
            raise HeaderNotSigned("host must be signed")
        headers = request.headers
        for name in signed:
            if name not in headers:
                raise SignedHeaderMissing(f"signed header {name} is missing")
        if scheme.token_header in headers and scheme.token_header not in signed:
            raise HeaderNotSigned(f"{scheme.token_header} must be signed")
        for name in self.signed_if_present:
            if name in headers and name not in signed:
                raise HeaderNotSigned(f"{name} must be signed")

    def _check_scope(self, parts: SignedParts) -> None:
        if self.regions is not None and parts.region not in self.regions:
            raise CredentialScopeMismatch("credential scope names another region")
        if self.services is not None and parts.service not in self.services:
            raise CredentialScopeMismatch("credential scope names another service")

    def _check_expiry(self, parts: SignedParts, now: float) -> None:
        assert parts.expires is not None
        if parts.timestamp - now > self.max_skew:
            raise DateOutOfWindow("presigned URL dated in the future")
        if now > parts.timestamp + parts.expires:
            raise PresignedUrlExpired("presigned URL expired")

    def _payload_plan(self, scheme: Scheme, parts: SignedParts, request: Request) -> tuple[list[str], str]:
        """Payload-hash candidates for the canonical request, and what to check of the body once the
        signature holds: nothing (""), the signed digest, the aws-chunked framing, or nothing but noting
        that the body is unsigned."""
        body = request.body
        signed = scheme.payload_header in parts.signed_headers
        claimed = request.headers.get(scheme.payload_header) if signed else None
        if claimed is None:
            if scheme.presigned and parts.service in S3_SERVICES:
                if body and not self.allow_unsigned_payload:
                    raise UnsignedPayloadRefused("presigned S3 URLs do not sign the body")
                return [UNSIGNED_PAYLOAD], _UNSIGNED if body else ""
            if not body:
                return [scheme.digest.empty], ""
            self._check_size(body)  # the body hash is part of the canonical request: no way around hashing
            return [scheme.digest.hex(body)], ""
        if _HEX_DIGEST(claimed):
            return [claimed], _DIGEST
        streaming = claimed == STREAMING_TRAILER and scheme.streaming_payloads
        if claimed != UNSIGNED_PAYLOAD and not streaming:
            raise UnsupportedPayload(f"unsupported {scheme.payload_header} value")
        if not body:
            # Nothing is left unsigned. Huawei's SDK then hashes "" while the APIG signer keeps the literal.
            return ([scheme.digest.empty, claimed] if scheme.empty_body_hash_wins else [claimed]), ""
        if not self.allow_unsigned_payload:
            raise UnsignedPayloadRefused(f"{claimed} is not accepted by configuration")
        return [claimed], _CHUNKED if streaming else _UNSIGNED

    def _check_body(self, scheme: Scheme, request: Request, check: str) -> None:
        body = request.body
        if check == _DIGEST:
            self._check_size(body)
            claimed = request.headers[scheme.payload_header]
            if not hmac.compare_digest(scheme.digest.hex(body), claimed.lower()):
                raise BodyDigestMismatch(f"{scheme.payload_header} does not match the body")
        elif check == _CHUNKED:
            codings = [c.strip().lower() for c in request.headers.get("content-encoding", "").split(",")]
            if "aws-chunked" not in codings:
                raise UnsupportedPayload(f"{STREAMING_TRAILER} needs Content-Encoding: aws-chunked")
            self._check_size(body)
            verify_aws_chunked(body, request.headers)

    def _check_size(self, body: bytes) -> None:
        if len(body) > self.max_body:
            raise BodyTooLarge(f"body larger than {self.max_body} bytes")

    def _resolve_token(self, token: str, access_key: str) -> AccessKey:
        if self.security_tokens is None:
            raise InvalidSecurityToken("temporary credentials are not enabled")
        key = self.security_tokens.resolve(token, access_key)
        if key.access_key != access_key:
            raise SecurityTokenMismatch("security token belongs to another access key")
        return key

    def _trace_anyway(self, request: Request, trace: _Trace) -> None:
        """Fill in the canonical request for a request that failed a rule, so it can still be diffed."""
        scheme, parts = trace.scheme, trace.parts
        assert scheme is not None and parts is not None
        claimed = request.headers.get(scheme.payload_header)
        if claimed is None or scheme.payload_header not in parts.signed_headers:
            claimed = scheme.digest.hex(request.body) if request.body else scheme.digest.empty
        try:
            trace.canonical_request = scheme.canonical_requests(request, parts, claimed)[0]
            trace.string_to_sign = scheme.string_to_sign(parts, trace.canonical_request)
        except (AuthmwError, KeyError, ValueError, UnicodeError):
            pass
