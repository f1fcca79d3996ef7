"""The issue's attack over real HTTP: a caller asks the security-token endpoint (``methods: ["token"]``, which
needs no permission) for temporary credentials narrowed by a session policy full of wildcards.

Before, ``StringLike`` with 1,000 ``*`` or an Action with 100 ``*`` were accepted, and the first request signed
with those credentials backtracked for minutes on the proxy's event loop. Now they are refused (400
``invalid_session_policy``), and the worst session policy the validator admits decides at once while the
proxy keeps answering its health check.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.agencies import NOTEBOOKS, PASSWORD, call, login, request_credentials
from tests.support.forms import Form, running
from tests.support.world import World

USER = "wildcard-tester"


@pytest.fixture(scope="module")
def proxy(world: World) -> Iterator[Form]:
    world.store.create_user(USER, password=PASSWORD)
    world.store.add_user_to_group("developers", USER)
    with running("proxy", world) as form:
        yield form


def _ask(proxy: Form, world: World, policy: dict[str, Any]) -> httpx.Response:
    token = login(proxy, USER, "default", world.project)
    return request_credentials(proxy, token, {"methods": ["token"], "policy": policy})


@pytest.mark.parametrize(
    "statement",
    [
        {
            "Effect": "Allow",
            "Action": ["modelarts:notebook:*"],
            "Condition": {"StringLike": {"g:UserName": ["*" * 1000]}},
        },
        {"Effect": "Allow", "Action": ["modelarts:notebook:" + "*" * 100 + "x"]},
        {"Effect": "Allow", "Action": ["modelarts:notebook:*"], "Resource": ["modelarts:*:*:notebook:" + "a*" * 20]},
    ],
    ids=["string-like-1000-stars", "action-100-stars", "resource-20-stars"],
)
def test_a_session_policy_with_too_many_wildcards_is_refused(
    proxy: Form, world: World, statement: dict[str, Any]
) -> None:
    answer = _ask(proxy, world, {"Version": "1.1", "Statement": [statement]})
    assert (answer.status_code, answer.json()["error_code"]) == (400, "invalid_session_policy")


def test_the_worst_admitted_session_policy_decides_at_once(proxy: Form, world: World) -> None:
    worst = "a*" * 9 + "b"  # every '*' but never a match for a name of 'a's: the old regex's worst case
    policy = {
        "Version": "1.1",
        "Statement": [
            {"Effect": "Allow", "Action": ["modelarts:notebook:*"]},
            {"Effect": "Deny", "Action": ["modelarts:*:*"], "Condition": {"StringLike": {"g:UserName": [worst]}}},
            {"Effect": "Deny", "Action": ["modelarts:notebook:" + "a*" * 4 + "z"]},
        ],
    }
    answer = _ask(proxy, world, policy)
    assert answer.status_code == 201, answer.text
    started = time.monotonic()
    status, body = call(proxy, answer.json()["credential"], NOTEBOOKS, world.project)
    assert status == 200, body
    assert time.monotonic() - started < 5  # a few ms: the bound only keeps a loaded CI from flaking
    assert httpx.get(proxy.url + "/healthz", timeout=5).status_code == 200
