"""Self-tests for tests/support/wire.py: the helpers really run the client libraries and capture exact bytes."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import socket
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
import requests

from tests.support.wire import (
    HUAWEI_SIGNERS,
    CaptureServer,
    RawRequest,
    botocore_wire,
    frozen_time,
    huawei_wire,
    parse_raw,
    presigned_url_query_auth,
    presigned_url_s3,
    s3_client_wire,
)

AK = "HPUAEXAMPLEAK"
SK = "example/secret+key"
AT = datetime.datetime(2024, 5, 1, 12, 34, 56, tzinfo=datetime.UTC)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as srv:
        yield srv


def _check_common(req: RawRequest, server: CaptureServer, method: str) -> None:
    assert req.method == method
    assert req.version == "HTTP/1.1"
    assert req.target.startswith("/")
    assert req.header_values("Host") == [server.host]


def _huawei_hmac_signature(req: RawRequest, sk: str) -> str:
    """SDK-HMAC-SHA256 recomputed from the wire (plain paths and queries only)."""
    auth = req.header("Authorization") or ""
    signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    path = "/".join(quote(seg, safe="~") for seg in unquote(req.path).split("/"))
    path += "" if path.endswith("/") else "/"
    pairs = sorted(parse_qsl(req.query, keep_blank_values=True))
    query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)
    lines = "".join(f"{name}:{(req.header(name) or '').strip()}\n" for name in signed)
    body = req.entity_body
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    canonical = "\n".join([req.method, path, query, lines, ";".join(signed), payload])
    date = req.header("X-Sdk-Date") or ""
    to_sign = f"SDK-HMAC-SHA256\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- CaptureServer


def test_capture_server_content_length_and_response(server: CaptureServer) -> None:
    mark = server.mark()
    resp = requests.post(server.base_url + "/p?q=1", data=b"abc", timeout=5)
    assert resp.status_code == 200
    assert resp.json() == {}
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Connection"] == "close"
    raw = server.since(mark)
    assert raw == server.last()
    assert raw.startswith(b"POST /p?q=1 HTTP/1.1\r\n")
    assert raw.endswith(b"\r\n\r\nabc")
    assert server.base_url == f"http://{server.host}"


def test_capture_server_keeps_chunked_framing_and_trailers(server: CaptureServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        raw = (
            b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n"
        )
        sock.sendall(raw)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert server.last() == raw
    req = parse_raw(raw)
    assert req.chunked
    assert req.entity_body == b"abcde"


def test_capture_server_expect_continue_with_generator_body(server: CaptureServer) -> None:
    mark = server.mark()
    body = (part for part in [b"ab", b"cde"])
    resp = requests.post(server.base_url + "/g", data=body, headers={"Expect": "100-continue"}, timeout=5)
    assert resp.status_code == 200
    req = parse_raw(server.since(mark))
    assert req.header("Transfer-Encoding") == "chunked"
    assert req.body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"


def test_capture_server_times_out_incomplete_request() -> None:
    with CaptureServer(read_timeout=0.3) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
            deadline = time.monotonic() + 5
            while not srv.failures and time.monotonic() < deadline:
                time.sleep(0.02)
        assert srv.captured == []
        assert srv.failures[0][0].endswith(b"abc")
        with pytest.raises(LookupError):
            srv.last()


# --------------------------------------------------------------------------- Huawei SDK


@pytest.mark.parametrize("signer", sorted(HUAWEI_SIGNERS))
def test_huawei_wire_each_signer(server: CaptureServer, signer: str) -> None:
    raw = huawei_wire(
        server,
        signer=signer,
        method="POST",
        path="/v2/{project_id}/training-jobs",
        query=[("limit", 10), ("flag", True)],
        headers={"X-Custom": "  a  b  "},
        body='{"name": "job"}',
        ak=AK,
        sk=SK,
        security_token="sts-token",
        project_id="proj1",
        at=AT,
    )
    req = parse_raw(raw)
    _check_common(req, server, "POST")
    assert req.target == "/v2/proj1/training-jobs?flag=true&limit=10"
    assert req.header("X-Sdk-Date") == "20240501T123456Z"
    assert req.header("X-Project-Id") == "proj1"
    assert req.header("X-Security-Token") == "sts-token"
    assert req.header("X-Custom") == "a  b"
    assert req.header("Content-Type") == "application/json"
    assert (req.header("User-Agent") or "").startswith("huaweicloud-usdk-python/3.0; ")
    assert req.body == b'{"name": "job"}'
    auth = req.header("Authorization") or ""
    if signer == "V11-HMAC-SHA256":
        assert auth.startswith(f"V11-HMAC-SHA256 Credential={AK}/20240501/cn-north-4/modelarts, SignedHeaders=")
    else:
        assert auth.startswith(f"{signer} Access={AK}, SignedHeaders=")
    assert "SignedHeaders=content-type;host;user-agent;x-custom;x-project-id;x-sdk-date;x-security-token," in auth
    if signer == "SDK-HMAC-SHA256":
        assert auth.endswith(f"Signature={_huawei_hmac_signature(req, SK)}")


def test_huawei_wire_raw_bytes_global_credentials_v11(server: CaptureServer) -> None:
    raw = huawei_wire(
        server,
        signer="V11-HMAC-SHA256",
        method="PUT",
        path="/v1/objects/a b",
        query=None,
        headers={"Content-Type": "application/octet-stream"},
        body=b"\x00\xffbin",
        ak=AK,
        sk=SK,
        domain_id="dom1",
        service="iam",
        at=AT,
    )
    req = parse_raw(raw)
    _check_common(req, server, "PUT")
    assert req.target == "/v1/objects/a%20b"
    assert req.header("X-Domain-Id") == "dom1"
    assert req.header("X-Sdk-Content-Sha256") == "UNSIGNED-PAYLOAD"
    assert req.header("Content-Length") == "5"
    assert req.body == b"\x00\xffbin"
    assert (req.header("Authorization") or "").startswith(f"V11-HMAC-SHA256 Credential={AK}/20240501/globe/iam, ")


def test_huawei_wire_iterable_body_is_chunked(server: CaptureServer) -> None:
    raw = huawei_wire(
        server,
        signer="SDK-HMAC-SM3",
        method="PUT",
        path="/upload",
        query=None,
        headers={"Content-Type": "text/plain"},
        body=iter([b"ab", b"cd"]),
        ak=AK,
        sk=SK,
    )
    req = parse_raw(raw)
    assert req.header("X-Sdk-Content-Sm3") == "UNSIGNED-PAYLOAD"
    assert req.chunked
    assert req.body == b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"


def test_huawei_wire_get_without_content_type_and_caller_date(server: CaptureServer) -> None:
    raw = huawei_wire(
        server,
        signer="SDK-HMAC-SHA256",
        method="GET",
        path="/v1/x",
        query=[("q", "a+b c")],
        headers={"X-Sdk-Date": "20200101T000000Z"},
        body=None,
        ak=AK,
        sk=SK,
        ignore_content_type_for_get=True,
    )
    req = parse_raw(raw)
    assert req.target == "/v1/x?q=a%2Bb%20c"
    assert req.header("Content-Type") is None
    assert req.header("X-Sdk-Date") == "20200101T000000Z"
    assert req.body == b""
    assert (req.header("Authorization") or "").endswith(f"Signature={_huawei_hmac_signature(req, SK)}")


def test_huawei_wire_rejects_unknown_signer(server: CaptureServer) -> None:
    with pytest.raises(ValueError, match="unknown Huawei signer"):
        huawei_wire(server, signer="HMAC", method="GET", path="/", query=None, headers=None, body=None, ak=AK, sk=SK)


# --------------------------------------------------------------------------- botocore


@pytest.mark.parametrize("auth", ["SigV4Auth", "S3SigV4Auth"])
def test_botocore_wire(server: CaptureServer, auth: str) -> None:
    raw = botocore_wire(
        server,
        auth=auth,
        method="POST",
        path_and_query="/v1/a%20b/c?z=1&a=2",
        headers={"Content-Type": "application/json"},
        body=b'{"k": 1}',
        ak=AK,
        sk=SK,
        token="session-token",
        at=AT,
    )
    req = parse_raw(raw)
    _check_common(req, server, "POST")
    assert req.target == "/v1/a%20b/c?z=1&a=2"
    assert req.header("X-Amz-Date") == "20240501T123456Z"
    assert req.header("X-Amz-Security-Token") == "session-token"
    assert req.body == b'{"k": 1}'
    auth_value = req.header("Authorization") or ""
    assert auth_value.startswith(
        f"AWS4-HMAC-SHA256 Credential={AK}/20240501/cn-north-4/modelarts/aws4_request, SignedHeaders="
    )
    if auth == "S3SigV4Auth":
        assert req.header("X-Amz-Content-SHA256") == hashlib.sha256(b'{"k": 1}').hexdigest()
    else:
        assert req.header("X-Amz-Content-SHA256") is None


def test_botocore_wire_transfer_encoding_chunked(server: CaptureServer) -> None:
    raw = botocore_wire(
        server,
        auth="SigV4Auth",
        method="PUT",
        path_and_query="/x",
        headers={"Transfer-Encoding": "chunked"},
        body=b"hello",
        ak=AK,
        sk=SK,
    )
    req = parse_raw(raw)
    assert req.chunked
    assert req.body == b"5\r\nhello\r\n0\r\n\r\n"
    assert "transfer-encoding" not in (req.header("Authorization") or "")


def test_s3_put_object_default_checksum_over_http(server: CaptureServer) -> None:
    raw = s3_client_wire(
        server,
        operation="put_object",
        params={"Bucket": "bkt", "Key": "dir/a b(1).txt", "Body": b"hello"},
        ak=AK,
        sk=SK,
        token="session-token",
        at=AT,
    )
    req = parse_raw(raw)
    _check_common(req, server, "PUT")
    assert req.target == "/bkt/dir/a%20b%281%29.txt"
    auth = req.header("Authorization") or ""
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={AK}/20240501/cn-north-4/s3/aws4_request, ")
    assert req.header("X-Amz-Security-Token") == "session-token"
    # Over plain http: no aws-chunked trailer; a CRC32 header and a signed body hash instead.
    if req.chunked:
        assert req.header("Content-Encoding") == "aws-chunked"
        assert req.entity_body.endswith(b"\r\n\r\n")
    else:
        assert req.body == b"hello"
        assert req.header("Content-Length") == "5"
        assert req.header("X-Amz-Content-SHA256") == hashlib.sha256(b"hello").hexdigest()
        assert req.header("x-amz-checksum-crc32") is not None
        assert "x-amz-checksum-crc32" in auth


@pytest.mark.parametrize(
    ("operation", "params", "method", "target"),
    [
        ("get_object", {"Bucket": "bkt", "Key": "k"}, "GET", "/bkt/k"),
        ("delete_object", {"Bucket": "bkt", "Key": "k"}, "DELETE", "/bkt/k"),
        (
            "list_objects_v2",
            {"Bucket": "bkt", "Prefix": "p"},
            "GET",
            "/bkt?list-type=2&prefix=p&encoding-type=url",
        ),
    ],
)
def test_s3_client_wire_operations(
    server: CaptureServer, operation: str, params: dict[str, str], method: str, target: str
) -> None:
    raw = s3_client_wire(server, operation=operation, params=params, ak=AK, sk=SK, at=AT)
    req = parse_raw(raw)
    _check_common(req, server, method)
    assert req.target == target
    assert req.header("X-Amz-Content-SHA256") == EMPTY_SHA256
    assert req.header("X-Amz-Date") == "20240501T123456Z"


def test_s3_client_wire_config_kwargs(server: CaptureServer) -> None:
    raw = s3_client_wire(
        server,
        operation="put_object",
        params={"Bucket": "bkt", "Key": "k", "Body": b"x"},
        ak=AK,
        sk=SK,
        config_kwargs={"request_checksum_calculation": "when_required"},
    )
    req = parse_raw(raw)
    assert req.header("x-amz-checksum-crc32") is None
    assert req.header("X-Amz-Content-SHA256") == hashlib.sha256(b"x").hexdigest()


# --------------------------------------------------------------------------- presigned URLs and clocks


def test_presigned_url_s3() -> None:
    url = presigned_url_s3(
        method="GET",
        bucket="bkt",
        key="a b.txt",
        ak=AK,
        sk=SK,
        token="tok",
        endpoint="http://127.0.0.1:9000",
        at=AT,
    )
    parts = urlsplit(url)
    assert parts.netloc == "127.0.0.1:9000"
    assert parts.path == "/bkt/a%20b.txt"
    query = dict(parse_qsl(parts.query))
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"] == f"{AK}/20240501/cn-north-4/s3/aws4_request"
    assert query["X-Amz-Date"] == "20240501T123456Z"
    assert query["X-Amz-Expires"] == "3600"
    assert query["X-Amz-Security-Token"] == "tok"
    assert len(query["X-Amz-Signature"]) == 64


def test_presigned_url_query_auth_is_deterministic_when_frozen() -> None:
    def presign() -> str:
        return presigned_url_query_auth(
            method="GET", url="http://127.0.0.1:8080/v1/x?b=2&a=1", ak=AK, sk=SK, expires=300
        )

    with frozen_time(AT):
        first = presign()
        second = presign()
    assert first == second
    parts = urlsplit(first)
    assert parts.query.startswith("b=2&a=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&")
    query = dict(parse_qsl(parts.query))
    assert query["X-Amz-Credential"] == f"{AK}/20240501/cn-north-4/modelarts/aws4_request"
    assert query["X-Amz-Date"] == "20240501T123456Z"
    assert query["X-Amz-Expires"] == "300"
    assert query["X-Amz-SignedHeaders"] == "host"


def test_frozen_time_naive_means_utc_and_is_restored(server: CaptureServer) -> None:
    def sign(at: datetime.datetime | None) -> RawRequest:
        raw = botocore_wire(
            server,
            auth="SigV4Auth",
            method="GET",
            path_and_query="/",
            headers=None,
            body=None,
            ak=AK,
            sk=SK,
            at=at,
        )
        return parse_raw(raw)

    naive = datetime.datetime(2030, 1, 2, 3, 4, 5)
    shanghai = datetime.timezone(datetime.timedelta(hours=8))
    first = sign(naive)
    assert first.header("X-Amz-Date") == "20300102T030405Z"
    assert sign(naive.replace(tzinfo=shanghai)).header("X-Amz-Date") == "20300101T190405Z"
    assert sign(naive).header("Authorization") == first.header("Authorization")
    assert sign(None).header("X-Amz-Date") != "20300102T030405Z"
    with frozen_time(naive):
        hw = huawei_wire(
            server,
            signer="SDK-HMAC-SHA256",
            method="GET",
            path="/",
            query=None,
            headers=None,
            body=None,
            ak=AK,
            sk=SK,
        )
    assert parse_raw(hw).header("X-Sdk-Date") == "20300102T030405Z"
