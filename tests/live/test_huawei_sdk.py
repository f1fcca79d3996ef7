"""huaweicloudsdkcore signs, ``requests`` sends, authmw verifies the bytes that arrived.

Every request is built and signed at test time by the real SDK with each of its five signers and travels
over a socket to :class:`tests.support.wire.CaptureServer`; the verifier sees nothing but the captured bytes.  The SDK's
own canonical request and string to sign are recorded by read-only spies and compared with what
:meth:`Verifier.inspect` rebuilt from the wire, so a failure shows which stage diverged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from unittest import mock

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.signer import signer as sdk_signer

from authmw.errors import AuthmwError
from authmw.models import AuthMethod, Credential, Request
from authmw.rawhttp import parse_raw_request
from authmw.signing import ReplayGuard, Verifier
from tests.support.tokens import OneToken
from tests.support.wire import HUAWEI_SIGNERS, CaptureServer, huawei_wire, parse_raw

pytestmark = pytest.mark.live

AK = "HPUAWIRETEST01"
SK = "wire/Secret+Key=="
OTHER_SK = "wire/Secret+Key=!"
OTHER_AK = b"HPUAWIRETEST02"  # same length as AK, unknown to the verifier
TOKEN = "sts-token/Ab3+=="
AT = datetime.datetime(2024, 5, 1, 12, 34, 56, tzinfo=datetime.UTC)
NOW = AT.timestamp()
REGION = "cn-north-4"
SERVICE = "modelarts"
SIGNERS = sorted(HUAWEI_SIGNERS)
SM3_SIGNERS = frozenset({"SDK-HMAC-SM3", "SDK-SM2-SM3"})
# SM2 keys whose public point has a coordinate below 2**248: the SDK then hashes Z_A with a short field.
SM2_SK = "sm2-secret-key"
SM2_SHORT_X_AK = "HPUASM2ZA0176"
SM2_SHORT_Y_AK = "HPUASM2ZA0108"


def make_verifier(*, at: float = NOW, **options: Any) -> Verifier:
    keys = {AK: SK, SM2_SHORT_X_AK: SM2_SK, SM2_SHORT_Y_AK: SM2_SK}
    options.setdefault("security_tokens", OneToken(TOKEN, AK, SK))
    options.setdefault("replay_guard", False)  # each captured request is verified in several ways
    return Verifier(keys=keys, clock=lambda: at, **options)


@pytest.fixture(scope="module")
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as srv:
        yield srv


# --------------------------------------------------------------------------- SDK spies


@dataclasses.dataclass
class SdkStages:
    canonical_requests: list[str] = dataclasses.field(default_factory=list)
    strings_to_sign: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def sdk_stages() -> Iterator[SdkStages]:
    """Record the SDK's canonical request and string to sign without changing what it computes."""
    stages = SdkStages()

    def spy(cls: type, name: str, into: list[str]) -> Any:
        original = vars(cls)[name]

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> str:
            result: str = original(self, *args, **kwargs)
            into.append(result)
            return result

        return mock.patch.object(cls, name, wrapper)

    with contextlib.ExitStack() as stack:
        stack.enter_context(spy(sdk_signer.Signer, "_process_canonical_request", stages.canonical_requests))
        for cls in (sdk_signer.Signer, sdk_signer.DerivationAKSKSigner):
            stack.enter_context(spy(cls, "_process_string_to_sign", stages.strings_to_sign))
        yield stages


# --------------------------------------------------------------------------- request catalogue


def _digest_header(signer: str, body: bytes) -> dict[str, str]:
    """The content-digest header a caller may set; the SDK then signs its value instead of hashing."""
    if signer in SM3_SIGNERS:
        return {"X-Sdk-Content-Sm3": hashlib.new("sm3", body).hexdigest()}
    return {"X-Sdk-Content-Sha256": hashlib.sha256(body).hexdigest()}


