"""Errors a newcomer meets in the pipeline (issue 14): each says what happened, with its own code."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from authmw.assembly import session_sealer
from authmw.audit import AUDIT_LOGGER
from authmw.proxy import build_app
from authmw.sessions import new_temporary_key
from authmw.signing import sign_request
from authmw.sts import assume
from tests.support.forms import SETTINGS, Form
from tests.support.servers import serve_asgi
from tests.support.world import Key, World


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(record.getMessage()))


@pytest.fixture
def audit() -> Iterator[Records]:
    handler = Records()
    level = AUDIT_LOGGER.level
    AUDIT_LOGGER.addHandler(handler)
    AUDIT_LOGGER.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        AUDIT_LOGGER.removeHandler(handler)
        AUDIT_LOGGER.setLevel(level)


def closed_port() -> int:
    """A port nothing listens on: bound, then closed (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send(url: str, key: Key, method: str, path: str, body: bytes = b"", token: str | None = None) -> httpx.Response:
    headers = {"X-Nonce": os.urandom(8).hex(), "Content-Type": "application/json"}
    signed = sign_request(method, url + path, headers, body, access_key=key.access, secret_key=key.secret,
                          security_token=token)  # fmt: skip
    return httpx.request(method, signed.url, headers=signed.headers, content=body, timeout=30)


def test_an_upstream_that_is_down_is_a_502_recorded_in_the_audit_and_logged_with_the_request_id(
    world: World, audit: Records, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(replace(SETTINGS, upstream=f"http://127.0.0.1:{closed_port()}"), world.store)
    with serve_asgi(app) as url, caplog.at_level(logging.WARNING, logger="authmw.proxy"):
        answer = send(url, world.scientist, "GET", f"/v1/{world.project}/notebooks")
    assert answer.status_code == 502 and answer.json()["error_code"] == "upstream_unavailable"
    request_id = answer.json()["request_id"]
    (record,) = [r for r in audit.records if r["request_id"] == request_id]
    assert record["outcome"] == "allow"  # the pipeline's decision; the answer was the upstream's failure
    assert (record["status"], record["error_code"]) == (502, "upstream_unavailable")
    lines = [r.getMessage() for r in caplog.records if r.name == "authmw.proxy"]
    assert any("upstream request failed" in line and request_id in line for line in lines), lines


def test_the_audit_record_of_a_forwarded_request_has_the_upstreams_status(
    world: World, audit: Records, form: Form
) -> None:
    if form.name != "proxy":
        pytest.skip("only the proxy forwards")
    answer = send(form.url, world.scientist, "GET", f"/v1/{world.project}/notebooks")
    assert answer.status_code == 200
    request_id = answer.json()["headers"]["x-authmw-request-id"]
    (record,) = [r for r in audit.records if r["request_id"] == request_id]
    assert (record["outcome"], record["status"], record["error_code"]) == ("allow", 200, None)


def test_a_temporary_key_without_its_security_token_is_told_so(world: World, form: Form) -> None:
    """A real temporary key (from the STS rule) sent without its token: before the body (precheck) and after."""
    principal = world.store.principal(world.store.find_user("scientist").id)
    assert principal is not None
    session, token = assume(world.store, session_sealer(world.store), principal)
    temporary = Key(session.access_key, session.secret_key)
    path = f"/v1/{world.project}/notebooks"
    with_token = send(form.url, temporary, "GET", path, token=token)
    assert with_token.status_code == 200, with_token.text
    for method, body in (("GET", b""), ("POST", b'{"name": "nb"}')):  # POST: refused before its body is read
        answer = send(form.url, temporary, method, path, body)
        assert (answer.status_code, answer.json()["error_code"]) == (401, "security_token_required"), method
    unknown = Key(new_temporary_key()[0], "x" * 40)  # the form of a temporary key the store never issued
    assert send(form.url, unknown, "GET", path).json()["error_code"] == "security_token_required"
    permanent = send(form.url, Key("AKNOTINTHESTORE00000", "x" * 40), "GET", path)
    assert permanent.json()["error_code"] == "signature_mismatch"
