"""authmw's client signer against the real clients.

* ``sign_request(scheme="AWS4-HMAC-SHA256")`` must write the same ``Authorization`` header as botocore's
  ``SigV4Auth``/``S3SigV4Auth`` for the same inputs (hypothesis plus a table of named cases);
* ``presign_url`` must produce URLs that verify exactly like botocore's ``SigV4QueryAuth`` ones, and be
  the same string wherever botocore does not rewrite the query;
* every scheme's output, sent by ``requests`` and ``httpx``, verifies from the captured bytes;
* huaweicloudsdkcore's own ``verify()`` accepts authmw's ECDSA P-256 and SM2 signatures.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import botocore.auth
import botocore.config
import botocore.credentials
import httpx
import pytest
import requests
from botocore.awsrequest import AWSRequest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import P256SHA256Signer, SM2SM3Signer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authmw.models import AuthMethod, Request
from authmw.rawhttp import parse_raw_request
from authmw.signing import SignedHttpRequest, Verifier, presign_url, sign_request
from tests.support.budget import examples
from tests.support.tokens import OneToken
from tests.support.wire import CaptureServer, frozen_time

pytestmark = pytest.mark.live

AK = "AKIDPARITY000001"
SK = "parity/Secret+Key=="
TOKEN = "session/token+=="
AT = datetime.datetime(2024, 5, 1, 12, 34, 56, tzinfo=datetime.UTC)
NOW = AT.timestamp()
REGION = "cn-north-4"
SIGV4 = "AWS4-HMAC-SHA256"
PRESIGNED = "AWS4-HMAC-SHA256-PRESIGNED"
HUAWEI_SCHEMES = ["SDK-ECDSA-P256-SHA256", "SDK-HMAC-SHA256", "SDK-HMAC-SM3", "SDK-SM2-SM3", "V11-HMAC-SHA256"]
# SM2 keys whose public point has a coordinate below 2**248 (the SDK then hashes Z_A with a short field).
SM2_SK = "sm2-secret-key"
SM2_SHORT_X_AK = "HPUASM2ZA0176"
SM2_SHORT_Y_AK = "HPUASM2ZA0108"
KEYS = {AK: SK, SM2_SHORT_X_AK: SM2_SK, SM2_SHORT_Y_AK: SM2_SK}


def make_verifier(*, at: float = NOW, **options: Any) -> Verifier:
    return Verifier(keys=KEYS, clock=lambda: at, security_tokens=OneToken(TOKEN, AK, SK), **options)


# --------------------------------------------------------------------------- header signing parity


def botocore_signed(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    token: str | None,
    unsigned: bool,
    at: datetime.datetime,
) -> Mapping[str, str]:
    """Headers botocore adds: ``S3SigV4Auth`` for S3 (raw path), ``SigV4Auth`` for everything else."""
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    auth_cls = botocore.auth.S3SigV4Auth if service == "s3" else botocore.auth.SigV4Auth
    if unsigned and service == "s3":
        request.context["client_config"] = botocore.config.Config(s3={"payload_signing_enabled": False})
    elif unsigned:
        request.context["payload_signing_enabled"] = False
    with frozen_time(at):
        auth_cls(botocore.credentials.Credentials(AK, SK, token), service, region).add_auth(request)
    return request.headers


def authmw_signed(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    token: str | None,
    unsigned: bool,
    at: datetime.datetime,
) -> SignedHttpRequest:
    return sign_request(
        method,
        url,
        headers,
        body,
        access_key=AK,
        secret_key=SK,
        scheme=SIGV4,
        region=region,
        service=service,
        security_token=token,
        unsigned_payload=unsigned,
        at=at,
    )


def assert_same_signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    service: str = "execute-api",
    region: str = REGION,
    token: str | None = None,
    unsigned: bool = False,
    at: datetime.datetime = AT,
) -> SignedHttpRequest:
    options: dict[str, Any] = {"service": service, "region": region, "token": token, "unsigned": unsigned, "at": at}
    theirs = botocore_signed(method, url, headers, body, **options)
    ours = authmw_signed(method, url, headers, body, **options)
    assert ours.headers["Authorization"] == theirs["Authorization"]
    added = {name.lower(): value for name, value in ours.headers.items()}
    for name in ("X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256"):
        assert added.get(name.lower()) == theirs.get(name), name  # header names compare case-insensitively
    return ours


HOSTS = [
    "https://example.com",
    "https://API.Example.com:443",
    "http://h.example:80",
    "http://127.0.0.1:8080",
    "https://h.example:8443",
    "https://[::1]:8443",
]
PATH_SEGMENTS = [
    "a",
    "B",
    "",
    ".",
    "..",
    "a%20b",
    "a b",
    "%7E",
    "~",
    "%C3%BC",
    "ü",
    "a+b",
    "%2F",
    "x;y",
    "*",
    "(1)",
    "%25",
]
QUERY_KEYS = ["a", "b", "A", "%41", "x+y", "k%20", "ü", "%C3%BC", "list-type", ""]
QUERY_VALUES = ["", "1", "10", "9", "a+b", "%2B", "x%20y", "~", "%7E", "%7e", "ü", "=", "a=b"]
HEADER_NAMES = [
    "X-Custom",
    "x-amz-meta-note",
    "Content-Type",
    "X-Under_score",
    "User-Agent",
    "Expect",
    "Connection",
    "X-Amzn-Trace-Id",
    "Range",
    "Host",
    "Content-MD5",
]
HEADER_VALUES = ["v", "  a   b  ", "a\tb", "", "zürich", "text/plain; charset=utf-8"]
SERVICES = [("s3", "us-east-1"), ("execute-api", REGION), ("modelarts", REGION)]

paths = st.lists(st.sampled_from(PATH_SEGMENTS), max_size=5).map(lambda segments: "/" + "/".join(segments))
query_items = st.tuples(st.sampled_from(QUERY_KEYS), st.sampled_from(QUERY_VALUES), st.booleans()).map(
    lambda item: f"{item[0]}={item[1]}" if item[2] or item[1] else item[0]
)
queries = st.lists(query_items, max_size=5).map("&".join)
moments = st.datetimes(
    min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 12, 31), timezones=st.just(datetime.UTC)
).map(lambda moment: moment.replace(microsecond=0))


@settings(
    max_examples=examples(300),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
    host=st.sampled_from(HOSTS),
    path=paths,
    query=queries,
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), st.sampled_from(HEADER_VALUES), max_size=5),
    body=st.sampled_from([b"", b"{}", bytes(range(256)), b"x" * 1000]),
    service_region=st.sampled_from(SERVICES),
    token=st.sampled_from([None, TOKEN]),
    unsigned=st.booleans(),
    at=moments,
)
def test_sigv4_authorization_matches_botocore(
    method: str,
    host: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    service_region: tuple[str, str],
    token: str | None,
    unsigned: bool,
    at: datetime.datetime,
) -> None:
    service, region = service_region
    url = host + path + (f"?{query}" if query else "")
    ours = assert_same_signature(
        method, url, headers, body, service=service, region=region, token=token, unsigned=unsigned, at=at
    )
    request = Request.build(ours.method, _target(ours.url), ours.headers, ours.body)
    credential = make_verifier(at=at.timestamp()).verify(request)
    assert (credential.scheme, credential.region, credential.service) == (SIGV4, region, service)


@dataclasses.dataclass(frozen=True)
class SigningCase:
    id: str
    method: str
    url: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    service: str = "execute-api"
    token: str | None = None
    unsigned: bool = False


SIGNING_CASES = [
    SigningCase("get-root", "GET", "https://example.com/"),
    SigningCase("get-no-path", "GET", "https://example.com"),
    SigningCase("path-percent-20-double-encoded", "GET", "https://example.com/v1/a%20b/c"),
    SigningCase("path-dot-segments-and-double-slash", "GET", "https://example.com/v1/a/../b/./c//d/"),
    SigningCase("path-raw-unicode", "GET", "https://example.com/v1/zürich/ü"),
    SigningCase("query-plus-repeated-flag", "GET", "https://example.com/v1/q?b=x%20y&a=1+2&a=0&flag&z=%2B"),
    SigningCase("query-lowercase-escape-kept", "GET", "https://example.com/v1/q?a=%7e&b=~"),
    SigningCase("json-body", "POST", "https://example.com/v1/jobs", {"Content-Type": "application/json"}, b"{}"),
    SigningCase("header-trimall", "PUT", "https://example.com/x", {"X-Custom": "  a \t  b  "}, b"x"),
    SigningCase("header-underscore-signed", "GET", "https://example.com/x", {"X-Under_score": "1"}),
    SigningCase("unsigned-header-blacklist", "GET", "https://example.com/x", {"User-Agent": "ua", "Expect": "x"}),
    SigningCase("explicit-host-header", "GET", "https://example.com/x", {"Host": "Other.Example:8443"}),
    SigningCase("default-port-dropped", "GET", "https://example.com:443/x"),
    SigningCase("non-default-port-kept", "GET", "http://127.0.0.1:9000/x"),
    SigningCase("uppercase-host-lowered", "GET", "https://EXAMPLE.com/x"),
    SigningCase("ipv6-non-default-port", "GET", "https://[::1]:8443/x"),
    SigningCase("session-token", "POST", "https://example.com/x", body=b"{}", token=TOKEN),
    SigningCase("unsigned-payload", "PUT", "https://example.com/blob", body=b"raw", unsigned=True),
    SigningCase("s3-raw-path", "PUT", "https://obs.example.com/bkt/a%20b/../c//d", body=b"x", service="s3"),
    SigningCase("s3-unsigned-payload", "PUT", "https://obs.example.com/bkt/k", body=b"x", service="s3", unsigned=True),
    SigningCase("s3-empty-body-hash-header", "GET", "https://obs.example.com/bkt?list-type=2", service="s3"),
]


@pytest.mark.parametrize("case", SIGNING_CASES, ids=lambda case: case.id)
def test_sigv4_signing_table(case: SigningCase) -> None:
    ours = assert_same_signature(
        case.method,
        case.url,
        case.headers,
        case.body,
        service=case.service,
        token=case.token,
        unsigned=case.unsigned,
    )
    # authmw's output verifies, with the Host header an HTTP client would send.
    request = Request.build(ours.method, _target(ours.url), ours.headers, ours.body)
    credential = make_verifier().verify(request)
    assert (credential.scheme, credential.unsigned_payload) == (SIGV4, case.unsigned and bool(case.body))


@pytest.mark.parametrize(
    "url",
    ["https://[::1]:443/x", "https://user@example.com/x", "https://user:pw@example.com:443/x"],
    ids=["ipv6-default-port", "userinfo", "userinfo-password-default-port"],
)
def test_sigv4_host_derivation_matches_botocore(url: str) -> None:
    """botocore signs ``hostname[:port]``: no userinfo, no default port, IPv6 in brackets."""
    ours = assert_same_signature("GET", url, {}, b"")
    assert "@" not in ours.headers["Host"]
    assert not ours.headers["Host"].endswith(":443")


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


# --------------------------------------------------------------------------- presigned URL parity


def botocore_presigned(
    method: str, url: str, *, service: str, token: str | None, expires: int, at: datetime.datetime = AT
) -> str:
    auth_cls = botocore.auth.S3SigV4QueryAuth if service == "s3" else botocore.auth.SigV4QueryAuth
    request = AWSRequest(method=method, url=url)
    with frozen_time(at):
        auth_cls(botocore.credentials.Credentials(AK, SK, token), service, REGION, expires=expires).add_auth(request)
    presigned: str = request.prepare().url
    return presigned


def host_header(url: str) -> str:
    """The Host header http.client sends for ``url`` (no userinfo, default port omitted)."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


