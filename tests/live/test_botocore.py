"""botocore signs (``SigV4Auth``, ``S3SigV4Auth``, the S3 client, presigned URLs), authmw verifies.

Requests go over a real socket to :class:`tests.support.wire.CaptureServer` and are verified from the captured bytes.
The one exception is the S3 ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` upload, which botocore only produces for
``https`` endpoints: that prepared request is converted to a :class:`Request` without any network.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import botocore.auth
import botocore.config
import botocore.credentials
import botocore.session
import pytest
import requests
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, create_request_object, prepare_request_dict
from botocore.httpchecksum import apply_request_checksum

from authmw.errors import AuthmwError
from authmw.models import AuthMethod, Credential, Request
from authmw.rawhttp import parse_raw_request
from authmw.signing import Verifier
from tests.support.tokens import OneToken
from tests.support.wire import (
    CaptureServer,
    botocore_wire,
    frozen_time,
    parse_raw,
    presigned_url_query_auth,
    presigned_url_s3,
    s3_client_wire,
)

pytestmark = pytest.mark.live

AK = "AKIDWIRETEST0001"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYWIRETEST"
OTHER_SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYWIRETES7"
TOKEN = "FwoGZXIvYXdzEBYaDHNlc3Npb24rdG9rZW4v+=="
AT = datetime.datetime(2024, 5, 1, 12, 34, 56, tzinfo=datetime.UTC)
NOW = AT.timestamp()
REGION = "cn-north-4"
PRESIGNED = "AWS4-HMAC-SHA256-PRESIGNED"
# botocore's two header signers and the service each is used for: S3 signs the raw path.
AUTHS = {"SigV4Auth": "modelarts", "S3SigV4Auth": "s3"}


def make_verifier(*, at: float = NOW, **options: Any) -> Verifier:
    options.setdefault("security_tokens", OneToken(TOKEN, AK, SK))
    return Verifier(keys={AK: SK}, clock=lambda: at, **options)


def rejected(verifier: Verifier, request: Request) -> str:
    """The error code ``verifier`` rejects ``request`` with."""
    with pytest.raises(AuthmwError) as caught:
        verifier.verify(request)
    return caught.value.code


def check_credential(
    credential: Credential, *, service: str, token: str | None, scheme: str = "AWS4-HMAC-SHA256"
) -> None:
    assert credential.scheme == scheme
    assert credential.access_key == AK
    assert (credential.region, credential.service) == (REGION, service)
    assert credential.signed_at == int(NOW)
    assert credential.security_token == token
    assert credential.method is (AuthMethod.TEMPORARY if token else AuthMethod.AKSK)


@pytest.fixture(scope="module")
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as srv:
        yield srv


# --------------------------------------------------------------------------- SigV4Auth / S3SigV4Auth

SIGV4_CASES: list[tuple[str, str, str, dict[str, str], bytes | None, str | None]] = [
    ("path-percent-20", "GET", "/v1/a%20b/c%20d", {}, None, None),
    ("path-double-slash", "GET", "/v1//a//b/", {}, None, None),
    ("path-dot-segments", "GET", "/v1/a/../b/./c", {}, None, None),
    ("path-utf8-escaped", "GET", "/v1/%C3%BC/%E2%82%AC/%F0%9F%98%80", {}, None, None),
    ("path-reserved-chars", "GET", "/v1/a+b/(1)/%2A/*/!$&'=,/x;y/a:b@c", {}, None, None),
    ("path-encoded-slash", "GET", "/v1/k%2Fx", {}, None, None),
    ("query-plus-space-repeated-flag", "GET", "/v1/q?b=x%20y&a=1+2&a=0&flag&z=%2B&empty=", {}, None, None),
    ("query-duplicate-pairs-unsorted", "GET", "/v1/q?b=2&a=1&a=1", {}, None, None),
    ("query-encoded-key", "GET", "/v1/q?%41=1&A=2&%7E=~", {}, None, None),
    ("json-body", "POST", "/v1/jobs", {"Content-Type": "application/json"}, b'{"name": "job"}', None),
    ("binary-body", "PUT", "/v1/blob", {"Content-Type": "application/octet-stream"}, bytes(range(256)), None),
    ("header-whitespace", "PUT", "/v1/x", {"X-Custom": "  a   b  ", "X-Tab": "a\tb"}, b"x", None),
    ("empty-post", "POST", "/v1/ping", {}, None, None),
    ("session-token", "POST", "/v1/jobs", {"Content-Type": "application/json"}, b"{}", TOKEN),
]


@pytest.mark.parametrize(
    ("method", "path_and_query", "headers", "body", "token"),
    [case[1:] for case in SIGV4_CASES],
    ids=[case[0] for case in SIGV4_CASES],
)
@pytest.mark.parametrize("auth", sorted(AUTHS))
def test_sigv4_request_verifies(
    server: CaptureServer,
    auth: str,
    method: str,
    path_and_query: str,
    headers: dict[str, str],
    body: bytes | None,
    token: str | None,
) -> None:
    raw = botocore_wire(
        server,
        auth=auth,
        method=method,
        path_and_query=path_and_query,
        headers=headers,
        body=body,
        ak=AK,
        sk=SK,
        token=token,
        region=REGION,
        service=AUTHS[auth],
        at=AT,
    )
    assert parse_raw(raw).target == path_and_query  # botocore sent the URL exactly as signed
    request = parse_raw_request(raw)
    check_credential(make_verifier().verify(request), service=AUTHS[auth], token=token)

    assert rejected(make_verifier(at=NOW + 16 * 60), request) == "date_out_of_window"
    if token is not None:
        assert rejected(make_verifier(security_tokens=None), request) == "invalid_security_token"


@pytest.mark.parametrize("auth", sorted(AUTHS))
def test_sigv4_wrong_secret_and_tampering(server: CaptureServer, auth: str) -> None:
    def send(sk: str) -> bytes:
        return botocore_wire(
            server,
            auth=auth,
            method="POST",
            path_and_query="/v1/jobs?limit=10",
            headers={"Content-Type": "application/json", "X-Custom": "v"},
            body=b'{"name": "job"}',
            ak=AK,
            sk=sk,
            service=AUTHS[auth],
            at=AT,
        )

    verifier = make_verifier()
    assert rejected(verifier, parse_raw_request(send(OTHER_SK))) == "signature_mismatch"
    raw = send(SK)
    verifier.verify(parse_raw_request(raw))
    query_added = raw.replace(b"?limit=10 ", b"?limit=10&admin=true ", 1)
    assert rejected(verifier, parse_raw_request(query_added)) == "signature_mismatch"
    header_edited = raw.replace(b"X-Custom: v", b"X-Custom: w", 1)
    assert rejected(verifier, parse_raw_request(header_edited)) == "signature_mismatch"
    body_flipped = raw[:-2] + bytes([raw[-2] ^ 1]) + raw[-1:]
    # S3SigV4Auth signs X-Amz-Content-SHA256 (a digest the verifier checks); SigV4Auth hashes the body.
    expected = "body_digest_mismatch" if auth == "S3SigV4Auth" else "signature_mismatch"
    assert rejected(verifier, parse_raw_request(body_flipped)) == expected


@pytest.mark.parametrize("auth", sorted(AUTHS))
def test_sigv4_signs_rfc1123_date_header(server: CaptureServer, auth: str) -> None:
    raw = botocore_wire(
        server,
        auth=auth,
        method="GET",
        path_and_query="/v1/jobs",
        headers={"Date": "Mon, 01 Jan 2001 00:00:00 GMT"},
        ak=AK,
        sk=SK,
        service=AUTHS[auth],
        at=AT,
    )
    wire = parse_raw(raw)
    assert wire.header("X-Amz-Date") is None
    assert wire.header("Date") == "Wed, 01 May 2024 12:34:56 -0000"
    assert "SignedHeaders=date;host" in (wire.header("Authorization") or "")
    check_credential(make_verifier().verify(parse_raw_request(raw)), service=AUTHS[auth], token=None)


# Requests that botocore signs as given but that urllib3/http.client change before sending: no verifier
# can recover what was signed (AWS itself would reject them too).
TRANSPORT_REWRITES: list[tuple[str, str, dict[str, str], str]] = [
    ("raw-space-in-path", "/v1/a b", {}, "/v1/a%20b"),
    ("raw-unicode-in-path", "/v1/zürich", {}, "/v1/z%C3%BCrich"),
    ("lowercase-escape-in-path", "/v1/%c3%bc", {}, "/v1/%C3%BC"),
    ("lowercase-escape-in-query", "/v1/q?a=%7e", {}, "/v1/q?a=%7E"),
    ("raw-space-in-query", "/v1/q?a=b c", {}, "/v1/q?a=b%20c"),
    ("params-in-last-segment-dropped", "/v1/x;y:z", {}, "/v1/x"),
]


@pytest.mark.parametrize(
    ("path_and_query", "headers", "wire_target"),
    [case[1:] for case in TRANSPORT_REWRITES],
    ids=[case[0] for case in TRANSPORT_REWRITES],
)
@pytest.mark.parametrize("auth", sorted(AUTHS))
def test_sigv4_transport_rewrites_after_signing_are_rejected(
    server: CaptureServer, auth: str, path_and_query: str, headers: dict[str, str], wire_target: str
) -> None:
    raw = botocore_wire(
        server,
        auth=auth,
        method="GET",
        path_and_query=path_and_query,
        headers=headers,
        ak=AK,
        sk=SK,
        service=AUTHS[auth],
        at=AT,
    )
    assert parse_raw(raw).target == wire_target
    assert rejected(make_verifier(), parse_raw_request(raw)) == "signature_mismatch"


@pytest.mark.parametrize("auth", sorted(AUTHS))
def test_non_ascii_header_sent_as_latin_1_still_verifies(server: CaptureServer, auth: str) -> None:
    """botocore signs the text as UTF-8, http.client sends it as ISO-8859-1: authmw decodes by what arrived."""
    raw = botocore_wire(
        server,
        auth=auth,
        method="GET",
        path_and_query="/v1/x",
        headers={"X-City": "zürich"},
        ak=AK,
        sk=SK,
        service=AUTHS[auth],
        at=AT,
    )
    assert b"X-City: z\xfcrich\r\n" in raw
    check_credential(make_verifier().verify(parse_raw_request(raw)), service=AUTHS[auth], token=None)


# --------------------------------------------------------------------------- the S3 client

S3_OPERATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("put-object-special-key", "put_object", {"Bucket": "bkt", "Key": "dir/a b(1)+ü~.txt", "Body": b"hello"}),
    (
        "put-object-metadata",
        "put_object",
        {"Bucket": "bkt", "Key": "k", "Body": b"x", "ContentType": "text/plain", "Metadata": {"note": " a  b "}},
    ),
    ("put-object-dot-segments-key", "put_object", {"Bucket": "bkt", "Key": "k/../x//y", "Body": b"dots"}),
    ("get-object-range", "get_object", {"Bucket": "bkt", "Key": "dir/ü x", "Range": "bytes=0-1"}),
    ("list-objects-v2", "list_objects_v2", {"Bucket": "bkt", "Prefix": "a b/ü", "Delimiter": "/", "MaxKeys": 5}),
    ("delete-object", "delete_object", {"Bucket": "bkt", "Key": "k"}),
]
CHECKSUM_CONFIGS: dict[str, dict[str, Any] | None] = {
    "checksum-default": None,
    "checksum-when-required": {"request_checksum_calculation": "when_required"},
}


@pytest.mark.parametrize("token", [None, TOKEN], ids=["aksk", "session-token"])
@pytest.mark.parametrize("config", sorted(CHECKSUM_CONFIGS))
@pytest.mark.parametrize(
    ("operation", "params"), [case[1:] for case in S3_OPERATIONS], ids=[case[0] for case in S3_OPERATIONS]
)
def test_s3_client_request_verifies(
    server: CaptureServer, operation: str, params: dict[str, Any], config: str, token: str | None
) -> None:
    raw = s3_client_wire(
        server,
        operation=operation,
        params=params,
        ak=AK,
        sk=SK,
        token=token,
        region=REGION,
        config_kwargs=CHECKSUM_CONFIGS[config],
        at=AT,
    )
    wire = parse_raw(raw)
    signed_headers = (wire.header("Authorization") or "").split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "x-amz-content-sha256" in signed_headers
    if operation == "put_object":
        assert ("x-amz-checksum-crc32" in signed_headers) is (config == "checksum-default")
    request = parse_raw_request(raw)
    credential = make_verifier().verify(request)
    check_credential(credential, service="s3", token=token)
    assert credential.unsigned_payload is False  # plain http: botocore always signs the body hash


def test_s3_put_object_body_change_detected(server: CaptureServer) -> None:
    raw = s3_client_wire(
        server, operation="put_object", params={"Bucket": "bkt", "Key": "k", "Body": b"hello"}, ak=AK, sk=SK, at=AT
    )
    assert raw.endswith(b"\r\n\r\nhello")
    assert rejected(make_verifier(), parse_raw_request(raw[:-1] + b"!")) == "body_digest_mismatch"


# --------------------------------------------------------------------------- presigned URLs


def _presigned(source: str, server: CaptureServer, token: str | None, expires: int) -> tuple[str, str]:
    """(method, url) presigned by botocore as ``source`` describes."""
    if source == "query-auth-generic":
        url = server.base_url + "/v1/a%20b/../c?b=2&a=1&flag&x=a+b"
        return "GET", presigned_url_query_auth(
            method="GET", url=url, ak=AK, sk=SK, token=token, region=REGION, expires=expires, at=AT
        )
    method = source.removeprefix("s3-").upper()
    return method, presigned_url_s3(
        method=method,
        bucket="bkt",
        key="dir/a b+ü(1).txt",
        ak=AK,
        sk=SK,
        token=token,
        region=REGION,
        expires=expires,
        endpoint=server.base_url,
        at=AT,
    )


def request_from_url(method: str, url: str, body: bytes = b"") -> Request:
    """What a server receives for ``url``: path and query as given plus the ``Host`` header."""
    parts = urlsplit(url)
    return Request.build(method, f"{parts.path}?{parts.query}", [("Host", parts.netloc)], body)


PRESIGN_SOURCES = ["s3-get", "s3-put", "query-auth-generic"]
EXPIRES = 600


@pytest.mark.parametrize("token", [None, TOKEN], ids=["aksk", "session-token"])
@pytest.mark.parametrize("source", PRESIGN_SOURCES)
def test_presigned_url_lifecycle(server: CaptureServer, source: str, token: str | None) -> None:
    method, url = _presigned(source, server, token, EXPIRES)
    request = request_from_url(method, url)
    service = "modelarts" if source == "query-auth-generic" else "s3"

    for offset in (0, EXPIRES // 2, EXPIRES):
        credential = make_verifier(at=NOW + offset).verify(request)
        check_credential(credential, service=service, token=token, scheme=PRESIGNED)

    assert rejected(make_verifier(at=NOW + EXPIRES + 1), request) == "presigned_url_expired"
    assert rejected(make_verifier(disabled_schemes={PRESIGNED}), request) == "scheme_disabled"
    assert rejected(make_verifier(schemes={"AWS4-HMAC-SHA256"}), request) == "scheme_disabled"


PRESIGN_TAMPERS = {
    "expiry-extended": lambda url: url.replace(f"X-Amz-Expires={EXPIRES}", "X-Amz-Expires=604800"),
    "param-added": lambda url: url.replace("X-Amz-Algorithm=", "acl=public-read&X-Amz-Algorithm=", 1),
    "path-changed": lambda url: url.replace("/bkt/", "/other/", 1).replace("/c?", "/d?", 1),
    "date-moved": lambda url: url.replace("X-Amz-Date=20240501T123456Z", "X-Amz-Date=20240501T123500Z"),
}


@pytest.mark.parametrize("tamper", sorted(PRESIGN_TAMPERS))
@pytest.mark.parametrize("source", PRESIGN_SOURCES)
def test_presigned_url_tampered(server: CaptureServer, source: str, tamper: str) -> None:
    method, url = _presigned(source, server, None, EXPIRES)
    tampered = PRESIGN_TAMPERS[tamper](url)
    assert tampered != url
    assert rejected(make_verifier(), request_from_url(method, tampered)) == "signature_mismatch"


@pytest.mark.parametrize("source", ["s3-get", "s3-put"])
def test_presigned_url_fetched_with_requests(server: CaptureServer, source: str) -> None:
    """A real HTTP client follows the presigned URL; the captured request verifies."""
    method, url = _presigned(source, server, TOKEN, EXPIRES)
    body = b"uploaded through a presigned URL" if method == "PUT" else None
    mark = server.mark()
    requests.request(method, url, data=body, timeout=10)
    request = parse_raw_request(server.since(mark))
    assert request.target == url.removeprefix(server.base_url)

    credential = make_verifier().verify(request)
    check_credential(credential, service="s3", token=TOKEN, scheme=PRESIGNED)
    # Presigned S3 URLs never sign the body.
    assert credential.unsigned_payload is (body is not None)
    if body is not None:
        assert rejected(make_verifier(allow_unsigned_payload=False), request) == "unsigned_payload_refused"


# --------------------------------------------------------------------------- aws-chunked trailer uploads

HTTPS_ENDPOINT = "https://obs.cn-north-4.example.com"
CRC32_TRAILER = {"in": "trailer", "name": "x-amz-checksum-crc32", "algorithm": "crc32"}


def request_from_prepared(prepared: AWSPreparedRequest) -> Request:
    """The request as a server would see it: ``Host`` from the URL, HTTP chunked coding already removed."""
    parts = urlsplit(prepared.url)
    body = prepared.body.read() if hasattr(prepared.body, "read") else prepared.body or b""
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return Request.build(prepared.method, target, [*prepared.headers.items(), ("Host", parts.netloc)], body)


def streaming_put_awsrequest(payload: bytes, token: str | None = None) -> Request:
    """An https PutObject-style AWSRequest signed in trailer mode, framed by botocore's own helpers."""
    request_dict: dict[str, Any] = {
        "url_path": "/bkt/dir/a%20b.txt",
        "query_string": {},
        "method": "PUT",
        "headers": {"Content-Type": "application/octet-stream"},
        "body": payload,
    }
    context = {
        "checksum": {
            "request_algorithm": dict(CRC32_TRAILER),
            "request_algorithm_header": {"name": "x-amz-sdk-checksum-algorithm", "value": "CRC32"},
        },
        "has_streaming_input": True,
    }
    prepare_request_dict(request_dict, endpoint_url=HTTPS_ENDPOINT, context=context)
    apply_request_checksum(request_dict)  # aws-chunked body, Content-Encoding, X-Amz-Trailer, decoded length
    request = create_request_object(request_dict)
    assert request.url.startswith("https://")
    with frozen_time(AT):
        botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(AK, SK, token), "s3", REGION).add_auth(request)
    return request_from_prepared(request.prepare())