@dataclasses.dataclass(frozen=True)
class Case:
    """One request as a service client would issue it through the SDK."""

    id: str
    method: str
    path: str
    query: list[tuple[str, object]] | None = None
    path_params: dict[str, object] | None = None
    headers: dict[str, str] | None = None
    body: bytes | str | None = None
    chunks: tuple[bytes, ...] | None = None  # sent as a one-shot iterable (Transfer-Encoding: chunked)
    security_token: str | None = None
    project_id: str | None = None
    domain_id: str | None = None
    ignore_content_type_for_get: bool = False
    signed_digest: bool = False
    unsigned_payload: bool = False  # what the Credential must report

    def send(self, server: CaptureServer, signer: str, *, ak: str = AK, sk: str = SK) -> bytes:
        headers = dict(self.headers or {})
        if self.signed_digest:
            headers.update(_digest_header(signer, _as_bytes(self.body)))
        body: bytes | str | Iterable[bytes] | None = iter(self.chunks) if self.chunks is not None else self.body
        return huawei_wire(
            server,
            signer=signer,
            method=self.method,
            path=self.path,
            query=self.query,
            path_params=self.path_params,
            headers=headers,
            body=body,
            ak=ak,
            sk=sk,
            security_token=self.security_token,
            project_id=self.project_id,
            domain_id=self.domain_id,
            region=REGION,
            service=SERVICE,
            ignore_content_type_for_get=self.ignore_content_type_for_get,
            at=AT,
        )


def _as_bytes(body: bytes | str | None) -> bytes:
    return body.encode() if isinstance(body, str) else body or b""


CASES = [
    Case(
        "get-query-repeated-list-bool-empty-special",
        "GET",
        "/v2/{project_id}/training-jobs",
        query=[
            ("limit", 10),
            ("offset", 0),
            ("tag", "beta"),
            ("tag", "alpha"),
            ("status", ["running", "failed", "completed"]),
            ("detail", True),
            ("deleted", False),
            ("marker", ""),
            ("name", "a+b ~*ü%"),
            ("sort", None),  # dropped by the SDK
        ],
        project_id="proj-0001",
    ),
    Case(
        "path-params-slash-space-unicode",
        "GET",
        "/v1/buckets/{bucket}/objects/{key}",
        path_params={"bucket": "bkt", "key": "dir/a b/ü~*+(1).txt"},
    ),
    Case("raw-path-space-unicode", "GET", "/v1/dir with space/zürich/x*y~z"),
    Case("post-json", "POST", "/v1/jobs", query=[("dry_run", True)], body='{"name": "job-ü", "n": [1, 2]}'),
    Case(
        "put-custom-headers",
        "PUT",
        "/v1/jobs/42",
        headers={
            "X-Custom-Header": "  inner   spaces  kept  ",
            "X-Empty": "",
            "X-Unicode": "zürich",
            "X_Underscore_Name": "never signed by the SDK",
        },
        body='{"a": 1}',
    ),
    Case("delete", "DELETE", "/v1/jobs/{job_id}", path_params={"job_id": "job-42"}),
    Case(
        "octet-stream-upload-unsigned-payload",
        "PUT",
        "/v1/objects/blob.bin",
        headers={"Content-Type": "application/octet-stream"},
        body=bytes(range(256)),
        unsigned_payload=True,
    ),
    Case("empty-text-post", "POST", "/v1/ping", headers={"Content-Type": "text/plain"}, body=""),
    Case("security-token", "POST", "/v1/jobs", body='{"name": "tmp"}', security_token=TOKEN),
    Case("global-credentials-domain-id", "GET", "/v3/{domain_id}/users", query=[("enabled", True)], domain_id="dom-01"),
    Case("get-without-content-type", "GET", "/v1/jobs", query=[("q", "x")], ignore_content_type_for_get=True),
    Case(
        "chunked-iterable-body",
        "PUT",
        "/v1/objects/stream.txt",
        headers={"Content-Type": "text/plain"},
        chunks=(b"part-1|", b"part-2|", b"end"),
        unsigned_payload=True,
    ),
    Case("json-with-signed-digest-header", "POST", "/v1/jobs", body='{"digest": "signed"}', signed_digest=True),
]


