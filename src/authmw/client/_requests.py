"""A ``requests``-compatible auth (any callable taking and returning a ``PreparedRequest``)."""

from __future__ import annotations

from typing import Any, Protocol

from authmw.client._common import SigningConfig

__all__ = ["RequestsAuth"]


class _Prepared(Protocol):
    method: str | None
    url: str | None
    headers: Any
    body: Any


class RequestsAuth:
    """Sign requests with an AK/SK pair: ``requests.get(url, auth=RequestsAuth("AK", "SK"))``.

    Keyword arguments are those of :class:`SigningConfig`. Streamed bodies (files, generators) are sent as
    ``UNSIGNED-PAYLOAD``; bytes and text bodies are signed.
    """

    def __init__(self, access_key: str, secret_key: str, **options: Any) -> None:
        self.config = SigningConfig(access_key, secret_key, **options)

    def __call__(self, request: _Prepared) -> _Prepared:
        body = request.body
        if isinstance(body, str):
            body = body.encode()
        elif body is not None and not isinstance(body, bytes | bytearray):
            body = None
        elif body is None:
            body = b""
        signed = self.config.sign(request.method or "GET", request.url or "", dict(request.headers), body)
        request.url = signed.url
        for name, value in signed.headers.items():
            request.headers[name] = value
        return request