@dataclasses.dataclass(frozen=True)
class PresignCase:
    id: str
    url: str
    same_string: bool  # botocore leaves the query as given, so the URLs must be identical
    method: str = "GET"
    service: str = "execute-api"
    token: str | None = None
    expires: int = 3600


PRESIGN_CASES = [
    PresignCase("no-query", "https://example.com/v1/a%20b/c", True),
    PresignCase("sorted-query", "https://example.com/v1/x?a=1&b=2", True),
    PresignCase("unsorted-query", "https://example.com/v1/x?b=2&a=1", True),
    PresignCase("encoded-space", "https://example.com/v1/x?q=x%20y", True),
    PresignCase("dot-segments-path", "https://example.com/v1/a/../b/./c", True),
    PresignCase("default-port", "https://example.com:443/x", True),
    PresignCase("non-default-port", "http://127.0.0.1:9000/x", True),
    PresignCase("session-token", "https://example.com/x", True, token=TOKEN),
    PresignCase("expires-1s", "https://example.com/x", True, expires=1),
    PresignCase("expires-7-days", "https://example.com/x", True, expires=604800),
    PresignCase("s3-get", "https://obs.example.com/bkt/dir/a%20b%2B%C3%BC.txt", True, service="s3"),
    PresignCase("s3-put-token", "https://obs.example.com/bkt/k", True, method="PUT", service="s3", token=TOKEN),
    PresignCase("plus-in-query", "https://example.com/x?q=a+b", False),
    PresignCase("flag-without-equals", "https://example.com/x?flag", False),
    PresignCase("lowercase-escape", "https://example.com/x?t=%7e", False),
    PresignCase("repeated-key", "https://example.com/x?a=1&a=2", False),
]


