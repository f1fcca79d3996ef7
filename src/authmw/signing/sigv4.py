"""AWS Signature Version 4 (``AWS4-HMAC-SHA256``) in the Authorization header and in presigned URLs."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote_plus

from authmw.errors import CredentialScopeMismatch, MalformedAuthorization, MissingDate
from authmw.models import Request
from authmw.signing.base import (
    Scheme,
    SignedParts,
    auth_fields,
    check_hex_signature,
    check_identifier,
    parse_signed_headers,
)
from authmw.signing.canonical import (
    format_basic_date,
    is_plain_query,
    parse_basic_date,
    parse_http_date,
    sigv4_canonical_headers,
    sigv4_canonical_query,
    sigv4_canonical_uri,
    sigv4_raw_query,
)
from authmw.signing.digests import SHA256

__all__ = ["PRESIGNED", "S3_SERVICES", "SigV4", "SigV4Presigned", "signing_key", "sigv4_canonical_requests"]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
PRESIGNED = "AWS4-HMAC-SHA256-PRESIGNED"
#: Services whose signers use the raw path (botocore's ``S3SigV4Auth``) instead of the normalised one.
S3_SERVICES = frozenset({"s3"})
#: Longest validity AWS allows for a presigned URL (7 days).
MAX_EXPIRES = 604800
_PRESIGN_FIELDS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


@lru_cache(maxsize=1024)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = SHA256.mac(f"AWS4{secret_key}".encode(), date.encode())
    for part in (region, service, TERMINATOR):
        key = SHA256.mac(key, part.encode())
    return key


def sigv4_canonical_requests(request: Request, parts: SignedParts, payload_hash: str) -> list[str]:
    """The canonical request with the RFC 3986 query, then (if different) with the query as botocore signs
    a URL's own query string: verbatim. botocore uses the first for ``params=`` and the second otherwise."""
    exclude = "X-Amz-Signature" if parts.expires is not None else None
    normal = sigv4_canonical_query(request.query, exclude=exclude)
    raw = normal if is_plain_query(request.query) else sigv4_raw_query(request.query, exclude=exclude)
    head = f"{request.method}\n{sigv4_canonical_uri(request.path, s3=parts.service in S3_SERVICES)}\n"
    headers = sigv4_canonical_headers(request.headers, parts.signed_headers)
    tail = f"\n{headers}\n{';'.join(parts.signed_headers)}\n{payload_hash}"
    return [head + normal + tail] if raw == normal else [head + normal + tail, head + raw + tail]


def _split_credential(credential: str) -> tuple[str, str, str, str]:
    scope = credential.rsplit("/", 4)
    if len(scope) != 5 or not all(scope) or scope[4] != TERMINATOR:
        raise MalformedAuthorization("Credential must be AK/date/region/service/aws4_request")
    for value, what in ((scope[0], "access key"), (scope[2], "region"), (scope[3], "service")):
        check_identifier(value, what)
    return scope[0], scope[1], scope[2], scope[3]


class SigV4(Scheme):
    """``AWS4-HMAC-SHA256`` in the ``Authorization`` header (botocore ``SigV4Auth``/``S3SigV4Auth``)."""

    name = algorithm = ALGORITHM
    digest = SHA256
    payload_header = "x-amz-content-sha256"
    token_header = "x-amz-security-token"
    scoped = streaming_payloads = True

    def parse(self, request: Request) -> SignedParts:
        credential, signed_headers, signature = auth_fields(
            request.headers["authorization"].partition(" ")[2], "Credential", asymmetric=False
        )
        access_key, scope_date, region, service = _split_credential(credential)
        headers = request.headers
        if "x-amz-date" in headers:
            date, source = headers["x-amz-date"], "x-amz-date"
            timestamp = parse_basic_date(date)
        elif "date" in headers:
            # botocore signs an RFC 1123 Date header instead when the request already had one.
            source = "date"
            timestamp = parse_http_date(headers["date"])
            date = format_basic_date(timestamp)
        else:
            raise MissingDate("X-Amz-Date header missing")
        if scope_date != date[:8]:
            raise CredentialScopeMismatch("credential date differs from the request date")
        return SignedParts(
            algorithm=ALGORITHM,
            access_key=access_key,
            signed_headers=signed_headers,
            signature=signature,
            date=date,
            timestamp=timestamp,
            date_source=source,
            region=region,
            service=service,
            scope_date=scope_date,
            security_token=headers.get(self.token_header),
        )

    def canonical_requests(self, request: Request, parts: SignedParts, payload_hash: str) -> list[str]:
        return sigv4_canonical_requests(request, parts, payload_hash)

    def canonical_request(self, request: Request, parts: SignedParts, payload_hash: str) -> str:
        return sigv4_canonical_requests(request, parts, payload_hash)[-1]  # botocore signs a URL's query as is

    def string_to_sign(self, parts: SignedParts, canonical_request: str) -> str:
        digest = SHA256.hex(canonical_request.encode("utf-8", "surrogateescape"))
        return f"{ALGORITHM}\n{parts.date}\n{parts.scope}/{TERMINATOR}\n{digest}"

    def sign(self, secret_key: str, parts: SignedParts, string_to_sign: str) -> str:
        assert parts.scope_date and parts.region and parts.service
        derived = signing_key(secret_key, parts.scope_date, parts.region, parts.service)
        return SHA256.mac(derived, string_to_sign.encode()).hex()


class SigV4Presigned(SigV4):
    """SigV4 in the query string (botocore ``generate_presigned_url``, ``SigV4QueryAuth``)."""

    name = PRESIGNED
    presigned = True

    def parse(self, request: Request) -> SignedParts:
        fields: dict[str, str] = {}
        for item in request.query.split("&"):
            key, _, value = item.partition("=")
            key = unquote_plus(key)
            if key in _PRESIGN_FIELDS or key == "X-Amz-Security-Token":
                if key in fields:
                    raise MalformedAuthorization(f"{key} repeated")
                fields[key] = unquote_plus(value)
        missing = [name for name in _PRESIGN_FIELDS if not fields.get(name)]
        if missing:
            raise MalformedAuthorization(f"presigned URL lacks {', '.join(missing)}")
        if fields["X-Amz-Algorithm"] != ALGORITHM:
            raise MalformedAuthorization("X-Amz-Algorithm must be AWS4-HMAC-SHA256")
        expires = fields["X-Amz-Expires"]
        if not (expires.isascii() and expires.isdigit() and 0 < int(expires) <= MAX_EXPIRES):
            raise MalformedAuthorization(f"X-Amz-Expires must be 1..{MAX_EXPIRES}")
        access_key, scope_date, region, service = _split_credential(fields["X-Amz-Credential"])
        date = fields["X-Amz-Date"]
        timestamp = parse_basic_date(date)
        if scope_date != date[:8]:
            raise CredentialScopeMismatch("credential date differs from X-Amz-Date")
        return SignedParts(
            algorithm=ALGORITHM,
            access_key=access_key,
            signed_headers=parse_signed_headers(fields["X-Amz-SignedHeaders"]),
            signature=check_hex_signature(fields["X-Amz-Signature"], asymmetric=False),
            date=date,
            timestamp=timestamp,
            date_source="X-Amz-Date",
            region=region,
            service=service,
            scope_date=scope_date,
            security_token=fields.get("X-Amz-Security-Token") or request.headers.get(self.token_header),
            expires=int(expires),
        )
