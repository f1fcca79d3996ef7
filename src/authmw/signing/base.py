"""What every signature scheme provides: parse → canonical request → string to sign → signature."""

from __future__ import annotations

import abc
import hmac
import re
from functools import lru_cache
from typing import NamedTuple

from authmw.errors import MalformedAuthorization
from authmw.models import Request
from authmw.signing.digests import Digest

__all__ = [
    "UNSIGNED_PAYLOAD",
    "Scheme",
    "SignedParts",
    "auth_fields",
    "check_hex_signature",
    "check_identifier",
    "parse_auth_params",
    "parse_signed_headers",
]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: Limits on client-chosen identifiers: they key bounded caches, so their size must be bounded too.
MAX_SIGNED_HEADERS_LENGTH = 2048
_IDENTIFIER = re.compile(r"[A-Za-z0-9._~+-]{1,128}").fullmatch
_MAC_HEX = r"[0-9a-f]{64}"
_DER_HEX = r"(?:[0-9a-f]{2}){8,80}"  # a DER-encoded (r, s) pair
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+").fullmatch


class SignedParts(NamedTuple):
    """What a scheme reads from a request before any key is looked up (immutable; a tuple for speed)."""

    algorithm: str
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str
    date: str  # the request time exactly as it enters the string to sign
    timestamp: int
    date_source: str  # header (or query parameter) that carried the date
    region: str | None = None
    service: str | None = None
    scope_date: str | None = None
    security_token: str | None = None
    expires: int | None = None  # presigned URLs only

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}"

    def __repr__(self) -> str:  # the signature and security token stay out of logs and tracebacks
        return (
            f"SignedParts(algorithm={self.algorithm!r}, access_key={self.access_key!r}, "
            f"signed_headers={self.signed_headers!r}, date={self.date!r}, scope={self.scope_date and self.scope!r})"
        )


def parse_auth_params(value: str, expected: tuple[str, ...]) -> dict[str, str]:
    """Parse ``Key=value, Key=value`` after the algorithm name; exactly the expected keys, once each."""
    params: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep or key not in expected or key in params or not val:
            raise MalformedAuthorization(f"expected {', '.join(expected)}")
        params[key] = val
    if len(params) != len(expected):
        raise MalformedAuthorization(f"expected {', '.join(expected)}")
    return params


@lru_cache(maxsize=512)
def parse_signed_headers(value: str) -> tuple[str, ...]:
    if len(value) > MAX_SIGNED_HEADERS_LENGTH:
        raise MalformedAuthorization("SignedHeaders too long")
    names = tuple(value.split(";"))
    if len(set(names)) != len(names) or not all(_HEADER_NAME(name) for name in names):
        raise MalformedAuthorization("SignedHeaders must list distinct lower-case header names")
    return names


def check_identifier(value: str, what: str) -> str:
    """Access keys, regions and services: 1-128 characters of ``A-Z a-z 0-9 . _ ~ + -``."""
    if not ((value.isascii() and value.isalnum() and len(value) <= 128) or _IDENTIFIER(value)):
        raise MalformedAuthorization(f"malformed {what}")
    return value


def check_hex_signature(signature: str, *, asymmetric: bool) -> str:
    if not re.fullmatch(_DER_HEX if asymmetric else _MAC_HEX, signature):
        raise MalformedAuthorization("signature must be lower-case hex")
    return signature


_LAYOUTS = {
    (first, asymmetric): re.compile(
        rf"{first}=([^,]+), SignedHeaders=([^,]+), Signature=({_DER_HEX if asymmetric else _MAC_HEX})"
    )
    for first in ("Access", "Credential")
    for asymmetric in (False, True)
}


def auth_fields(value: str, first: str, *, asymmetric: bool) -> tuple[str, tuple[str, ...], str]:
    """``(first, signed headers, signature)`` from ``First=..., SignedHeaders=..., Signature=...``.

    The exact layout the SDKs emit is matched in one step; anything else goes through the general parser.
    """
    match = _LAYOUTS[first, asymmetric].fullmatch(value)
    if match is not None:
        ident, headers, signature = match.groups()
    else:
        params = parse_auth_params(value, (first, "SignedHeaders", "Signature"))
        ident, headers = params[first], params["SignedHeaders"]
        signature = check_hex_signature(params["Signature"], asymmetric=asymmetric)
    return ident, parse_signed_headers(headers), signature


class Scheme(abc.ABC):
    """One signature scheme. Stateless; the verifier applies the shared rules around it."""

    #: Registry name, used in configuration (``schemes``/``disabled_schemes``).
    name: str
    #: Algorithm string as it appears in ``Authorization`` and the string to sign.
    algorithm: str
    digest: Digest
    #: Signed header whose value replaces the body hash (``UNSIGNED-PAYLOAD`` or a hex digest).
    payload_header: str
    #: Header carrying a temporary credential's security token.
    token_header: str
    #: Huawei's SDK hashes an empty body even when ``payload_header`` says otherwise.
    empty_body_hash_wins: bool = False
    presigned: bool = False
    #: Signing needs a credential scope (``region`` and ``service``).
    scoped: bool = False
    #: The signature depends on the access key, not only on the secret (derived or asymmetric keys).
    keyed_by_access_key: bool = False
    #: ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` with an aws-chunked body is a valid payload mode.
    streaming_payloads: bool = False
    #: Signatures are randomised and malleable (ECDSA, SM2), not one MAC per string to sign.
    asymmetric: bool = False

    @abc.abstractmethod
    def parse(self, request: Request) -> SignedParts:
        """Read the scheme's fields; raises :class:`MalformedAuthorization` and date errors."""

    @abc.abstractmethod
    def canonical_requests(self, request: Request, parts: SignedParts, payload_hash: str) -> list[str]:
        """Canonical request(s) the client may have signed; the first is the normal form."""

    def canonical_request(self, request: Request, parts: SignedParts, payload_hash: str) -> str:
        """The form authmw's own client signer produces."""
        return self.canonical_requests(request, parts, payload_hash)[0]

    def string_to_sign(self, parts: SignedParts, canonical_request: str) -> str:
        digest = self.digest.new(canonical_request.encode("utf-8", "surrogateescape")).hexdigest()
        return f"{self.algorithm}\n{parts.date}\n{digest}"

    @abc.abstractmethod
    def sign(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> str:
        """The signature the holder of ``secret_key`` (and ``parts.access_key``) would send."""

    def verify(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> bool:
        """Constant-time comparison for MAC schemes; asymmetric schemes override."""
        return hmac.compare_digest(self.sign(secret_key, parts, string_to_sign), parts.signature)