@pytest.mark.parametrize("case", PRESIGN_CASES, ids=lambda case: case.id)
def test_presign_url_matches_botocore(case: PresignCase) -> None:
    ours = presign_url(
        case.method,
        case.url,
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service=case.service,
        expires=case.expires,
        security_token=case.token,
        at=AT,
    )
    theirs = botocore_presigned(case.method, case.url, service=case.service, token=case.token, expires=case.expires)
    for url in (ours, theirs):
        request = Request.build(case.method, _target(url), [("Host", host_header(url))])
        credential = make_verifier(at=NOW + case.expires).verify(request)
        assert (credential.scheme, credential.service) == (PRESIGNED, case.service)
        assert credential.method is (AuthMethod.TEMPORARY if case.token else AuthMethod.AKSK)
    ours_query = dict(parse_qsl(urlsplit(ours).query))
    theirs_query = dict(parse_qsl(urlsplit(theirs).query))
    for name in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders"):
        assert ours_query[name] == theirs_query[name]
    if case.same_string:
        assert ours == theirs
    else:
        assert ours != theirs  # botocore re-encoded the caller's query through parse_qs


def test_botocore_presign_keeps_only_first_repeated_value() -> None:
    """``SigV4QueryAuth`` rebuilds the query with ``parse_qs``: ``a=2`` silently disappears; authmw keeps it."""
    url = "https://example.com/x?a=1&a=2"
    theirs = botocore_presigned("GET", url, service="execute-api", token=None, expires=60)
    ours = presign_url("GET", url, access_key=AK, secret_key=SK, region=REGION, service="execute-api", at=AT)
    assert [value for key, value in parse_qsl(urlsplit(theirs).query) if key == "a"] == ["1"]
    assert [value for key, value in parse_qsl(urlsplit(ours).query) if key == "a"] == ["1", "2"]


