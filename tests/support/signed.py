"""Helpers for core tests: sign with authmw's own signer and turn the result into a core Request."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authmw.models import Request
from authmw.signing import sign_request

AK = "HPUAEXAMPLEAK7Q2NZK1D"
SK = "wJalrXUtnFEMIexample0SK0aB1cD2eF3gH4iJ5k"
T0 = 1_714_566_896  # 2024-05-01T12:34:56Z
URL = "https://modelarts.cn-north-4.myhuaweicloud.com/v2/0a1b2c3d4e5f60718293a4b5c6d7e8f9/training-jobs?limit=10"
SCOPED = {"V11-HMAC-SHA256", "AWS4-HMAC-SHA256"}


def signed(
    scheme: str = "SDK-HMAC-SHA256",
    *,
    method: str = "GET",
    url: str = URL,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    at: float = T0,
    **options: Any,
) -> Request:
    if scheme in SCOPED:
        options.setdefault("region", "cn-north-4")
        options.setdefault("service", "modelarts")
    out = sign_request(method, url, headers, body, access_key=AK, secret_key=SK, scheme=scheme, at=at, **options)
    split = urlsplit(out.url)
    return Request.build(out.method, split.path + (f"?{split.query}" if split.query else ""), out.headers, out.body)


def with_headers(request: Request, **changes: str | None) -> Request:
    """A copy of ``request`` with headers set (or removed with None); names use ``_`` for ``-``."""
    headers = dict(request.headers)
    for name, value in changes.items():
        key = name.replace("_", "-").lower()
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return Request(request.method, request.path, request.query, headers, request.body, request.client)
