"""The rules the verifier applies around every scheme (issue 2, Deliver 3) and its error contract."""

from __future__ import annotations

import re

import pytest

from authmw import errors
from authmw.models import AccessKey, AuthMethod, Request
from authmw.signing import SCHEMES, ReplayGuard, Verifier
from authmw.signing.base import Scheme
from tests.support.signed import AK, SK, T0, URL, signed, with_headers

ALL_HEADER_SCHEMES = sorted(name for name, scheme in SCHEMES.items() if not scheme.presigned)


def verifier(**options: object) -> Verifier:
    options.setdefault("clock", lambda: T0)
    return Verifier(keys={AK: SK}, **options)  # type: ignore[arg-type]


def code_of(verifier: Verifier, request: Request) -> str:
    with pytest.raises(errors.AuthmwError) as raised:
        verifier.verify(request)
    return raised.value.code


@pytest.mark.parametrize("scheme", ALL_HEADER_SCHEMES)
def test_each_scheme_round_trips(scheme: str) -> None:
    credential = verifier().verify(signed(scheme, method="POST", body=b'{"a": 1}'))
    assert credential.scheme == scheme
    assert credential.access_key == AK
    assert credential.method is AuthMethod.AKSK
    assert credential.signed_at == T0


# -- clock skew ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-900, 900, 0])
def test_inside_the_default_window(offset: int) -> None:
    verifier(clock=lambda: T0 + offset).verify(signed())


@pytest.mark.parametrize("offset", [-901, 901, 86400])
def test_outside_the_default_window(offset: int) -> None:
    assert code_of(verifier(clock=lambda: T0 + offset), signed()) == "date_out_of_window"


def test_window_is_configurable() -> None:
    assert code_of(verifier(clock=lambda: T0 + 61, max_skew=60), signed()) == "date_out_of_window"
    verifier(clock=lambda: T0 + 3000, max_skew=3600).verify(signed())


@pytest.mark.parametrize(
    "date", ["2024-05-01T12:34:56Z", "20240501T123456", "20241301T123456Z", "２０２４0501T123456Z", "", "x" * 300]
)
def test_bad_date_format(date: str) -> None:
    assert code_of(verifier(), with_headers(signed(), x_sdk_date=date)) == "bad_date"


def test_date_header_must_be_present_and_signed() -> None:
    request = signed()
    assert code_of(verifier(), with_headers(request, x_sdk_date=None)) == "missing_date"
    auth = request.headers["authorization"].replace(";x-sdk-date", "")
    assert code_of(verifier(), with_headers(request, authorization=auth)) == "header_not_signed"
    sigv4 = signed("AWS4-HMAC-SHA256")
    auth = sigv4.headers["authorization"].replace(";x-amz-date", "")
    assert code_of(verifier(), with_headers(sigv4, authorization=auth)) == "header_not_signed"


def test_host_must_be_signed_and_signed_headers_present() -> None:
    request = signed()
    auth = request.headers["authorization"].replace("host;", "")
    assert code_of(verifier(), with_headers(request, authorization=auth)) == "header_not_signed"
    request = signed(headers={"X-Project-Id": "p"})
    assert code_of(verifier(), with_headers(request, x_project_id=None)) == "signed_header_missing"


def test_unsigned_hop_by_hop_headers_are_ignored() -> None:
    request = with_headers(signed(), connection="close", accept_encoding="br", content_length="0", te="trailers")
    verifier().verify(request)


# -- body ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ALL_HEADER_SCHEMES)
def test_signed_body_is_compared(scheme: str) -> None:
    request = signed(scheme, method="PUT", body=b"payload")
    tampered = Request(request.method, request.path, request.query, request.headers, b"paylOad")
    assert code_of(verifier(), tampered) in {"signature_mismatch", "body_digest_mismatch"}


def test_signed_digest_header_must_match_the_body() -> None:
    request = signed("AWS4-HMAC-SHA256", method="PUT", url="https://obs.example.com/b/k", body=b"abc", service="s3")
    assert "x-amz-content-sha256" in request.headers
    tampered = Request(request.method, request.path, request.query, request.headers, b"abd")
    assert code_of(verifier(), tampered) == "body_digest_mismatch"


def test_body_cap_is_413() -> None:
    body = b"x" * (12 * 1024 * 1024 + 1)
    with pytest.raises(errors.BodyTooLarge) as raised:
        verifier().verify(signed(method="POST", body=body))
    assert raised.value.status == 413
    assert code_of(verifier(max_body=10), signed(method="POST", body=b"x" * 11)) == "body_too_large"
    verifier(max_body=11).verify(signed(method="POST", body=b"x" * 11))