def test_presign_ipv6_default_port_matches_botocore() -> None:
    url = "https://[::1]:443/x"
    ours = presign_url("GET", url, access_key=AK, secret_key=SK, region=REGION, service="execute-api", at=AT)
    assert ours == botocore_presigned("GET", url, service="execute-api", token=None, expires=3600)


# --------------------------------------------------------------------------- every scheme over real HTTP


@pytest.fixture(scope="module")
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as srv:
        yield srv


def send(client: str, method: str, url: str, headers: Mapping[str, str], body: bytes) -> None:
    if client == "requests":
        requests.request(method, url, headers=dict(headers), data=body, timeout=10)
    else:
        httpx.request(method, url, headers=dict(headers), content=body, timeout=10)


@dataclasses.dataclass(frozen=True)
class HttpCase:
    id: str
    method: str
    path_and_query: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    token: str | None = None
    unsigned: bool = False


HTTP_CASES = [
    HttpCase("get-query", "GET", "/v1/items?b=2&a=1&a=0&flag&sp=a%20b&plus=a+b&u=%C3%BC&t=~"),
    HttpCase(
        "post-json-headers-token",
        "POST",
        "/v1/a%20b/%C3%BC/c",
        {"Content-Type": "application/json", "X-Custom": "a   b", "X-Under_score": "1"},
        b'{"k": "v"}',
        token=TOKEN,
    ),
    HttpCase("put-binary", "PUT", "/v1/blob", {"Content-Type": "application/octet-stream"}, bytes(range(256))),
    HttpCase(
        "put-unsigned-payload", "PUT", "/v1/up", {"Content-Type": "application/octet-stream"}, b"raw", unsigned=True
    ),
    HttpCase("delete-trailing-slash", "DELETE", "/v1/x/"),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda case: case.id)
