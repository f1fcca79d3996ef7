"""Huawei Cloud schemes: SDK-HMAC-SHA256/SM3, V11-HMAC-SHA256 (derived keys), ECDSA P-256 and SM2.

All five share one canonical request (``research/signing.md`` §1–§4); they differ in hash, string to sign
and how the signature is made from the AK/SK pair.
"""

from __future__ import annotations

import hmac
from functools import lru_cache

from authmw.errors import CredentialScopeMismatch, MalformedAuthorization, MissingDate
from authmw.models import Request
from authmw.signing import ec
from authmw.signing.base import (
    Scheme,
    SignedParts,
    auth_fields,
    check_identifier,
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
    "huawei_canonical_requests",
]

DATE_HEADER = "x-sdk-date"


def huawei_canonical_requests(request: Request, signed_headers: tuple[str, ...], payload_hash: str) -> list[str]:
    """The canonical request, plus the variant with the query exactly as sent when that differs.

    The SDK sorts query values before ``str()``, so repeated numbers (``ids=9&ids=10``) go out in an order a
    sort of decoded strings does not reproduce; its wire query *is* its canonical query, so it is tried too.
    """
    query = huawei_canonical_query(request.query)
    uri = huawei_canonical_uri(request.path)
    headers = huawei_canonical_headers(request.headers, signed_headers)
    names = ";".join(signed_headers)
    normal = f"{request.method}\n{uri}\n{query}\n{headers}\n{names}\n{payload_hash}"
    if query == request.query:
        return [normal]
    return [normal, f"{request.method}\n{uri}\n{request.query}\n{headers}\n{names}\n{payload_hash}"]


@lru_cache(maxsize=4096)
def derived_key(access_key: str, secret_key: str, info: str) -> bytes:
    """V11 key: HKDF-SHA256 (salt = AK, IKM = SK, L = 32); the HMAC key is the *hex text* of the output."""
    prk = SHA256.mac(access_key.encode(), secret_key.encode())
    return SHA256.mac(prk, info.encode() + b"\x01").hex().encode()


class HuaweiHmac(Scheme):
    """``SDK-HMAC-SHA256`` and ``SDK-HMAC-SM3``: HMAC of the string to sign with the secret key."""

    token_header = "x-security-token"
    empty_body_hash_wins = True
    _asymmetric = False

    def __init__(self, algorithm: str, digest: Digest, payload_header: str) -> None:
        self.name = self.algorithm = algorithm
        self.digest = digest
        self.payload_header = payload_header

    _first = "Access"  # the first Authorization field: the access key (V11: the whole credential)

    def parse(self, request: Request) -> SignedParts:
        headers = request.headers
        ident, signed_headers, signature = auth_fields(
            headers["authorization"].partition(" ")[2], self._first, asymmetric=self._asymmetric
        )
        date = headers.get(DATE_HEADER)
        if date is None:
            raise MissingDate("X-Sdk-Date header missing")
        token = headers.get(self.token_header)
        timestamp = parse_basic_date(date)
        # Positional (region, service, scope_date filled by V11): the hot path avoids keyword overhead.
        return SignedParts(
            self.algorithm, ident, signed_headers, signature, date, timestamp, DATE_HEADER, None, None, None, token
        )

    def canonical_requests(self, request: Request, parts: SignedParts, payload_hash: str) -> list[str]:
        return huawei_canonical_requests(request, parts.signed_headers, payload_hash)

    def sign(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> str:
        return self.digest.mac(secret_key, string_to_sign.encode()).hex()

    def verify(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> bool:
        # sign() inlined: this is the hot path of the default scheme.
        mac = self.digest.mac(secret_key, string_to_sign.encode())
        return hmac.compare_digest(mac.hex(), parts.signature)


class HuaweiDerived(HuaweiHmac):
    """``V11-HMAC-SHA256``: HMAC with a per-day, per-region, per-service key derived by HKDF."""

    scoped = keyed_by_access_key = True

    def __init__(self) -> None:
        super().__init__("V11-HMAC-SHA256", SHA256, "x-sdk-content-sha256")

    _first = "Credential"

    def parse(self, request: Request) -> SignedParts:
        parts = super().parse(request)
        scope = parts.access_key.rsplit("/", 3)
        if len(scope) != 4 or not all(scope):
            raise MalformedAuthorization("Credential must be AK/date/region/service")
        access_key, scope_date, region, service = scope
        for value, what in ((access_key, "access key"), (region, "region"), (service, "service")):
            check_identifier(value, what)
        if scope_date != parts.date[:8]:
            raise CredentialScopeMismatch("credential date differs from X-Sdk-Date")
        return parts._replace(access_key=access_key, region=region, service=service, scope_date=scope_date)

    def string_to_sign(self, parts: SignedParts, canonical_request: str) -> str:
        digest = self.digest.hex(canonical_request.encode("utf-8", "surrogateescape"))
        return f"{self.algorithm}\n{parts.date}\n{parts.scope}\n{digest}"

    verify = Scheme.verify  # compares with sign() below, not with an HMAC keyed by the secret itself

    def sign(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> str:
        signing_key = derived_key(parts.access_key, secret_key, parts.scope)
        return SHA256.mac(signing_key, string_to_sign.encode()).hex()


class HuaweiEcdsa(HuaweiHmac):
    """``SDK-ECDSA-P256-SHA256``: ECDSA with a P-256 key derived from the AK/SK pair."""

    _asymmetric = keyed_by_access_key = asymmetric = True

    def __init__(self) -> None:
        super().__init__("SDK-ECDSA-P256-SHA256", SHA256, "x-sdk-content-sha256")

    def sign(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> str:
        return ec.p256_sign(parts.access_key, secret_key, string_to_sign.encode())

    def verify(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> bool:
        return ec.p256_verify(parts.access_key, secret_key, string_to_sign.encode(), parts.signature)


class HuaweiSm2(HuaweiHmac):
    """``SDK-SM2-SM3``: SM2 with a key derived from the AK/SK pair; the canonical request is hashed with SM3."""

    _asymmetric = keyed_by_access_key = asymmetric = True

    def __init__(self) -> None:
        super().__init__("SDK-SM2-SM3", SM3, "x-sdk-content-sm3")

    def sign(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> str:
        return ec.sm2_sign(parts.access_key, secret_key, string_to_sign.encode())

    def verify(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> bool:
        return ec.sm2_verify(parts.access_key, secret_key, string_to_sign.encode(), parts.signature)
