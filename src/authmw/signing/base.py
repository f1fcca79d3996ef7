"""What every signature scheme provides: parse → canonical request → string to sign → signature."""

from __future__ import annotations

import abc
import hmac
import re
from dataclasses import dataclass

from authmw.errors import MalformedAuthorization
from authmw.models import AccessKey, Request
from authmw.signing.digests import Digest

__all__ = ["Scheme", "SignedParts", "check_hex_signature", "parse_auth_params", "parse_signed_headers"]

_HEX64 = re.compile(r"[0-9a-f]{64}").fullmatch
_HEX_DER = re.compile(r"(?:[0-9a-f]{2}){8,80}").fullmatch
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+").fullmatch


@dataclass(frozen=True, slots=True)
class SignedParts:
    """What a scheme reads from a request before any key is looked up."""

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


def parse_signed_headers(value: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if len(set(names)) != len(names) or not all(_HEADER_NAME(name) for name in names):
        raise MalformedAuthorization("SignedHeaders must list distinct lower-case header names")
    return names


def check_hex_signature(signature: str, *, asymmetric: bool) -> str:
    if not (_HEX_DER if asymmetric else _HEX64)(signature):
        raise MalformedAuthorization("signature must be lower-case hex")
    return signature


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
        digest = self.digest.hex(canonical_request.encode("utf-8", "surrogateescape"))
        return f"{self.algorithm}\n{parts.date}\n{digest}"

    @abc.abstractmethod
    def sign(self, key: AccessKey, parts: SignedParts, string_to_sign: str) -> str:
        """The signature the holder of ``key`` would send."""

    def verify(self, key: AccessKey, parts: SignedParts, string_to_sign: str) -> bool:
        """Constant-time comparison for MAC schemes; asymmetric schemes override."""
        return hmac.compare_digest(self.sign(key, parts, string_to_sign), parts.signature)