def _check_credential(credential: Credential, case: Case, signer: str) -> None:
    assert credential.scheme == signer
    assert credential.access_key == AK
    expected_method = AuthMethod.TEMPORARY if case.security_token else AuthMethod.AKSK
    assert credential.method is expected_method
    assert credential.method.value == ("temporary" if case.security_token else "aksk")
    assert credential.security_token == case.security_token
    assert credential.signed_at == int(NOW)
    assert credential.unsigned_payload is case.unsigned_payload
    if signer == "V11-HMAC-SHA256":
        # GlobalCredentials sign for the pseudo-region "globe".
        assert (credential.region, credential.service) == ("globe" if case.domain_id else REGION, SERVICE)
    else:
        assert (credential.region, credential.service) == (None, None)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
@pytest.mark.parametrize("signer", SIGNERS)
def test_sdk_request_verifies(server: CaptureServer, signer: str, case: Case) -> None:
    with sdk_stages() as stages:
        raw = case.send(server, signer)
    request = parse_raw_request(raw)
    verifier = make_verifier()

    inspection = verifier.inspect(request)
    assert inspection.valid, inspection.reason
    assert inspection.canonical_request == stages.canonical_requests[-1]
    assert inspection.string_to_sign == stages.strings_to_sign[-1]
    _check_credential(verifier.verify(request), case, signer)


def test_catalogue_really_exercises_the_wire(server: CaptureServer) -> None:
    """The captured bytes show the SDK/requests behaviour the cases are meant to cover."""
    by_id = {case.id: case for case in CASES}
    wire = {key: parse_raw(by_id[key].send(server, "SDK-HMAC-SHA256")) for key in by_id}

    query = wire["get-query-repeated-list-bool-empty-special"]
    assert query.query == (
        "deleted=false&detail=true&limit=10&marker=&name=a%2Bb%20~%2A%C3%BC%25&offset=0"
        "&status=completed&status=failed&status=running&tag=alpha&tag=beta"
    )
    assert query.header("X-Project-Id") == "proj-0001"
    assert (
        wire["path-params-slash-space-unicode"].path == "/v1/buckets/bkt/objects/dir%2Fa%20b%2F%C3%BC~%2A%2B%281%29.txt"
    )
    assert wire["raw-path-space-unicode"].path == "/v1/dir%20with%20space/z%C3%BCrich/x*y~z"
    headers = wire["put-custom-headers"]
    assert headers.header("X-Custom-Header") == "inner   spaces  kept"
    assert "x_underscore_name" not in (headers.header("Authorization") or "")
    assert wire["octet-stream-upload-unsigned-payload"].header("X-Sdk-Content-Sha256") == "UNSIGNED-PAYLOAD"
    assert wire["empty-text-post"].header("X-Sdk-Content-Sha256") == "UNSIGNED-PAYLOAD"
    assert wire["empty-text-post"].header("Content-Length") == "0"
    assert wire["security-token"].header("X-Security-Token") == TOKEN
    assert wire["global-credentials-domain-id"].header("X-Domain-Id") == "dom-01"
    assert wire["get-without-content-type"].header("Content-Type") is None
    assert wire["chunked-iterable-body"].chunked
    assert wire["chunked-iterable-body"].entity_body == b"part-1|part-2|end"


@pytest.mark.parametrize("ak", [SM2_SHORT_X_AK, SM2_SHORT_Y_AK], ids=["short-x", "short-y"])
def test_sm2_key_with_short_public_coordinate(server: CaptureServer, ak: str) -> None:
    """The SDK hashes Z_A with minimal-length integers; such keys must still verify."""
    public = sdk_signer.SM2SM3Signer(BasicCredentials(ak, SM2_SK)).get_signing_key()._public_key
    assert min(public) < 2**248
    raw = Case("sm2", "POST", "/v1/jobs", body='{"k": 1}').send(server, "SDK-SM2-SM3", ak=ak, sk=SM2_SK)
    credential = make_verifier().verify(parse_raw_request(raw))
    assert (credential.scheme, credential.access_key) == ("SDK-SM2-SM3", ak)


@pytest.mark.parametrize(
    ("query", "wire_query"),
    [([("ids", [10, 9])], "ids=9&ids=10"), ([("page", 10), ("page", 9)], "page=9&page=10")],
    ids=["int-list-value", "repeated-int-key"],
)
def test_repeated_integer_query_values(server: CaptureServer, query: list[tuple[str, object]], wire_query: str) -> None:
    raw = Case("ints", "GET", "/v1/jobs", query=query).send(server, "SDK-HMAC-SHA256")
    request = parse_raw_request(raw)
    assert request.query == wire_query
    make_verifier().verify(request)


