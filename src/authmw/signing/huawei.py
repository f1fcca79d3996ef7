"""Huawei Cloud schemes: SDK-HMAC-SHA256/SM3, V11-HMAC-SHA256 (derived keys), ECDSA P-256 and SM2.

All five share one canonical request (``research/signing.md`` §1–§4); they differ in hash, string to sign
and how the signature is made from the AK/SK pair.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from authmw.errors import CredentialScopeMismatch, MalformedAuthorization, MissingDate
from authmw.models import AccessKey, Request
from authmw.signing import ec
from authmw.signing.base import (
    Scheme,
    SignedParts,
    check_hex_signature,
    parse_auth_params,
    parse_signed_headers,
)
from authmw.signing.canonical import (
    huawei_canonical_headers,
    huawei_canonical_query,
    huawei_canonical_uri,
    parse_basic_date,
)
from authmw.signing.digests import SHA256, SM3, Digest

__all__ = [
    "HuaweiDerived",
    "HuaweiEcdsa",
    "HuaweiHmac",
    "HuaweiSm2",
    "derived_key",
    "huawei_canonical_request",
]

DATE_HEADER = "x-sdk-date"
_ACCESS_FIELDS = ("Access", "SignedHeaders", "Signature")
_CREDENTIAL_FIELDS = ("Credential", "SignedHeaders", "Signature")


def huawei_canonical_request(request: Request, signed_headers: tuple[str, ...], payload_hash: str) -> str:
    return (
        f"{request.method}\n{huawei_canonical_uri(request.path)}\n{huawei_canonical_query(request.query)}\n"
        f"{huawei_canonical_headers(request.headers, signed_headers)}\n{';'.join(signed_headers)}\n"
        f"{payload_hash}"
    )


@lru_cache(maxsize=4096)
def derived_key(access_key: str, secret_key: str, info: str) -> bytes:
    """V11 key: HKDF-SHA256 (salt = AK, IKM = SK, L = 32); the HMAC key is the *hex text* of the output."""
    prk = SHA256.mac(access_key.encode(), secret_key.encode())
    return SHA256.mac(prk, info.encode() + b"\x01").hex().encode()


class HuaweiHmac(Scheme):
    """``SDK-HMAC-SHA256`` and ``SDK-HMAC-SM3``: HMAC of the string to sign with the secret key."""

    token_header = "x-security-token"
    empty_body_hash_wins = True
    _fields = _ACCESS_FIELDS
    _asymmetric = False

    def __init__(self, algorithm: str, digest: Digest, payload_header: str) -> None:
        self.name = self.algorithm = algorithm
        self.digest = digest
        self.payload_header = payload_header

    def _common(self, request: Request, params: dict[str, str], access_key: str) -> SignedParts:
        date = request.headers.get(DATE_HEADER)
        if date is None:
            raise MissingDate("X-Sdk-Date header missing")
        return SignedParts(
            algorithm=self.algorithm,
            access_key=access_key,
            signed_headers=parse_signed_headers(params["SignedHeaders"]),
            signature=check_hex_signature(params["Signature"], asymmetric=self._asymmetric),
            date=date,
            timestamp=parse_basic_date(date),
            date_source=DATE_HEADER,
            security_token=request.headers.get(self.token_header),
        )

    def parse(self, request: Request) -> SignedParts:
        params = parse_auth_params(request.headers["authorization"].partition(" ")[2], self._fields)
        return self._common(request, params, params["Access"])

    def canonical_requests(self, request: Request, parts: SignedParts, payload_hash: str) -> list[str]:
        return [huawei_canonical_request(request, parts.signed_headers, payload_hash)]

    def sign(self, key: AccessKey, parts: SignedParts, string_to_sign: str) -> str:
        return self.digest.mac(key.secret_key.encode(), string_to_sign.encode()).hex()


class HuaweiDerived(HuaweiHmac):
    """``V11-HMAC-SHA256``: HMAC with a per-day, per-region, per-service key derived by HKDF."""

    _fields = _CREDENTIAL_FIELDS

    def __init__(self) -> None:
        super().__init__("V11-HMAC-SHA256", SHA256, "x-sdk-content-sha256")

    def parse(self, request: Request) -> SignedParts:
        params = parse_auth_params(request.headers["authorization"].partition(" ")[2], self._fields)
        scope = params["Credential"].rsplit("/", 3)
        if len(scope) != 4 or not all(scope):
            raise MalformedAuthorization("Credential must be AK/date/region/service")
        access_key, scope_date, region, service = scope
        parts = self._common(request, params, access_key)
        if scope_date != parts.date[:8]:
            raise CredentialScopeMismatch("credential date differs from X-Sdk-Date")
        return replace(parts, region=region, service=service, scope_date=scope_date)

    def string_to_sign(self, parts: SignedParts, canonical_request: str) -> str:
        digest = self.digest.hex(canonical_request.encode("utf-8", "surrogateescape"))
        return f"{self.algorithm}\n{parts.date}\n{parts.scope}\n{digest}"

    def sign(self, key: AccessKey, parts: SignedParts, string_to_sign: str) -> str:
        signing_key = derived_key(key.access_key, key.secret_key, parts.scope)
        return SHA256.mac(signing_key, string_to_sign.encode()).hex()


class HuaweiEcdsa(HuaweiHmac):
    """``SDK-ECDSA-P256-SHA256``: ECDSA with a P-256 key derived from the AK/SK pair."""

    _asymmetric = True

    def __init__(self) -> None:
        super().__init__("SDK-ECDSA-P256-SHA256", SHA256, "x-sdk-content-sha256")

    def sign(self, key: AccessKey, parts: SignedParts, string_to_sign: str) -> str:
        return ec.p256_sign(key.access_key, key.secret_key, string_to_sign.encode())

    def verify(self, key: AccessKey, parts: SignedParts, string_to_sign: str) -> bool:
        return ec.p256_verify(key.access_key, key.secret_key, string_to_sign.encode(), parts.signature)


class HuaweiSm2(HuaweiHmac):
    """``SDK-SM2-SM3``: SM2 with a key derived from the AK/SK pair; the canonical request is hashed with SM3."""

    _asymmetric = True

    def __init__(self) -> None:
        super().__init__("SDK-SM2-SM3", SM3, "x-sdk-content-sm3")

    def sign(self, key: AccessKey, parts: SignedParts, string_to_sign: str) -> str:
        return ec.sm2_sign(key.access_key, key.secret_key, string_to_sign.encode())

    def verify(self, key: AccessKey, parts: SignedParts, string_to_sign: str) -> bool:
        return ec.sm2_verify(key.access_key, key.secret_key, string_to_sign.encode(), parts.signature)
