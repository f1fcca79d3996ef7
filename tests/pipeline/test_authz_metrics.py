"""``authmw authz`` serves ``/metrics`` as the sidecar does: each check counted by outcome and error code, its
decision time observed; the paths Envoy's checks come under never reach it."""

from __future__ import annotations

import os

import httpx

from authmw.envoy import CHECK_PREFIX
from authmw.signing import sign_request
from tests.support.forms import SETTINGS, running
from tests.support.world import World


def _count(text: str, outcome: str, code: str) -> float:
    line = f'authmw_decisions_total{{error_code="{code}",outcome="{outcome}"}} '
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0][len(line) :]) if found else 0.0


def test_authz_counts_its_decisions_in_metrics(world: World) -> None:
    with running("authz", world, SETTINGS) as form:
        key = world.scientist
        path = f"/v1/{world.project}/notebooks"
        allowed = sign_request(
            "GET", form.url + path, {"X-Nonce": os.urandom(8).hex()}, access_key=key.access, secret_key=key.secret
        )
        assert httpx.get(form.url + CHECK_PREFIX + path, headers=allowed.headers).status_code == 200
        assert httpx.get(form.url + CHECK_PREFIX + path).status_code == 401  # no credentials
        text = httpx.get(form.url + "/metrics").text
        unprefixed = httpx.get(form.url + "/ext_authz/metrics")  # a check of the app's /metrics, not ours
    assert _count(text, "allow", "") == 1
    assert _count(text, "deny", "missing_credentials") == 1
    assert "authmw_decision_seconds_count 2.0" in text
    assert "authmw_audit_records_lost" in text
    assert unprefixed.status_code == 403 and "authmw_decisions_total" not in unprefixed.text  # no such route
