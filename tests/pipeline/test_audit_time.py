"""Every audit record carries the time it was written, RFC 3339 in UTC with microseconds, in every form of
authmw (middleware and proxy decisions, and the IAM endpoints' events)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from authmw.audit import AUDIT_LOGGER, rfc3339
from authmw.signing import sign_request
from tests.support.forms import Form
from tests.support.world import Key, World

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(record.getMessage()))

    def when(self, count: int) -> list[dict[str, Any]]:
        """The records once there are ``count`` (a server thread may write one just after answering)."""
        deadline = time.monotonic() + 10
        while len(self.records) < count:
            assert time.monotonic() < deadline, f"{len(self.records)} of {count} audit records"
            time.sleep(0.01)
        return self.records


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


def signed_get(url: str, key: Key, path: str) -> httpx.Response:
    signed = sign_request("GET", url + path, {"X-Nonce": os.urandom(8).hex()}, b"", access_key=key.access,
                          secret_key=key.secret)  # fmt: skip
    return httpx.get(signed.url, headers=signed.headers, timeout=30)


def assert_recent_utc(text: str) -> None:
    assert RFC3339_UTC.fullmatch(text), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(seconds=30)


def test_rfc3339_is_utc_with_microseconds() -> None:
    assert rfc3339(1_796_673_083.123456) == "2026-12-07T19:51:23.123456Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"


def test_every_request_record_has_the_time(form: Form, world: World, audit: Records) -> None:
    path = f"/v1/{world.project}/notebooks"
    allowed, denied = signed_get(form.url, world.scientist, path), signed_get(form.url, world.outsider, path)
    assert (allowed.status_code, denied.status_code) == (200, 403)
    records = audit.when(2)
    assert {r["outcome"] for r in records} == {"allow", "deny"}
    for record in records:
        assert_recent_utc(record["time"])


def test_the_iam_endpoints_records_have_the_time(form: Form, audit: Records) -> None:
    if form.name != "proxy":
        pytest.skip("the IAM endpoints are served by the proxy here")
    body = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "nobody", "password": "not the password", "domain": {"name": "default"}}}}}}  # fmt: skip
    answer = httpx.post(form.url + "/v3/auth/tokens", json=body, timeout=30)
    assert answer.status_code == 401
    (record,) = audit.when(1)
    assert record["event"] == "login_failed"
    assert_recent_utc(record["time"])