@pytest.mark.parametrize("client", ["requests", "httpx"])
@pytest.mark.parametrize("scheme", [*HUAWEI_SCHEMES, SIGV4])
def test_signed_request_sent_over_http_verifies(
    server: CaptureServer, scheme: str, client: str, case: HttpCase
) -> None:
    signed = sign_request(
        case.method,
        server.base_url + case.path_and_query,
        case.headers,
        case.body,
        access_key=AK,
        secret_key=SK,
        scheme=scheme,
        region=REGION,
        service="modelarts",
        security_token=case.token,
        unsigned_payload=case.unsigned,
        at=AT,
    )
    mark = server.mark()
    send(client, signed.method, signed.url, signed.headers, signed.body)
    request = parse_raw_request(server.since(mark))

    credential = make_verifier().verify(request)
    assert (credential.scheme, credential.access_key) == (scheme, AK)
    assert credential.method is (AuthMethod.TEMPORARY if case.token else AuthMethod.AKSK)
    assert credential.unsigned_payload is case.unsigned
    assert credential.signed_at == int(NOW)


@pytest.mark.parametrize("client", ["requests", "httpx"])
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_presigned_url_fetched_over_http_verifies(server: CaptureServer, client: str, method: str) -> None:
    url = presign_url(
        method,
        server.base_url + "/bkt/dir/a%20b.txt",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        expires=300,
        security_token=TOKEN,
        at=AT,
    )
    body = b"presigned upload" if method == "PUT" else b""
    mark = server.mark()
    send(client, method, url, {}, body)
    credential = make_verifier(at=NOW + 300).verify(parse_raw_request(server.since(mark)))
    assert (credential.scheme, credential.method) == (PRESIGNED, AuthMethod.TEMPORARY)
    assert credential.unsigned_payload is bool(body)


