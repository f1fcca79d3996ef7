"""Every call of the official ModelArts SDK, signed by the SDK itself, through ``authmw proxy`` (issue 15 item 1).

The calls are enumerated as scripts/gen_modelarts_routes.py enumerates them (one home for that), each request
model built with dummy ids in its path and an empty body model, and sent by a ``ModelArtsClient`` whose
endpoint is the proxy, with the SDK's AK/SK signing (``BasicCredentials``). The upstream echoes 200 to
everything; the SDK may fail to read that answer, so what counts is authmw's decision, read from the proxy's
audit log. A ``ModelArts FullAccess`` user must not be refused; a ``ModelArts CommonOperations`` user may read
everything (GETs, and the POST searches and tag queries whose action reads) and may not create, update or
delete a dedicated resource pool.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkmodelarts import v1

from tests.support.proxy import proxy_process
from tests.support.world import Key, World, build_world

pytestmark = pytest.mark.live

GENERATOR = Path(__file__).resolve().parents[2] / "scripts" / "gen_modelarts_routes.py"
MINIMUM = 0.95
_PARAM = re.compile(r"\{([^}]+)\}")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_modelarts_routes", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


GEN = load_generator()
ROWS, ROUTED = GEN.build()  # the table's rows, and the row that routes each call
CALLS = [call for call, _row in ROUTED.values()]


def request_for(call: Any, world: World) -> Any:
    """The call's request model: a dummy id in each path parameter, an empty model (``{}``) as the body."""
    request = call.request_type()
    names = set(_PARAM.findall(call.template)) - {"project_id"}
    for attribute, key in call.request_type.attribute_map.items():
        if key in names:
            setattr(request, attribute, world.internal_ws if key == "workspace_id" else f"dummy-{key}")
    body = call.request_type.openapi_types.get("body")
    if body is not None:
        model = getattr(v1, body, None)
        if model is not None and hasattr(model, "openapi_types"):
            request.body = model()
        elif body.startswith("list["):
            request.body = []
    return request


def path_of(call: Any, world: World) -> str:
    def fill(found: re.Match[str]) -> str:
        name = found.group(1)
        return {"project_id": world.project, "workspace_id": world.internal_ws}.get(name, f"dummy-{name}")

    return _PARAM.sub(fill, call.template)


def client_for(url: str, key: Key, project: str) -> Any:
    config = HttpConfig.get_default_config()
    config.timeout = (5, 20)
    credentials = BasicCredentials(key.access, key.secret, project)
    return v1.ModelArtsClient.new_builder().with_credentials(credentials).with_http_config(config).with_endpoints(
        [url]
    ).build()  # fmt: skip


def send_all(url: str, key: Key, world: World, calls: list[Any]) -> dict[str, int | None]:
    """Send each call (8 at a time); the HTTP status the SDK saw, or None when it could not read the answer."""
    clients = [client_for(url, key, world.project) for _ in range(8)]

    def send(index: int) -> tuple[str, int | None]:
        call = calls[index]
        try:
            getattr(clients[index % 8], call.name)(request_for(call, world))
        except ClientRequestException as exc:
            return call.name, exc.status_code
        except Exception:  # the SDK failed reading the echo's answer: authmw's audit log says the rest
            return call.name, None
        return call.name, 200

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(send, range(len(calls))))


def audit_records(audit: Path) -> list[dict[str, Any]]:
    """The complete lines of the audit log (one being written is not read half-way)."""
    text = audit.read_text() if audit.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def audit_of_batch(audit: Path, before: int, expected: int) -> dict[tuple[str, str], dict[str, Any]]:
    """The records written after the first ``before`` ones, by (method, path), once ``expected`` are there.
    (A request no route matches is refused before authentication: its record names no user.)"""
    deadline = time.monotonic() + 20
    while len(records := audit_records(audit)[before:]) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return {(r["method"], r["path"]): r for r in records}


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, str, Path]]:
    directory = tmp_path_factory.mktemp("masdk")
    world = build_world(directory)
    # The workspace API goes upstream too: served, its delete_workspace would delete the workspace the other
    # calls name (what is measured here is each call's decision; tests/pipeline/test_workspace_api.py serves it).
    # The store's 50 ms read deadline has room: not this test's subject (a loaded machine's read missed it: 503).
    config = "unmatched: deny\nserve_workspaces: false\nstore_timeout: 2000\n"
    with proxy_process(world, directory, config) as (_process, url, audit):
        yield world, url, audit
    world.store.close()