# --------------------------------------------------------------------------- negative checks

BASE = Case(
    "base",
    "POST",
    "/v1/{project_id}/jobs",
    query=[("limit", 10)],
    headers={"X-Custom": "value"},
    body='{"name": "job-0001"}',
    project_id="proj-0001",
)


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def flip_body_byte(raw: bytes) -> bytes:
    lines, body = _split(raw)
    middle = len(body) // 2
    return _join(lines, body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :])


def add_query_param(raw: bytes) -> bytes:
    lines, body = _split(raw)
    method, target, version = lines[0].split(b" ")
    lines[0] = b" ".join([method, target + (b"&" if b"?" in target else b"?") + b"admin=true", version])
    return _join(lines, body)


def change_path(raw: bytes) -> bytes:
    lines, body = _split(raw)
    method, target, version = lines[0].split(b" ")
    lines[0] = b" ".join([method, target.replace(b"/jobs", b"/users", 1), version])
    return _join(lines, body)


def edit_header(name: str, edit: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def tamper(raw: bytes) -> bytes:
        lines, body = _split(raw)
        prefix = name.lower().encode() + b":"
        index = next(i for i, line in enumerate(lines) if line.lower().startswith(prefix))
        key, _, value = lines[index].partition(b":")
        lines[index] = key + b": " + edit(value.strip())
        return _join(lines, body)

    return tamper


def _next_second(value: bytes) -> bytes:
    return value[:-3] + b"%02dZ" % ((int(value[-3:-1]) + 1) % 60)


TAMPERS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("body-byte-flipped", flip_body_byte, "signature_mismatch"),
    ("query-param-added", add_query_param, "signature_mismatch"),
    ("path-changed", change_path, "signature_mismatch"),
    ("signed-header-edited", edit_header("X-Custom", lambda v: v + b"!"), "signature_mismatch"),
    ("date-header-edited", edit_header("X-Sdk-Date", _next_second), "signature_mismatch"),
    (
        "access-key-changed",
        edit_header("Authorization", lambda v: v.replace(AK.encode(), b"HPUAWIRETEST02")),
        "signature_mismatch",
    ),
    ("date-header-emptied", edit_header("X-Sdk-Date", lambda v: b""), "bad_date"),
]


@pytest.mark.parametrize(("tamper", "code"), [(t, c) for _, t, c in TAMPERS], ids=[i for i, _, _ in TAMPERS])
@pytest.mark.parametrize("signer", SIGNERS)
def test_tampered_request_rejected(
    server: CaptureServer, signer: str, tamper: Callable[[bytes], bytes], code: str
) -> None:
    raw = BASE.send(server, signer)
    verifier = make_verifier()
    verifier.verify(parse_raw_request(raw))  # the untouched request is fine
    with pytest.raises(AuthmwError) as caught:
        verifier.verify(parse_raw_request(tamper(raw)))
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (datetime.timedelta(minutes=16), "date_out_of_window"),
        (-datetime.timedelta(minutes=16), "date_out_of_window"),
        (datetime.timedelta(minutes=14, seconds=59), None),
        (-datetime.timedelta(minutes=14, seconds=59), None),
    ],
    ids=["plus-16min", "minus-16min", "plus-14min59s", "minus-14min59s"],
)
@pytest.mark.parametrize("signer", SIGNERS)
def test_clock_skew_window(server: CaptureServer, signer: str, offset: datetime.timedelta, code: str | None) -> None:
    request = parse_raw_request(BASE.send(server, signer))
    verifier = make_verifier(at=NOW + offset.total_seconds())
    if code is None:
        assert verifier.verify(request).signed_at == int(NOW)
        return
    with pytest.raises(AuthmwError) as caught:
        verifier.verify(request)
    assert caught.value.code == code


@pytest.mark.parametrize("signer", SIGNERS)
def test_wrong_secret_rejected(server: CaptureServer, signer: str) -> None:
    request = parse_raw_request(BASE.send(server, signer, sk=OTHER_SK))
    with pytest.raises(AuthmwError) as caught:
        make_verifier().verify(request)
    assert caught.value.code == "signature_mismatch"