@pytest.mark.parametrize(
    ("header", "on_the_wire"),
    [
        # Signed trimmed and returned trimmed: HTTP clients refuse leading/trailing whitespace.
        (("X-Custom", "  padded  "), b"\r\nX-Custom: padded\r\n"),
        # requests sends str values as ISO-8859-1 while the signature covers UTF-8 text.
        (("X-City", "z\u00fcrich"), b"\r\nX-City: z\xfcrich\r\n"),
    ],
    ids=["padded-value", "non-ascii-value"],
)
@pytest.mark.parametrize("scheme", ["SDK-HMAC-SHA256", SIGV4])
def test_awkward_header_values_are_sendable_and_verify(
    server: CaptureServer, scheme: str, header: tuple[str, str], on_the_wire: bytes
) -> None:
    signed = sign_request(
        "GET",
        server.base_url + "/v1/x",
        dict([header]),
        access_key=AK,
        secret_key=SK,
        scheme=scheme,
        region=REGION,
        service="modelarts",
        at=AT,
    )
    mark = server.mark()
    send("requests", signed.method, signed.url, signed.headers, signed.body)
    raw = server.since(mark)
    assert on_the_wire in raw
    make_verifier().verify(parse_raw_request(raw))


# --------------------------------------------------------------------------- huaweicloudsdkcore verify()

SDK_SIGNERS = {"SDK-ECDSA-P256-SHA256": P256SHA256Signer, "SDK-SM2-SM3": SM2SM3Signer}


def sdk_string_to_sign(sdk_signer: Any, signed: SignedHttpRequest, signed_headers: list[str]) -> str:
    """The string to sign as huaweicloudsdkcore computes it for authmw's signed request."""
    parts = urlsplit(signed.url)
    query = [(unquote(k), unquote(v)) for k, _, v in (item.partition("=") for item in parts.query.split("&") if item)]
    sdk_request = SdkRequest(
        method=signed.method,
        schema=parts.scheme,
        host=parts.netloc,
        resource_path=parts.path,
        query_params=query,
        header_params={k: v for k, v in signed.headers.items() if k != "Authorization"},
        body=signed.body,
    )
    canonical = sdk_signer._process_canonical_request(sdk_request, signed_headers)
    when = datetime.datetime.strptime(signed.headers["X-Sdk-Date"], "%Y%m%dT%H%M%SZ")
    string_to_sign: str = sdk_signer._process_string_to_sign(canonical, when)
    return string_to_sign


@pytest.mark.parametrize(
    ("access_key", "secret_key"),
    [(AK, SK), (SM2_SHORT_X_AK, SM2_SK), (SM2_SHORT_Y_AK, SM2_SK)],
    ids=["regular-key", "sm2-short-x-key", "sm2-short-y-key"],
)
@pytest.mark.parametrize("scheme", sorted(SDK_SIGNERS))
def test_sdk_verify_accepts_authmw_signatures(scheme: str, access_key: str, secret_key: str) -> None:
    signed = sign_request(
        "POST",
        "https://iam.example.com/v3/a%20b/ü?b=2&a=1&flag&q=x+y",
        {"Content-Type": "application/json", "X-Custom": "a   b", "X-Project-Id": "p1"},
        b'{"name": "job"}',
        access_key=access_key,
        secret_key=secret_key,
        scheme=scheme,
        at=AT,
    )
    authorization = signed.headers["Authorization"]
    signed_headers = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    signature = bytes.fromhex(authorization.rpartition("Signature=")[2])

    sdk_signer = SDK_SIGNERS[scheme](BasicCredentials(access_key, secret_key))
    string_to_sign = sdk_string_to_sign(sdk_signer, signed, signed_headers)
    request = Request.build(signed.method, _target(signed.url), signed.headers, signed.body)
    assert make_verifier().inspect(request).string_to_sign == string_to_sign

    key = sdk_signer.get_signing_key()
    assert key.verify(signature, string_to_sign.encode())
    assert not key.verify(signature, (string_to_sign + "\n").encode())
    if scheme == "SDK-SM2-SM3" and access_key != AK:
        assert min(key._public_key) < 2**248  # the short-coordinate keys really are short