def test_every_sdk_call_is_allowed_for_fullaccess(proxied: tuple[World, str, Path]) -> None:
    world, url, audit = proxied
    before = len(audit_records(audit))
    statuses = send_all(url, world.admin, world, CALLS)
    records = audit_of_batch(audit, before, len(CALLS))
    groups: dict[str, list[bool]] = {}
    refused = []
    for call in CALLS:
        record = records.get((call.method, path_of(call, world)))
        assert record is not None, f"{call.name}: no audit record for {call.method} {path_of(call, world)}"
        allowed = record["outcome"] == "allow"
        if not allowed:
            refused.append(f"{call.name} {call.method} {call.template}: {record['status']} {record['error_code']}")
        else:
            assert statuses[call.name] in {200, None}, call.name  # the echo's 200, read or not by the SDK
            assert record["action"] == ROUTED[call.name][1].action, call.name  # and by the call's own route
        groups.setdefault(GEN.group_of(call), []).append(allowed)
    lines = [f"{group:14} {sum(ok)}/{len(ok)}" for group, ok in sorted(groups.items())]
    total = sum(sum(ok) for ok in groups.values()) / len(CALLS)
    print(f"\nModelArts SDK coverage (FullAccess, through the proxy): {total:.1%} of {len(CALLS)} calls")
    print("\n".join(lines))
    assert len(CALLS) > 250
    assert total >= MINIMUM, refused
    for group in GEN.TARGET_GROUPS:
        assert all(groups[group]), (group, refused)
    assert not refused  # every call the table maps is allowed; none is left unmapped


def is_read(call: Any) -> bool:
    """A read-only call: a GET, or an action that reads (``get...``/``list...``, as POST searches and tag
    queries are)."""
    verb = ROUTED[call.name][1].action.split(":")[2]
    return call.method == "GET" or verb.startswith(("get", "list"))


# ModelArts CommonOperations, as Huawei defines it: every ModelArts operation but creating, updating and deleting
# dedicated resource pools (the three actions its Deny statement names).
POOL_MANAGEMENT = {"modelarts:pool:create", "modelarts:pool:update", "modelarts:pool:delete"}


def test_commonoperations_reads_everything_and_cannot_manage_pools(proxied: tuple[World, str, Path]) -> None:
    world, url, audit = proxied
    reads = [call for call in CALLS if is_read(call)]
    pools = [call for call in CALLS if ROUTED[call.name][1].action in POOL_MANAGEMENT]
    before = len(audit_records(audit))
    statuses = send_all(url, world.scientist, world, [*reads, *pools])
    records = audit_of_batch(audit, before, len(reads) + len(pools))

    def record(call: Any) -> dict[str, Any]:
        return records[(call.method, path_of(call, world))]

    refused = [f"{call.name}: {record(call)['error_code']}" for call in reads if record(call)["outcome"] != "allow"]
    assert len(reads) > 140 and any(call.method == "POST" for call in reads) and not refused
    assert {ROUTED[call.name][1].action for call in reads}.isdisjoint(POOL_MANAGEMENT)
    assert len(pools) >= 10 and "create_pool" in {call.name for call in pools}
    for call in pools:
        found = record(call)
        assert (found["status"], found["error_code"]) == (403, "action_denied"), call.name
        assert found["action"] == ROUTED[call.name][1].action
    assert statuses["create_pool"] == 403  # and the SDK raised it as a ClientRequestException


def test_the_packaged_table_is_what_the_sdk_and_the_documentation_give() -> None:
    assert GEN.main(["--check"]) == 0  # else: rerun scripts/gen_modelarts_routes.py


def test_sub_resources_take_their_parents_resource_type() -> None:
    """A derived row's action names the resource type of its path's top collection (a training job's tasks,
    logs and metrics are ``trainJob``'s; a service's deployments ``service``'s), tag operations excepted."""
    derived = [(call, row) for call, row in ROUTED.values() if row.inferred]
    nested = [(call, row) for call, row in derived if len(GEN._segments(call.template)) > 2]
    assert len(nested) > 100
    for call, row in derived:
        kind = row.action.split(":")[1]
        assert kind in {GEN.family_type(call.template), "tag"}, (call.name, call.template, row.action)
