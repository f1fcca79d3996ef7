"""Client-side signing with any registered scheme, built from the same steps the verifier uses."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from authmw.errors import ConfigurationError
from authmw.models import Request
from authmw.signing.base import UNSIGNED_PAYLOAD, SignedParts
from authmw.signing.canonical import format_basic_date, huawei_canonical_query
from authmw.signing.registry import SCHEMES
from authmw.signing.sigv4 import ALGORITHM as SIGV4
from authmw.signing.sigv4 import MAX_EXPIRES, PRESIGNED, S3_SERVICES, TERMINATOR

__all__ = ["SignedHttpRequest", "presign_url", "sign_request"]

# Never signed: hop-by-hop headers that proxies may rewrite, and (SigV4) botocore's blacklist.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "authorization",
    }
)
_SIGV4_UNSIGNED = _HOP_BY_HOP | {"baggage", "traceparent", "tracestate", "user-agent", "x-amzn-trace-id"}


@dataclass(frozen=True, slots=True)
class SignedHttpRequest:
    """A request ready to send: the URL may differ from the input (Huawei sends its canonical query)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _epoch(at: datetime | float | None) -> int:
    if at is None:
        return int(time.time())
    if isinstance(at, datetime):
        return int(at.timestamp())
    return int(at)


def _host(split: SplitResult) -> str:
    """The Host value an HTTP client sends for the URL (lower-case, default port dropped), as botocore signs it."""
    host = split.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = split.port
    if port is not None and port != {"https": 443, "http": 80}.get(split.scheme):
        host = f"{host}:{port}"
    return host


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = b"",
    *,
    access_key: str,
    secret_key: str,
    scheme: str = "SDK-HMAC-SHA256",
    region: str | None = None,
    service: str | None = None,
    security_token: str | None = None,
    unsigned_payload: bool = False,
    at: datetime | float | None = None,
) -> SignedHttpRequest:
    """Sign ``(method, url, headers, body)`` as the real client of ``scheme`` would.

    ``region`` and ``service`` are required for ``V11-HMAC-SHA256`` and ``AWS4-HMAC-SHA256``. With
    ``unsigned_payload`` the body is left out of the signature (``UNSIGNED-PAYLOAD``); ``body=None`` means a
    streamed body that cannot be hashed, so it implies ``unsigned_payload``.
    """
    implementation = SCHEMES.get(scheme)
    if implementation is None or implementation.presigned:
        raise ConfigurationError(f"cannot sign with {scheme!r}; use presign_url for presigned URLs")
    scoped = implementation.scoped
    if scoped and not (region and service):
        raise ConfigurationError(f"{scheme} needs region and service")
    streamed = body is None
    unsigned_payload |= streamed
    payload = body.encode() if isinstance(body, str) else bytes(body or b"")
    split = urlsplit(url)
    method = method.upper()
    timestamp = _epoch(at)
    date = format_basic_date(timestamp)
    # Values go out trimmed, as the SDK sends them (HTTP clients refuse leading/trailing whitespace).
    out = {name: value.strip() for name, value in (headers or {}).items()}

    def put(name: str, value: str) -> None:  # replace a caller's header of any case
        for existing in [n for n in out if n.lower() == name.lower()]:
            del out[existing]
        out[name] = value

    present = {name.lower() for name in out}
    if "host" not in present:
        out["Host"] = _host(split)
    is_sigv4 = scheme == SIGV4
    # A payload hash the caller set (e.g. STREAMING-UNSIGNED-PAYLOAD-TRAILER) is signed as given.
    given = next((v for n, v in out.items() if n.lower() == implementation.payload_header), None)
    if unsigned_payload and given is None:
        given = out[implementation.payload_header.title()] = UNSIGNED_PAYLOAD
    if is_sigv4:
        put("X-Amz-Date", date)
        if security_token:
            put("X-Amz-Security-Token", security_token)
        payload_hash = given or implementation.digest.hex(payload)
        if given is None and service in S3_SERVICES:
            out["X-Amz-Content-SHA256"] = payload_hash
        names = sorted({n.lower() for n in out} - _SIGV4_UNSIGNED)
        query = split.query
    else:
        put("X-Sdk-Date", date)
        if security_token:
            put("X-Security-Token", security_token)
        payload_hash = (
            (given or implementation.digest.hex(payload)) if payload or streamed else implementation.digest.empty
        )
        names = sorted({n.lower() for n in out if "_" not in n} - _HOP_BY_HOP)
        query = huawei_canonical_query(split.query)
    target = (split.path or "/") + (f"?{query}" if query else "")
    request = Request.build(method, target, out, payload)
    parts = SignedParts(
        algorithm=implementation.algorithm,
        access_key=access_key,
        signed_headers=tuple(names),
        signature="",
        date=date,
        timestamp=timestamp,
        date_source="x-amz-date" if is_sigv4 else "x-sdk-date",
        region=region,
        service=service,
        scope_date=date[:8] if scoped else None,
    )
    canonical = implementation.canonical_request(request, parts, payload_hash)
    string_to_sign = implementation.string_to_sign(parts, canonical)
    signature = implementation.sign(secret_key, parts, string_to_sign)
    if is_sigv4:
        first = f"Credential={access_key}/{parts.scope}/{TERMINATOR}"
    elif scoped:
        first = f"Credential={access_key}/{parts.scope}"
    else:
        first = f"Access={access_key}"
    put("Authorization", f"{implementation.algorithm} {first}, SignedHeaders={';'.join(names)}, Signature={signature}")
    return SignedHttpRequest(method, urlunsplit(split._replace(query=query)), out, payload)


def presign_url(
    method: str,
    url: str,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    expires: int = 3600,
    security_token: str | None = None,
    at: datetime | float | None = None,
) -> str:
    """A SigV4 presigned URL (as botocore's ``SigV4QueryAuth``/``generate_presigned_url`` build it)."""
    if not 0 < expires <= MAX_EXPIRES:
        raise ConfigurationError(f"expires must be 1..{MAX_EXPIRES} seconds")
    implementation = SCHEMES[PRESIGNED]
    split = urlsplit(url)
    timestamp = _epoch(at)
    date = format_basic_date(timestamp)
    scope = f"{date[:8]}/{region}/{service}"
    auth = {
        "X-Amz-Algorithm": SIGV4,
        "X-Amz-Credential": f"{access_key}/{scope}/{TERMINATOR}",
        "X-Amz-Date": date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    if security_token:
        auth["X-Amz-Security-Token"] = security_token
    encoded = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in auth.items())
    query = f"{split.query}&{encoded}" if split.query else encoded
    host = _host(split)
    request = Request.build(method, (split.path or "/") + "?" + query, {"host": host})
    parts = SignedParts(
        algorithm=SIGV4,
        access_key=access_key,
        signed_headers=("host",),
        signature="",
        date=date,
        timestamp=timestamp,
        date_source="X-Amz-Date",
        region=region,
        service=service,
        scope_date=date[:8],
        expires=expires,
    )
    payload_hash = UNSIGNED_PAYLOAD if service in S3_SERVICES else implementation.digest.empty
    canonical = implementation.canonical_request(request, parts, payload_hash)
    signature = implementation.sign(secret_key, parts, implementation.string_to_sign(parts, canonical))
    return urlunsplit(split._replace(query=f"{query}&X-Amz-Signature={signature}"))