class _EmptyBody:
    def stream(self, **_: Any) -> Iterator[bytes]:
        return iter([b""])


def streaming_put_s3_client(
    payload: bytes, token: str | None = None, config: botocore.config.Config | None = None
) -> Request:
    """The real S3 client's PutObject against an https endpoint, stopped before sending."""
    session = botocore.session.get_session()
    session.set_config_variable("config_file", os.devnull)
    session.set_config_variable("credentials_file", os.devnull)
    client = session.create_client(
        "s3",
        region_name=REGION,
        endpoint_url=HTTPS_ENDPOINT,
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        aws_session_token=token,
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}).merge(
            config or botocore.config.Config()
        ),
    )
    captured: list[Request] = []

    def short_circuit(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        captured.append(request_from_prepared(request))
        return AWSResponse(request.url, 200, {}, _EmptyBody())

    client.meta.events.register("before-send.s3", short_circuit)
    try:
        with frozen_time(AT):
            client.put_object(Bucket="bkt", Key="dir/a b.txt", Body=payload)
    finally:
        client.close()
    return captured[0]


STREAMING_BUILDERS = {"awsrequest": streaming_put_awsrequest, "s3-client": streaming_put_s3_client}
PAYLOADS = {
    "empty": b"",
    "small": b"hello world",
    "two-chunks": bytes(range(256)) * 4097,  # just over botocore's 1 MiB chunk size
}


def _crc32_b64(data: bytes) -> bytes:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big"))


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("builder", sorted(STREAMING_BUILDERS))
def test_streaming_unsigned_payload_trailer(builder: str, payload: str) -> None:
    data = PAYLOADS[payload]
    request = STREAMING_BUILDERS[builder](data)
    headers = request.headers
    assert headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert headers["content-encoding"] == "aws-chunked"
    assert headers["x-amz-trailer"] == "x-amz-checksum-crc32"
    assert headers["x-amz-decoded-content-length"] == str(len(data))
    assert request.body.endswith(b"0\r\nx-amz-checksum-crc32:" + _crc32_b64(data) + b"\r\n\r\n")

    credential = make_verifier().verify(request)
    check_credential(credential, service="s3", token=None)
    assert credential.unsigned_payload is True

    assert rejected(make_verifier(allow_unsigned_payload=False), request) == "unsigned_payload_refused"
    wrong_crc = request.body.replace(_crc32_b64(data), _crc32_b64(data + b"x"))
    tampered = Request.build(request.method, request.target, request.headers, wrong_crc)
    assert rejected(make_verifier(), tampered) == "malformed_chunked_body"


@pytest.mark.parametrize("builder", sorted(STREAMING_BUILDERS))
def test_streaming_trailer_damage_detected(builder: str) -> None:
    request = STREAMING_BUILDERS[builder](b"hello world")
    damaged = {
        "data-byte-flipped": request.body.replace(b"hello", b"hellp"),
        "trailer-missing": request.body.split(b"0\r\n", 1)[0] + b"0\r\n\r\n",
        "chunk-truncated": request.body.replace(b"b\r\nhello world", b"b\r\nhello worl"),
    }
    for body in damaged.values():
        assert rejected(make_verifier(), Request.build(request.method, request.target, request.headers, body)) == (
            "malformed_chunked_body"
        )


@pytest.mark.parametrize("builder", sorted(STREAMING_BUILDERS))
def test_streaming_trailer_with_session_token(builder: str) -> None:
    request = STREAMING_BUILDERS[builder](b"hello", token=TOKEN)
    assert request.headers["x-amz-security-token"] == TOKEN
    check_credential(make_verifier().verify(request), service="s3", token=TOKEN)


def test_streaming_trailer_sent_over_http_framing() -> None:
    """The same upload as raw HTTP/1.1 (chunked transfer coding around the aws-chunked body) parses back."""
    request = streaming_put_awsrequest(b"hello world")
    head = [f"{request.method} {request.target} HTTP/1.1"]
    head += [f"{name}: {value}" for name, value in request.headers.items()]
    body = request.body
    raw = "\r\n".join(head).encode() + b"\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    assert "transfer-encoding" in request.headers
    parsed = parse_raw_request(raw)
    assert parsed.body == body
    assert make_verifier().verify(parsed).unsigned_payload is True


def test_s3_client_https_put_when_required_signs_the_body() -> None:
    """Over https, ``request_checksum_calculation='when_required'`` brings back a signed body hash."""
    config = botocore.config.Config(request_checksum_calculation="when_required")
    request = streaming_put_s3_client(b"hello", config=config)
    assert request.headers["x-amz-content-sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert "content-encoding" not in request.headers
    assert request.body == b"hello"
    assert make_verifier(allow_unsigned_payload=False).verify(request).unsigned_payload is False
    tampered = Request.build(request.method, request.target, request.headers, b"hellp")
    assert rejected(make_verifier(), tampered) == "body_digest_mismatch"
