"""authmw's client auth for httpx (sync and async) and requests, over real HTTP to a capturing server."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import httpx
import pytest
import requests

from authmw.client import HttpxAuth, RequestsAuth
from authmw.errors import ConfigurationError
from authmw.rawhttp import parse_raw_request
from authmw.signing import SCHEMES, Verifier
from tests.support.wire import CaptureServer

AK, SK = "CLIENTAK0000000000001", "client-secret-key-0123456789abcdefghij"
SCHEME_OPTIONS = {
    name: ({"region": "cn-north-4", "service": "modelarts"} if name in {"V11-HMAC-SHA256", "AWS4-HMAC-SHA256"} else {})
    for name, scheme in SCHEMES.items()
    if not scheme.presigned
}


@pytest.fixture(scope="module")
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as running:
        yield running


def _verify(raw: bytes, **options: object):  # type: ignore[no-untyped-def]
    return Verifier(keys={AK: SK}, **options).verify(parse_raw_request(raw))  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", sorted(SCHEME_OPTIONS))
def test_httpx_sync_client(server: CaptureServer, scheme: str) -> None:
    auth = HttpxAuth(AK, SK, scheme=scheme, **SCHEME_OPTIONS[scheme])
    with httpx.Client(auth=auth) as client:
        mark = server.mark()
        response = client.post(
            f"{server.base_url}/v1/jobs/a b/ü?z=1&a=%2B&flag",
            json={"name": "job", "lr": 0.1},
            headers={"X-Custom": "spaced   value"},
        )
    assert response.status_code == 200
    credential = _verify(server.since(mark))
    assert credential.scheme == scheme
    assert not credential.unsigned_payload


def test_httpx_async_client(server: CaptureServer) -> None:
    async def call() -> None:
        async with httpx.AsyncClient(auth=HttpxAuth(AK, SK)) as client:
            response = await client.put(f"{server.base_url}/v1/blob", content=b"\x00\x01binary")
            assert response.status_code == 200

    mark = server.mark()
    asyncio.run(call())
    assert _verify(server.since(mark)).scheme == "SDK-HMAC-SHA256"


def test_httpx_temporary_credentials(server: CaptureServer) -> None:
    class Tokens:
        def resolve(self, token: str, access_key: str):  # type: ignore[no-untyped-def]
            from authmw.models import AccessKey

            assert token == "sts-token"
            return AccessKey(access_key, SK, temporary=True)

    mark = server.mark()
    httpx.get(f"{server.base_url}/v1/x", auth=HttpxAuth(AK, SK, security_token="sts-token"))
    assert _verify(server.since(mark), security_tokens=Tokens()).method.value == "temporary"


@pytest.mark.parametrize("scheme", sorted(SCHEME_OPTIONS))
def test_requests_auth(server: CaptureServer, scheme: str) -> None:
    mark = server.mark()
    response = requests.delete(
        f"{server.base_url}/v1/jobs/1?cascade=true",
        auth=RequestsAuth(AK, SK, scheme=scheme, **SCHEME_OPTIONS[scheme]),
        timeout=10,
    )
    assert response.status_code == 200
    assert _verify(server.since(mark)).scheme == scheme


def test_requests_streamed_body_is_unsigned_payload(server: CaptureServer) -> None:
    mark = server.mark()
    requests.post(f"{server.base_url}/upload", data=io.BytesIO(b"file contents"), auth=RequestsAuth(AK, SK), timeout=10)
    raw = server.since(mark)
    assert _verify(raw).unsigned_payload
    with pytest.raises(Exception, match="not accepted"):
        _verify(raw, allow_unsigned_payload=False)


def test_bad_configuration_fails_when_built() -> None:
    with pytest.raises(ConfigurationError):
        HttpxAuth(AK, SK, scheme="AWS4-HMAC-SHA256")
    with pytest.raises(ConfigurationError):
        RequestsAuth(AK, SK, scheme="NOPE")
    with pytest.raises(ConfigurationError):
        RequestsAuth("", SK)


def test_secret_never_in_repr() -> None:
    assert SK not in repr(HttpxAuth(AK, SK).config)


def test_httpx_streamed_body_is_sent_as_unsigned_payload(server: CaptureServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"part one, "
        yield b"part two"

    mark = server.mark()
    httpx.post(f"{server.base_url}/upload", content=chunks(), auth=HttpxAuth(AK, SK))
    raw = server.since(mark)
    assert b"UNSIGNED-PAYLOAD" in raw
    assert _verify(raw).unsigned_payload
