"""The audit record as one line of JSON (issue 17): ``audit_line`` writes, from memoised pieces, exactly the text
``json.dumps`` of ``audit_record`` gave, whatever changes between two records, however odd the values."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from authmw import audit
from authmw.audit import audit_line, audit_record, rfc3339
from authmw.errors import AuthmwError, Forbidden, MissingCredentials, UpstreamUnavailable
from authmw.models import AuthContext, AuthMethod, AuthType, Credential, Principal, Project, Session, Workspace
from authmw.policy import PolicySet
from authmw.policy.engine import Decision
from authmw.routes import Route

PATH = "/v1/p1/notebooks"
ALICE = Principal("u-alice", "alice", "d-main", "default", frozenset({"ml"}), PolicySet())
KEY = Credential(AuthMethod.AKSK, "SDK-HMAC-SHA256", "AKALICE", "u-alice", 1_700_000_000)
SESSION = Session("ASTEMP", "secret", 1, 2, "u-alice", "alice", "d-main", "default", "ag-1", "agent", "d-op", "op")
TEMPORARY = Credential(AuthMethod.TEMPORARY, "SDK-HMAC-SHA256", "ASTEMP", "u-alice", 1, session=SESSION)
ALLOWED = AuthContext(
    request_id="00589cad21451ffc3d93cf0b",
    client="203.0.113.9",
    route=Route("GET", "/v1/{project_id}/notebooks", "modelarts:notebook:list"),
    action="modelarts:notebook:list",
    resource=None,
    principal=ALICE,
    credential=KEY,
    workspace=Workspace("0", "default", None, AuthType.PUBLIC),
    project=Project("p1", "cn-north-4", "d-main", "cn-north-4"),
    decision=Decision(True, True, "readers", 0, "allowed by policy 'readers' statement 0"),
)
ODD = 'a"b\\c\x00\x1f\x7f\u2028é中文\U0001f600\ud800'  # quotes, backslash, controls, unicode, a lone surrogate

#: One context per value a record's shared part is made of: each differs from ALLOWED in that value only.
VARIANTS: dict[str, AuthContext] = {
    "allowed": ALLOWED,
    "route": replace(ALLOWED, route=Route("GET", "/v1/{project_id}/jobs", "modelarts:notebook:list")),
    "no route": replace(ALLOWED, route=None),
    "action": replace(ALLOWED, action="modelarts:notebook:get"),
    "resource": replace(ALLOWED, resource="obs:*:*:bucket:b1"),
    "user id": replace(ALLOWED, principal=replace(ALICE, user_id="u-other")),
    "user name": replace(ALLOWED, principal=replace(ALICE, user_name="alicia")),
    "domain": replace(ALLOWED, principal=replace(ALICE, domain_name="other")),
    "no principal": replace(ALLOWED, principal=None, credential=None, decision=None),
    "access key": replace(ALLOWED, credential=replace(KEY, access_key="AKOTHER")),
    "token": replace(ALLOWED, credential=replace(KEY, method=AuthMethod.TOKEN, scheme="token")),
    "temporary": replace(ALLOWED, credential=TEMPORARY),
    "agency": replace(ALLOWED, credential=replace(TEMPORARY, session=replace(SESSION, agency_name="other"))),
    "agency domain": replace(
        ALLOWED, credential=replace(TEMPORARY, session=replace(SESSION, agency_domain_name="other"))
    ),
    "session caller": replace(ALLOWED, credential=replace(TEMPORARY, session=replace(SESSION, user_name="bob"))),
    "project": replace(ALLOWED, project=Project("p2", "cn-north-4", "d-main", "cn-north-4")),
    "no project": replace(ALLOWED, project=None),
    "workspace": replace(ALLOWED, workspace=Workspace("w2", "w2", "d-main", AuthType.PRIVATE)),
    "policy": replace(ALLOWED, decision=Decision(True, True, "writers", 0, "allowed by policy 'writers' statement 0")),
    "statement": replace(
        ALLOWED, decision=Decision(True, True, "readers", 1, "allowed by policy 'readers' statement 0")
    ),
    "reason": replace(ALLOWED, decision=Decision(True, True, "readers", 0, "another reason")),
    "no decision": replace(ALLOWED, decision=None),
    "dry-run refusal": replace(ALLOWED, error=Forbidden("denied by policy 'deny-all'")),
    "request id": replace(ALLOWED, request_id="ffffffffffffffffffffffff"),
    "client": replace(ALLOWED, client="2001:db8::1"),
    "no client": replace(ALLOWED, client=None),
    "odd user": replace(ALLOWED, principal=replace(ALICE, user_name=ODD, domain_name=ODD)),
    "odd everything": replace(
        ALLOWED,
        request_id=ODD,
        client=ODD,
        action=ODD,
        resource=ODD,
        route=Route("GET", ODD),
        workspace=Workspace(ODD, ODD, None, AuthType.PUBLIC),
        decision=Decision(True, True, ODD, 0, ODD),
    ),
}
#: The request's own facts a record is written with: (error, method, path, status, failure).
CALLS: list[tuple[AuthmwError | None, str, str, int | None, AuthmwError | None]] = [
    (None, "GET", PATH, None, None),
    (None, "GET", PATH, 200, None),
    (None, "GET", PATH, 404, None),
    (None, "POST", PATH + "?x=1", 201, None),
    (None, "GET", PATH, None, UpstreamUnavailable("connect refused")),
    (Forbidden("denied by policy 'x' statement 0"), "GET", PATH, None, None),
    (Forbidden("another detail"), "GET", PATH, None, None),
    (MissingCredentials(), "DELETE", PATH, None, None),
    (None, ODD, ODD, None, None),
    (Forbidden(ODD), "GET", '/a"b\\c\n', None, None),
]


def old_line(context: AuthContext, call: tuple[Any, ...], at: float) -> str:
    """The line as authmw wrote it before: json.dumps of the record dict."""
    error, method, path, status, failure = call
    record = audit_record(context, error, method, path, status=status, failure=failure, clock=lambda: at)
    return json.dumps(record, separators=(",", ":"))


def new_line(context: AuthContext, call: tuple[Any, ...], at: float) -> str:
    error, method, path, status, failure = call
    return audit_line(context, error, method, path, status=status, failure=failure, clock=lambda: at)


def test_every_line_is_the_old_record_text() -> None:
    """Every context and call, twice in a shuffled order: the memoised pieces are found (second time) and never
    mixed up (each variant differs from another in one value only, so a piece keyed without it is caught)."""
    pairs = [(name, call) for name in VARIANTS for call in CALLS] * 2
    random.Random(17).shuffle(pairs)
    for i, (name, call) in enumerate(pairs):
        at = 1_796_673_083.123456 + i * 0.37
        line = new_line(VARIANTS[name], call, at)
        assert line == old_line(VARIANTS[name], call, at), name


def test_odd_values_are_escaped_as_json_dumps_does() -> None:
    line = new_line(VARIANTS["odd everything"], (Forbidden(ODD), ODD, ODD, None, None), 0.0)
    assert line.isascii() and "\n" not in line  # one line, whatever the values
    record = json.loads(line)
    expected = audit_record(VARIANTS["odd everything"], Forbidden(ODD), ODD, ODD, clock=lambda: 0.0)
    assert record == expected
    assert record["user_name"] == "alice" and record["path"] == ODD and record["client"] == ODD
    odd_user = json.loads(new_line(VARIANTS["odd user"], CALLS[0], 0.0))
    assert (odd_user["user_name"], odd_user["delegation"]) == (ODD, [f"{ODD}/{ODD}"])


@pytest.mark.parametrize(
    "seconds",
    [0.0, 1.5, 0.0000005, 0.0000015, 0.9999994, 0.9999995, 0.9999996, 59.9999999, 1_796_673_083.123456,
     1_796_673_083.9999996, 4_102_444_799.999999, 1_000_000_000.0000005],
)  # fmt: skip
def test_the_time_is_written_as_rfc3339_writes_it(seconds: float) -> None:
    assert audit._stamp(audit._micros(seconds)) == rfc3339(seconds)


def test_the_time_agrees_with_rfc3339_for_any_float() -> None:
    draw = random.Random(3339)
    for _ in range(20_000):
        seconds = draw.uniform(0, 4_102_444_800)
        if draw.random() < 0.3:  # near the edges of a second and of half a microsecond
            seconds = math.floor(seconds) + draw.choice([0.9999995, 0.0000005, 0.9999999, 0.000001])
        assert audit._stamp(audit._micros(seconds)) == rfc3339(seconds), seconds


def test_without_a_clock_the_time_is_now() -> None:
    before = datetime.now(UTC)
    written = json.loads(audit_line(ALLOWED, None, "GET", PATH))["time"]
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", written)
    moment = datetime.fromisoformat(written)
    assert before - timedelta(microseconds=1) <= moment <= after


def test_the_memos_stay_bounded() -> None:
    for i in range(audit._TAILS.capacity + 100):
        context = replace(ALLOWED, principal=replace(ALICE, user_name=f"user{i}"))
        assert new_line(context, CALLS[0], 1.0) == old_line(context, CALLS[0], 1.0)
        assert new_line(context, (Forbidden(f"detail {i}"), "GET", PATH, None, None), 1.0) == old_line(
            context, (Forbidden(f"detail {i}"), "GET", PATH, None, None), 1.0
        )
    assert len(audit._TAILS) <= audit._TAILS.capacity and len(audit._HEADS) <= audit._HEADS.capacity


def test_a_sink_receives_every_line_instead_of_the_logger(caplog: pytest.LogCaptureFixture) -> None:
    lines: list[str] = []
    previous = audit.send_to(lines.append)
    try:
        with caplog.at_level("INFO", logger="authmw.audit"):
            audit.log_decision(ALLOWED, None, "GET", PATH, status=200)
            audit.log_event("login_failed", replace(ALLOWED, principal=None), MissingCredentials(), "POST", "/v3")
        assert not [r for r in caplog.records if r.name == "authmw.audit"]
    finally:
        audit.send_to(previous)
    assert [json.loads(line)["event"] for line in lines] == ["request", "login_failed"]
    assert json.loads(lines[0])["status"] == 200
    with caplog.at_level("INFO", logger="authmw.audit"):
        audit.log_decision(ALLOWED, None, "GET", PATH)
    (record,) = [r for r in caplog.records if r.name == "authmw.audit"]
    assert json.loads(record.getMessage())["request_id"] == ALLOWED.request_id