@pytest.mark.parametrize("signer", SIGNERS)
def test_signed_digest_header_detects_body_change(server: CaptureServer, signer: str) -> None:
    case = Case("digest", "POST", "/v1/jobs", body='{"name": "job-0001"}', signed_digest=True)
    raw = case.send(server, signer)
    digest_header = "X-Sdk-Content-Sm3" if signer in SM3_SIGNERS else "X-Sdk-Content-Sha256"
    assert digest_header.lower() in (parse_raw(raw).header("Authorization") or "")
    with pytest.raises(AuthmwError) as caught:
        make_verifier().verify(parse_raw_request(flip_body_byte(raw)))
    assert caught.value.code == "body_digest_mismatch"


@pytest.mark.parametrize("signer", SIGNERS)
def test_unsigned_payload_policy(server: CaptureServer, signer: str) -> None:
    strict = make_verifier(allow_unsigned_payload=False)
    upload = next(case for case in CASES if case.id == "octet-stream-upload-unsigned-payload")
    with pytest.raises(AuthmwError) as caught:
        strict.verify(parse_raw_request(upload.send(server, signer)))
    assert caught.value.code == "unsigned_payload_refused"
    # An empty body leaves nothing unsigned, whatever X-Sdk-Content-* says.
    empty = next(case for case in CASES if case.id == "empty-text-post")
    assert strict.verify(parse_raw_request(empty.send(server, signer))).unsigned_payload is False


@pytest.mark.parametrize("signer", SIGNERS)
def test_security_token_rules(server: CaptureServer, signer: str) -> None:
    case = dataclasses.replace(BASE, security_token=TOKEN)
    raw = case.send(server, signer)
    assert make_verifier().verify(parse_raw_request(raw)).method is AuthMethod.TEMPORARY

    swapped = edit_header("X-Security-Token", lambda v: v + b"x")(raw)
    with pytest.raises(AuthmwError) as caught:
        make_verifier().verify(parse_raw_request(swapped))
    assert caught.value.code == "invalid_security_token"

    with pytest.raises(AuthmwError) as caught:
        make_verifier(security_tokens=None).verify(parse_raw_request(raw))
    assert caught.value.code == "invalid_security_token"


@pytest.mark.parametrize("signer", SIGNERS)
def test_scheme_disabled_and_replay(server: CaptureServer, signer: str) -> None:
    request = parse_raw_request(BASE.send(server, signer))
    with pytest.raises(AuthmwError) as caught:
        make_verifier(disabled_schemes={signer}).verify(request)
    assert caught.value.code == "scheme_disabled"

    guarded = make_verifier(replay_guard=ReplayGuard(clock=lambda: NOW))
    guarded.verify(request)
    with pytest.raises(AuthmwError) as caught:
        guarded.verify(request)
    assert caught.value.code == "replayed_request"


@pytest.mark.parametrize(
    ("case", "wire_path"),
    [
        (Case("dots", "GET", "/v1/a/./b/../jobs"), "/v1/a/jobs"),
        (Case("dotdot-param", "GET", "/v1/objects/{name}", path_params={"name": ".."}), "/v1/"),
    ],
    ids=["dot-segments-in-path", "dotdot-path-param"],
)
@pytest.mark.parametrize("signer", SIGNERS)
def test_dot_segments_removed_after_signing_are_rejected(
    server: CaptureServer, signer: str, case: Case, wire_path: str
) -> None:
    """The SDK signs ``.``/``..`` segments, then urllib3 removes them: the server sees another path."""
    raw = case.send(server, signer)
    assert parse_raw(raw).path == wire_path
    with pytest.raises(AuthmwError) as caught:
        make_verifier().verify(parse_raw_request(raw))
    assert caught.value.code == "signature_mismatch"


def test_request_model_round_trip(server: CaptureServer) -> None:
    """``Request.build`` from the parsed wire parts gives the same request as ``parse_raw_request``."""
    raw = BASE.send(server, "SDK-HMAC-SHA256")
    wire = parse_raw(raw)
    built = Request.build(wire.method, wire.target, list(wire.headers), wire.entity_body)
    assert built == parse_raw_request(raw)
    assert make_verifier().verify(built).scheme == "SDK-HMAC-SHA256"