@pytest.mark.parametrize("scheme", ALL_HEADER_SCHEMES)
def test_unsigned_payload_accepted_by_default_refused_when_configured(scheme: str) -> None:
    request = signed(scheme, method="POST", body=b"\x00binary", unsigned_payload=True)
    assert verifier().verify(request).unsigned_payload
    assert code_of(verifier(allow_unsigned_payload=False), request) == "unsigned_payload_refused"
    # A large unsigned body is not capped: the cap is for bodies that must be hashed.
    verifier(max_body=1).verify(request)


def test_unsigned_payload_with_empty_body_is_harmless() -> None:
    request = signed(method="DELETE", unsigned_payload=True)
    assert not verifier(allow_unsigned_payload=False).verify(request).unsigned_payload


def test_unknown_payload_mode_is_refused() -> None:
    request = signed("AWS4-HMAC-SHA256", method="PUT", body=b"abc", unsigned_payload=True)
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    assert code_of(verifier(), with_headers(request, x_amz_content_sha256=mode)) == "unsupported_payload"


def test_streaming_trailer_needs_aws_chunked_body() -> None:
    body = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n"
    headers = {
        "Content-Encoding": "aws-chunked",
        "X-Amz-Trailer": "x-amz-checksum-crc32",
        "X-Amz-Decoded-Content-Length": "3",
        "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    }
    url = "https://obs.example.com/bucket/key"
    request = signed("AWS4-HMAC-SHA256", method="PUT", url=url, headers=headers, body=body, service="s3")
    assert verifier().verify(request).unsigned_payload
    corrupt = Request(request.method, request.path, request.query, request.headers, body.replace(b"abc", b"abd"))
    assert code_of(verifier(), corrupt) == "malformed_chunked_body"
    unframed = Request(request.method, request.path, request.query, request.headers, b"abc")
    assert code_of(verifier(), unframed) == "malformed_chunked_body"


# -- keys, tokens, replay --------------------------------------------------------------------------------


def test_unknown_key_and_wrong_signature_are_indistinguishable(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    scheme_class = type(SCHEMES["SDK-HMAC-SHA256"])
    original = scheme_class.verify

    def spy(self: Scheme, secret: str, parts, string_to_sign: str) -> bool:  # type: ignore[no-untyped-def]
        calls.append((parts.access_key, secret))
        return original(self, secret, parts, string_to_sign)

    monkeypatch.setattr(scheme_class, "verify", spy)
    failures = []
    for keys in ({AK: "wrong-secret"}, {"OTHER": SK}):
        with pytest.raises(errors.AuthmwError) as raised:
            Verifier(keys=keys, clock=lambda: T0).verify(signed())
        failures.append(raised.value)
    assert [type(f) for f in failures] == [errors.SignatureMismatch] * 2
    assert failures[0].detail == failures[1].detail
    assert failures[0].to_dict() == failures[1].to_dict()
    assert [ak for ak, _ in calls] == [AK, AK], "the unknown key must still be checked, against a decoy secret"
    assert calls[0][1] == "wrong-secret"
    assert calls[1][1] not in {SK, "wrong-secret"}


class Tokens:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def resolve(self, token: str, access_key: str) -> AccessKey:
        self.seen.append((token, access_key))
        if token != "good-token":
            raise errors.InvalidSecurityToken("unknown token")
        return AccessKey(access_key, SK, owner="agency-user", temporary=True)


@pytest.mark.parametrize("scheme", ALL_HEADER_SCHEMES)
def test_security_token_is_resolved_through_the_hook(scheme: str) -> None:
    tokens = Tokens()
    credential = verifier(security_tokens=tokens).verify(signed(scheme, security_token="good-token"))
    assert credential.method is AuthMethod.TEMPORARY
    assert credential.owner == "agency-user"
    assert credential.security_token == "good-token"
    assert tokens.seen == [("good-token", AK)]
    assert code_of(verifier(security_tokens=tokens), signed(scheme, security_token="bad")) == "invalid_security_token"


def test_security_token_must_be_signed() -> None:
    request = with_headers(signed(), x_security_token="good-token")
    assert code_of(verifier(security_tokens=Tokens()), request) == "header_not_signed"


def test_security_token_without_resolver_is_refused() -> None:
    assert code_of(verifier(), signed(security_token="good-token")) == "invalid_security_token"


def test_temporary_key_requires_a_token() -> None:
    keys = [AccessKey(AK, SK, temporary=True)]
    from authmw.signing import StaticKeys

    assert code_of(Verifier(keys=StaticKeys(keys), clock=lambda: T0), signed()) == "security_token_required"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_replay_guard_refuses_a_second_use_until_the_window_passes() -> None:
    clock = FakeClock(T0)
    guard = ReplayGuard(capacity=10, quota=10, clock=clock)
    check = verifier(replay_guard=guard, clock=clock)
    request = signed()
    check.verify(request)
    assert code_of(check, request) == "replayed_request"
    check.verify(signed(at=T0 + 1))  # another signature is fine
    clock.now = T0 + 900  # the last second the first request is acceptable: still remembered
    assert code_of(check, request) == "replayed_request"
    clock.now = T0 + 903
    assert len(guard) == 2
    guard.remember(b"probe", T0 + 2000, "someone")  # purges what the window no longer protects
    assert len(guard) == 1
    assert code_of(check, request) == "date_out_of_window"


def test_replay_guard_refuses_when_full_rather_than_forgetting() -> None:
    clock = FakeClock(T0)
    guard = ReplayGuard(capacity=2, quota=2, clock=clock)  # one key: the quota is tested below
    check = verifier(replay_guard=guard, clock=clock)
    first = signed(at=T0)
    check.verify(first)
    check.verify(signed(at=T0 - 1))
    with pytest.raises(errors.ReplayCacheFull) as raised:
        check.verify(signed(at=T0 - 2))
    assert raised.value.status == 503
    assert code_of(check, first) == "replayed_request"


def test_failed_signatures_are_not_remembered() -> None:
    guard = ReplayGuard(capacity=1, clock=lambda: T0)
    request = signed()
    assert code_of(Verifier(keys={AK: "wrong"}, clock=lambda: T0, replay_guard=guard), request) == "signature_mismatch"
    assert len(guard) == 0


# -- scheme selection and configuration --------------------------------------------------------------------


def test_missing_credentials() -> None:
    assert code_of(verifier(), Request.build("GET", "/x", {"host": "h"})) == "missing_credentials"


@pytest.mark.parametrize("value", ["Bearer abc", "Basic dXNlcjpwYXNz", "SDK-HMAC-MD5 Access=a", "garbage"])
def test_unsupported_scheme(value: str) -> None:
    assert code_of(verifier(), Request.build("GET", "/x", {"authorization": value})) == "unsupported_scheme"


def test_schemes_can_be_switched_off() -> None:
    request = signed("V11-HMAC-SHA256")
    assert code_of(verifier(disabled_schemes={"V11-HMAC-SHA256"}), request) == "scheme_disabled"
    assert code_of(verifier(schemes={"AWS4-HMAC-SHA256"}), signed()) == "scheme_disabled"
    verifier(schemes={"SDK-HMAC-SHA256"}).verify(signed())


def test_unknown_scheme_names_fail_at_start_up() -> None:
    with pytest.raises(errors.ConfigurationError, match="SDK-HMAC-MD5"):
        verifier(schemes={"SDK-HMAC-MD5"})
    with pytest.raises(errors.ConfigurationError):
        verifier(max_skew=-1)


def test_header_and_presigned_query_together_are_400() -> None:
    request = signed(url=URL + "&X-Amz-Signature=abc")
    with pytest.raises(errors.MultipleCredentials) as raised:
        verifier().verify(request)
    assert raised.value.status == 400


@pytest.mark.parametrize(
    "authorization",
    [
        "SDK-HMAC-SHA256",
        "SDK-HMAC-SHA256 ",
        "SDK-HMAC-SHA256 Access=a",
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=host;x-sdk-date",
        "SDK-HMAC-SHA256 Access=a, Access=b, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 63,
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=host;x-sdk-date, Signature=" + "G" * 64,
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=Host;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=host;host;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=host;;x-sdk-date, Signature=" + "0" * 64,
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64 + ", Extra=1",
        "V11-HMAC-SHA256 Credential=a/20240501/r, SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=a/20240501/r/s/aws5_request, SignedHeaders=host, Signature=" + "0" * 64,
    ],
)
def test_malformed_authorization(authorization: str) -> None:
    request = with_headers(signed(), authorization=authorization)
    assert code_of(verifier(), request) == "malformed_authorization"


def test_credential_scope_date_must_match() -> None:
    request = signed("V11-HMAC-SHA256")
    auth = request.headers["authorization"].replace("/20240501/", "/20240502/")
    assert code_of(verifier(), with_headers(request, authorization=auth)) == "credential_scope_mismatch"
    sigv4 = signed("AWS4-HMAC-SHA256")
    auth = sigv4.headers["authorization"].replace("/20240501/", "/20240430/")
    assert code_of(verifier(), with_headers(sigv4, authorization=auth)) == "credential_scope_mismatch"


# -- presigned URLs ----------------------------------------------------------------------------------------


def _presigned(url: str, **options: object) -> Request:
    from urllib.parse import urlsplit

    from authmw.signing import presign_url

    presigned = presign_url(
        "GET",
        url,
        access_key=AK,
        secret_key=SK,
        region="cn-north-4",
        at=T0,
        **options,  # type: ignore[arg-type]
    )
    split = urlsplit(presigned)
    return Request.build("GET", f"{split.path}?{split.query}", {"host": split.netloc})


@pytest.mark.parametrize("service", ["s3", "modelarts"])
def test_presigned_url_verifies_until_it_expires(service: str) -> None:
    request = _presigned("https://obs.example.com/bucket/a%20b.txt?versionId=3", service=service, expires=600)
    assert verifier(clock=lambda: T0 + 600).verify(request).scheme == "AWS4-HMAC-SHA256-PRESIGNED"
    assert code_of(verifier(clock=lambda: T0 + 601), request) == "presigned_url_expired"
    assert code_of(verifier(clock=lambda: T0 - 901), request) == "date_out_of_window"


def test_presigned_url_with_bad_fields() -> None:
    request = _presigned("https://obs.example.com/bucket/key", service="s3")
    for old, new in [("X-Amz-Expires=3600", "X-Amz-Expires=604801"), ("X-Amz-Expires=3600", "X-Amz-Expires=-1")]:
        bad = Request.build("GET", f"{request.path}?{request.query.replace(old, new)}", request.headers)
        assert code_of(verifier(), bad) == "malformed_authorization"
    repeated = Request.build("GET", f"{request.path}?{request.query}&X-Amz-Date=20240501T123456Z", request.headers)
    assert code_of(verifier(), repeated) == "malformed_authorization"
    assert code_of(verifier(disabled_schemes={"AWS4-HMAC-SHA256-PRESIGNED"}), request) == "scheme_disabled"


# -- the error contract ------------------------------------------------------------------------------------


def test_error_codes_are_unique_and_statuses_valid() -> None:
    classes = errors.all_error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert re.fullmatch(r"[a-z_]+", cls.code)
        # SPEC §9's statuses, plus 404 (the IAM administration API: no such user, group, ...), 408 (a request
        # head or body too slow), 429 (password guessing at the token endpoint) and 502 (the sidecar's upstream).
        assert cls.status in {400, 401, 403, 404, 408, 413, 429, 502, 503}
    assert errors.SignatureMismatch().headers["WWW-Authenticate"].startswith("SDK-HMAC-SHA256")


def test_error_body_is_generic_and_never_echoes_input() -> None:
    secret_looking = "S3CR3T" * 5
    request = with_headers(signed(), authorization=f"SDK-HMAC-SHA256 Access={secret_looking}")
    with pytest.raises(errors.AuthmwError) as raised:
        verifier().verify(request)
    body = raised.value.to_dict("req-1")
    assert body == {
        "error_code": "malformed_authorization",
        "error_msg": "malformed authorization",
        "request_id": "req-1",
    }
    assert secret_looking not in str(raised.value)


@pytest.mark.parametrize("scheme", ["V11-HMAC-SHA256", "AWS4-HMAC-SHA256"])
def test_credential_scope_can_be_restricted(scheme: str) -> None:
    request = signed(scheme)
    verifier(regions={"cn-north-4"}, services={"modelarts"}).verify(request)
    assert code_of(verifier(regions={"cn-east-3"}), request) == "credential_scope_mismatch"
    assert code_of(verifier(services={"obs"}), request) == "credential_scope_mismatch"
    verifier(regions={"cn-east-3"}).verify(signed())  # SDK-HMAC-SHA256 has no scope to restrict


@pytest.mark.parametrize(
    "change",
    [
        ("Access=" + AK, "Access=" + "A" * 129),
        ("Access=" + AK, "Access=AK\u00e9"),
        ("Access=" + AK, "Access=a/b"),
        ("SignedHeaders=", "SignedHeaders=" + "x;" * 1100),
    ],
    ids=["long-access-key", "non-ascii-access-key", "slash-in-access-key", "huge-signed-headers"],
)
def test_client_chosen_identifiers_are_bounded(change: tuple[str, str]) -> None:
    # They key bounded caches (derived keys, parsed header lists): their size must be bounded as well.
    request = signed()
    authorization = request.headers["authorization"].replace(*change)
    assert code_of(verifier(), with_headers(request, authorization=authorization)) == "malformed_authorization"


@pytest.mark.parametrize("scheme", ["V11-HMAC-SHA256", "AWS4-HMAC-SHA256"])
def test_scope_parts_are_bounded(scheme: str) -> None:
    request = signed(scheme)
    authorization = request.headers["authorization"].replace("/cn-north-4/", "/" + "r" * 200 + "/")
    assert code_of(verifier(), with_headers(request, authorization=authorization)) == "malformed_authorization"
