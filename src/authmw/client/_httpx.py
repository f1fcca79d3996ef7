"""``httpx.Auth`` that signs each request (sync and async clients alike)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx

from authmw.client._common import SigningConfig

__all__ = ["HttpxAuth"]


class HttpxAuth(httpx.Auth):
    """Sign requests with an AK/SK pair: ``httpx.Client(auth=HttpxAuth("AK", "SK"))``.

    Keyword arguments are those of :class:`SigningConfig` (``scheme``, ``region``, ``service``,
    ``security_token``, ``unsigned_payload``, ``clock``). Bodies given as bytes, text, JSON or form data are
    signed; streamed bodies (iterators, files) are not read into memory and go out as ``UNSIGNED-PAYLOAD``.
    """

    requires_request_body = False  # httpx has already read non-streamed bodies; streams stay streams

    def __init__(self, access_key: str, secret_key: str, **options: Any) -> None:
        self.config = SigningConfig(access_key, secret_key, **options)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None
        signed = self.config.sign(request.method, str(request.url), request.headers.multi_items(), body)
        request.url = httpx.URL(signed.url)
        request.headers.update(signed.headers)
        yield request
