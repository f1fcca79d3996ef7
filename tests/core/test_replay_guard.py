"""Replay protection (issue 12, item 9): on by default, per-user quota, bounded memory, every header scheme."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pytest

from authmw import errors
from authmw.guard import SIGNED_IF_PRESENT, Guard
from authmw.models import AccessKey, Request, Session
from authmw.signing import SCHEMES, ReplayGuard, StaticKeys, Verifier, presign_url
from tests.support.signed import AK, SK, T0, URL, signed, with_headers

HEADER_SCHEMES = sorted(name for name, scheme in SCHEMES.items() if not scheme.presigned)
S3_URL = "https://obs.example.com/bucket/key"
STREAMING = {
    "Content-Encoding": "aws-chunked",
    "X-Amz-Trailer": "x-amz-checksum-crc32",
    "X-Amz-Decoded-Content-Length": "3",
    "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
}
CHUNKED_BODY = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def code_of(verifier: Verifier, request: Request) -> str:
    with pytest.raises(errors.AuthmwError) as raised:
        verifier.verify(request)
    return raised.value.code


# -- on by default ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", HEADER_SCHEMES)
def test_every_header_scheme_is_accepted_once_by_default(scheme: str) -> None:
    check = Verifier(keys={AK: SK}, clock=lambda: T0)
    request = signed(scheme, method="POST", body=b'{"a": 1}')
    check.verify(request)
    assert code_of(check, request) == "replayed_request"


def test_a_guard_built_directly_refuses_a_replay() -> None:
    class Keys:
        def get_access_key(self, access_key: str) -> AccessKey | None:
            return AccessKey(AK, SK, "u-1") if access_key == AK else None

    guard = Guard(identity=Keys(), clock=lambda: T0)  # type: ignore[arg-type]
    assert isinstance(guard.verifier.replay_guard, ReplayGuard)
    guard.verifier.verify(signed())
    with pytest.raises(errors.ReplayedRequest):
        guard.verifier.verify(signed())
    assert guard.verifier.replay_guard._held.get("u-1", 0) == 1


def test_it_can_be_turned_off_explicitly() -> None:
    check = Verifier(keys={AK: SK}, clock=lambda: T0, replay_guard=False, signed_if_present=SIGNED_IF_PRESENT)
    assert check.replay_guard is None
    request = signed()
    check.verify(request)
    check.verify(request)


def test_an_empty_guard_given_is_used_not_mistaken_for_none() -> None:
    guard = ReplayGuard(clock=lambda: T0)
    assert len(guard) == 0
    assert Verifier(keys={AK: SK}, replay_guard=guard).replay_guard is guard


# -- what the fingerprint covers ----------------------------------------------------------------------------


def test_changing_what_is_not_signed_is_still_a_replay() -> None:
    check = Verifier(keys={AK: SK}, clock=lambda: T0)
    request = signed("SDK-HMAC-SHA256", method="PUT", body=b"blob", unsigned_payload=True)
    check.verify(request)
    for altered in (
        with_headers(request, user_agent="replayer", x_forwarded_for="192.0.2.1"),
        Request(request.method, request.path, request.query, request.headers, b"another body"),
    ):
        assert code_of(check, altered) == "replayed_request"


def test_aws_chunked_uploads_are_covered() -> None:
    check = Verifier(keys={AK: SK}, clock=lambda: T0)
    request = signed("AWS4-HMAC-SHA256", method="PUT", url=S3_URL, headers=STREAMING, body=CHUNKED_BODY, service="s3")
    check.verify(request)
    assert code_of(check, request) == "replayed_request"


def test_different_requests_of_one_second_do_not_collide() -> None:
    check = Verifier(keys={AK: SK}, clock=lambda: T0)
    for request in (
        signed(),
        signed(headers={"X-Nonce": "1"}),  # what a client sending identical requests adds
        signed(headers={"X-Nonce": "2"}),
        signed(url=URL + "&page=2"),
        signed(method="POST", body=b'{"a": 1}'),
        signed(method="POST", body=b'{"a": 2}'),
        signed(at=T0 + 1),
    ):
        check.verify(request)


def test_identical_requests_signed_within_one_second_are_one_request() -> None:
    # Dates have one-second resolution: a client must sign a nonce to send the same request twice in a second.
    check = Verifier(keys={AK: SK}, clock=lambda: T0)
    check.verify(signed(at=T0))
    with pytest.raises(errors.ReplayedRequest) as raised:
        check.verify(signed(at=T0 + 0.9))
    assert raised.value.status == 401
    assert "sign each request anew" in raised.value.to_dict("r")["error_msg"]


@pytest.mark.parametrize("scheme", HEADER_SCHEMES)
def test_the_same_request_under_another_key_is_another_request(scheme: str) -> None:
    from authmw.signing import sign_request
    from tests.support.signed import SCOPED

    check = Verifier(keys={AK: SK, "AK2": "another-secret-key-of-forty-characters-0"}, clock=lambda: T0)
    check.verify(signed(scheme))
    scope = {"region": "cn-north-4", "service": "modelarts"} if scheme in SCOPED else {}
    out = sign_request("GET", URL, {}, b"", access_key="AK2", secret_key="another-secret-key-of-forty-characters-0",
                       scheme=scheme, at=T0, **scope)  # fmt: skip
    split = urlsplit(out.url)
    check.verify(Request.build("GET", f"{split.path}?{split.query}", out.headers, b""))


def test_presigned_urls_are_not_remembered() -> None:
    guard = ReplayGuard(clock=lambda: T0)
    check = Verifier(keys={AK: SK}, clock=lambda: T0, replay_guard=guard)
    url = presign_url("GET", S3_URL, access_key=AK, secret_key=SK, region="cn-north-4", service="s3", at=T0)
    split = urlsplit(url)
    request = Request.build("GET", f"{split.path}?{split.query}", [("host", split.netloc)], b"")
    for _ in range(3):
        check.verify(request)
    assert len(guard) == 0


def test_temporary_credentials_are_charged_to_the_user_who_asked_for_them() -> None:
    session = Session("AKTEMP", "SKTEMP", T0, T0 + 900, "u-caller", "caller", "d-1", "main", "agency-1", "ops")

    class Tokens:
        def resolve(self, token: str, access_key: str) -> AccessKey:
            return AccessKey("AKTEMP", "SKTEMP", "agency-1", True, session)

    guard = ReplayGuard(capacity=10, quota=1, clock=lambda: T0)
    check = Verifier(keys={}, clock=lambda: T0, replay_guard=guard, security_tokens=Tokens())

    def temporary(nonce: str) -> Request:
        from authmw.signing import sign_request

        out = sign_request(
            "GET", URL, {"X-Nonce": nonce}, b"", access_key="AKTEMP", secret_key="SKTEMP", security_token="t", at=T0
        )
        split = urlsplit(out.url)
        return Request.build("GET", f"{split.path}?{split.query}", out.headers, b"")

    check.verify(temporary("1"))
    assert guard._held.get("u-caller", 0) == 1
    assert code_of(check, temporary("2")) == "replay_quota_exceeded"  # a fresh temporary key would not help


# -- the guard: quota, capacity, memory ---------------------------------------------------------------------


def test_one_owner_at_its_quota_does_not_refuse_another() -> None:
    guard = ReplayGuard(capacity=10, quota=3, clock=Clock())
    for n in range(3):
        guard.remember(b"flood-%d" % n, T0 + 900, "flooder")
    with pytest.raises(errors.ReplayQuotaExceeded) as raised:
        guard.remember(b"flood-3", T0 + 900, "flooder")
    assert (raised.value.status, raised.value.code) == (429, "replay_quota_exceeded")
    guard.remember(b"other-0", T0 + 900, "someone else")
    assert (guard._held.get("flooder", 0), guard._held.get("someone else", 0), len(guard)) == (3, 1, 4)


def test_the_capacity_is_global_and_refuses_with_503() -> None:
    guard = ReplayGuard(capacity=4, quota=2, clock=Clock())
    for owner in ("a", "b"):
        for n in range(2):
            guard.remember(f"{owner}{n}".encode(), T0 + 900, owner)
    with pytest.raises(errors.ReplayCacheFull) as raised:
        guard.remember(b"c0", T0 + 900, "c")
    assert (raised.value.status, raised.value.code) == (503, "replay_cache_full")


def test_refusals_are_not_recorded_and_a_replay_is_a_replay_first() -> None:
    guard = ReplayGuard(capacity=2, quota=1, clock=Clock())
    guard.remember(b"x", T0 + 900, "a")
    with pytest.raises(errors.ReplayedRequest):
        guard.remember(b"x", T0 + 900, "a")  # also over quota: the replay is what it is
    with pytest.raises(errors.ReplayQuotaExceeded):
        guard.remember(b"y", T0 + 900, "a")
    guard.remember(b"y", T0 + 900, "b")  # y was not kept for a
    assert len(guard) == 2


def test_counts_fall_as_requests_expire() -> None:
    clock = Clock()
    guard = ReplayGuard(capacity=100, quota=2, clock=clock)
    guard.remember(b"a", T0 + 10, "u")
    guard.remember(b"b", T0 + 20, "u")
    with pytest.raises(errors.ReplayQuotaExceeded):
        guard.remember(b"c", T0 + 20, "u")
    clock.now = T0 + 10  # kept through its last second
    with pytest.raises(errors.ReplayedRequest):
        guard.remember(b"a", T0 + 10, "u")
    clock.now = T0 + 10.5
    guard.remember(b"c", T0 + 30, "u")  # a's slot is free again
    assert guard._held.get("u", 0) == 2
    clock.now = T0 + 31
    guard.remember(b"probe", T0 + 60, "v")
    assert (len(guard), guard._held.get("u", 0)) == (1, 0)
    assert "u" not in guard._held  # no counter left behind for an owner that holds nothing


def test_a_shift_moves_what_is_held_to_the_new_window() -> None:
    clock = Clock()
    guard = ReplayGuard(capacity=10, clock=clock)
    guard.remember(b"a", T0 + 301, "u")  # accepted with max_skew 300
    guard.shift(600)  # reloaded with max_skew 900: the same request now expires at T0 + 901
    clock.now = T0 + 800
    with pytest.raises(errors.ReplayedRequest):
        guard.remember(b"a", T0 + 901, "u")


def test_a_long_quiet_spell_is_swept_a_little_at_a_time_but_never_refuses_wrongly() -> None:
    clock = Clock()
    guard = ReplayGuard(capacity=100, quota=10, clock=clock)
    for n in range(10):
        guard.remember(b"v-%d" % n, T0 + n, "v")  # the earliest seconds
        guard.remember(b"u-%d" % n, T0 + 100 + n, "u")  # u at its quota, expiring later
    clock.now = T0 + 1000  # everything has expired
    guard.remember(b"w-0", T0 + 1900, "w")
    assert len(guard) == 17  # this call swept only the 4 earliest seconds (its budget): v's
    assert guard._held.get("u", 0) == 10
    guard.remember(b"u-new", T0 + 1900, "u")  # u looks over quota: expired entries are swept before refusing
    assert (len(guard), guard._held.get("u", 0), guard._held.get("v", 0)) == (2, 1, 0)


def test_resizing_keeps_what_is_held() -> None:
    guard = ReplayGuard(capacity=10, clock=Clock())
    assert guard.quota == 2  # a quarter of the capacity by default
    guard.remember(b"a", T0 + 900, "u")
    guard.resize(capacity=100, quota=50)
    assert (guard.capacity, guard.quota, len(guard)) == (100, 50, 1)
    with pytest.raises(errors.ReplayedRequest):
        guard.remember(b"a", T0 + 900, "u")


@pytest.mark.parametrize(("capacity", "quota"), [(0, None), (10, 0), (10, 11)])
def test_bad_limits_are_a_configuration_error(capacity: int, quota: int | None) -> None:
    with pytest.raises(errors.ConfigurationError):
        ReplayGuard(capacity=capacity, quota=quota)


def test_threads_racing_with_one_request_let_exactly_one_through() -> None:
    check = Verifier(keys=StaticKeys([AccessKey(AK, SK, "u-1")]), clock=lambda: T0)
    request = signed()
    results: list[str] = []
    start = threading.Barrier(8)

    def attempt() -> None:
        start.wait()
        try:
            check.verify(request)
            results.append("ok")
        except errors.AuthmwError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok"] + ["replayed_request"] * 7
