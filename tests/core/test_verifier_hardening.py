"""Hostile inputs: work an unauthenticated request can cause, replays, ambiguous encodings, failing stores."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from authmw import errors
from authmw.models import AccessKey, Request
from authmw.rawhttp import parse_raw_request
from authmw.signing import ReplayGuard, Verifier
from authmw.signing import verifier as verifier_module
from authmw.signing.huawei import derived_key
from tests.support.signed import AK, SK, T0, signed, with_headers

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
S3_URL = "https://obs.example.com/bucket/key"
STREAMING = {
    "Content-Encoding": "aws-chunked",
    "X-Amz-Trailer": "x-amz-checksum-crc32",
    "X-Amz-Decoded-Content-Length": "3",
    "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
}
CHUNKED_BODY = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n"


def code_of(verifier: Verifier, request: Request) -> str:
    with pytest.raises(errors.AuthmwError) as raised:
        verifier.verify(request)
    return raised.value.code


def test_body_of_an_unauthenticated_request_is_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> bytes:
        raise AssertionError("aws-chunked body decoded before the signature was checked")

    monkeypatch.setattr(verifier_module, "verify_aws_chunked", boom)
    body = b"1\r\nx\r\n" * 50_000 + b"0\r\n\r\n"
    request = signed("AWS4-HMAC-SHA256", method="PUT", url=S3_URL, headers=STREAMING, body=body, service="s3")
    assert code_of(Verifier(keys={"SOMEONE": SK}, clock=lambda: T0), request) == "signature_mismatch"
    assert code_of(Verifier(keys={AK: "wrong"}, clock=lambda: T0), request) == "signature_mismatch"


def test_aws_chunked_body_is_capped() -> None:
    request = signed("AWS4-HMAC-SHA256", method="PUT", url=S3_URL, headers=STREAMING, body=CHUNKED_BODY, service="s3")
    Verifier(keys={AK: SK}, clock=lambda: T0).verify(request)
    assert code_of(Verifier(keys={AK: SK}, clock=lambda: T0, max_body=10), request) == "body_too_large"


def test_signed_digest_is_compared_only_after_the_signature() -> None:
    request = signed("AWS4-HMAC-SHA256", method="PUT", url=S3_URL, body=b"abc", service="s3")
    tampered = Request(request.method, request.path, request.query, request.headers, b"abd")
    assert code_of(Verifier(keys={"SOMEONE": SK}, clock=lambda: T0), tampered) == "signature_mismatch"
    assert code_of(Verifier(keys={AK: SK}, clock=lambda: T0), tampered) == "body_digest_mismatch"


def test_streaming_payload_is_sigv4_only() -> None:
    headers = {"X-Sdk-Content-Sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "Content-Encoding": "aws-chunked"}
    request = signed(method="PUT", headers=headers, body=CHUNKED_BODY)
    assert code_of(Verifier(keys={AK: SK}, clock=lambda: T0), request) == "unsupported_payload"


def test_content_encoding_is_compared_token_by_token() -> None:
    headers = {**STREAMING, "Content-Encoding": "not-aws-chunked"}
    request = signed("AWS4-HMAC-SHA256", method="PUT", url=S3_URL, headers=headers, body=CHUNKED_BODY, service="s3")
    assert code_of(Verifier(keys={AK: SK}, clock=lambda: T0), request) == "unsupported_payload"


def test_malleated_ecdsa_signature_is_still_a_replay() -> None:
    request = signed("SDK-ECDSA-P256-SHA256")
    check = Verifier(keys={AK: SK}, clock=lambda: T0, replay_guard=ReplayGuard(clock=lambda: T0))
    check.verify(request)
    authorization = request.headers["authorization"]
    signature = authorization.rpartition("Signature=")[2]
    r, s = decode_dss_signature(bytes.fromhex(signature))
    twin = encode_dss_signature(r, P256_ORDER - s).hex()
    malleated = with_headers(request, authorization=authorization.replace(signature, twin))
    assert Verifier(keys={AK: SK}, clock=lambda: T0).verify(malleated)  # a valid signature in its own right
    assert code_of(check, malleated) == "replayed_request"


def test_raw_plus_in_a_huawei_query_is_a_space_not_a_plus() -> None:
    request = signed(url="https://modelarts.example.com/v1/users?email=alice%2Badmin%40corp.com")
    check = Verifier(keys={AK: SK}, clock=lambda: T0)
    check.verify(request)
    rewritten = Request(request.method, request.path, "email=alice+admin%40corp.com", request.headers)
    assert code_of(check, rewritten) == "signature_mismatch"
    spaced = signed(url="https://modelarts.example.com/v1/users?q=a+b")
    assert spaced.query == "q=a%20b"  # the signer sends what it signed
    check.verify(spaced)


class Failing:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_access_key(self, access_key: str) -> AccessKey | None:
        raise self.exc

    def resolve(self, token: str, access_key: str) -> AccessKey:
        raise self.exc


@pytest.mark.parametrize("exc", [ConnectionError("db down"), KeyError("x"), ValueError("bad base64"), OSError()])
def test_failing_store_or_resolver_is_503(exc: Exception) -> None:
    with pytest.raises(errors.StoreUnavailable) as raised:
        Verifier(keys=Failing(exc), clock=lambda: T0).verify(signed())
    assert raised.value.status == 503
    tokens = Failing(exc)
    with pytest.raises(errors.StoreUnavailable):
        Verifier(keys={AK: SK}, clock=lambda: T0, security_tokens=tokens).verify(signed(security_token="t"))


def test_store_errors_of_authmw_pass_through() -> None:
    failing = Failing(errors.InvalidSecurityToken("expired"))
    verifier = Verifier(keys={AK: SK}, clock=lambda: T0, security_tokens=failing)
    assert code_of(verifier, signed(security_token="t")) == "invalid_security_token"


def test_non_ascii_header_names_are_refused() -> None:
    with pytest.raises(errors.MalformedRequest):
        Request.build("GET", "/", [("X-Sd\u212a-Date", "20240501T123456Z")])  # Kelvin sign lower-cases to k


@pytest.mark.parametrize("padding", ["\u00a0", "\u0085", "\u3000"])
def test_huawei_strips_only_spaces_and_tabs(padding: str) -> None:
    request = signed(headers={"X-Reader": "reader"})
    check = Verifier(keys={AK: SK}, clock=lambda: T0)
    check.verify(with_headers(request, x_reader=" reader\t"))
    assert code_of(check, with_headers(request, x_reader="reader" + padding)) == "signature_mismatch"


def test_duplicate_headers_merge_in_linear_time() -> None:
    request = Request.build("GET", "/", [("X-Dup", f"v{i}") for i in range(20_000)])
    assert request.headers["x-dup"].count(",") == 19_999


def test_unknown_access_keys_share_one_decoy_key_cache() -> None:
    check = Verifier(keys={AK: SK}, clock=lambda: T0)
    request = signed("V11-HMAC-SHA256")
    before = derived_key.cache_info().currsize
    for n in range(20):
        authorization = request.headers["authorization"].replace(f"Credential={AK}", f"Credential=UNKNOWN{n}")
        assert code_of(check, with_headers(request, authorization=authorization)) == "signature_mismatch"
    assert derived_key.cache_info().currsize - before <= 1


def test_signature_and_token_stay_out_of_reprs_and_messages() -> None:
    request = signed(security_token="SECRET-STS-TOKEN")
    verifier = Verifier(keys={AK: SK}, clock=lambda: T0)
    trace = verifier.inspect(request)
    parts_repr = repr(verifier_module.SCHEMES["SDK-HMAC-SHA256"].parse(request))
    signature = request.headers["authorization"].rpartition("=")[2]
    assert "SECRET-STS-TOKEN" not in parts_repr
    assert signature not in parts_repr
    assert "SECRET-STS-TOKEN" not in repr(trace)
    token_like = "ghp_" + "x" * 36
    with pytest.raises(errors.UnsupportedScheme) as raised:
        verifier.verify(with_headers(signed(), authorization=token_like))
    assert token_like not in str(raised.value)


def test_absolute_form_target_replaces_the_host_header() -> None:
    raw = b"GET https://real.example.com/x?a=1 HTTP/1.1\r\nHost: spoofed.example.com\r\n\r\n"
    request = parse_raw_request(raw)
    assert request.headers["host"] == "real.example.com"
    assert request.target == "/x?a=1"
