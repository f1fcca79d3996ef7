"""The workspace where the ModelArts API really carries it (issue 12, item 2): nested in the body, sent by the real
Huawei Cloud SDK (huaweicloudsdkcore) through the ASGI middleware, the WSGI middleware and the sidecar proxy."""

from __future__ import annotations

import json
from typing import Any

from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization

from tests.support.forms import Form
from tests.support.wire import huawei_call
from tests.support.world import Key, World

TRAINING_JOBS = "/v2/{project_id}/training-jobs"


def sdk_json(body: dict[str, Any]) -> str:
    """The body as a generated ModelArts client serializes its request model (None fields dropped)."""
    return json.dumps(sanitize_for_serialization(body))


def create_job(form: Form, key: Key, world: World, metadata: dict[str, Any], **extra: Any) -> tuple[int, Any]:
    body = sdk_json({"kind": "job", "metadata": {"name": "j1", **metadata}, **extra})
    headers = {"Content-Type": "application/json"}
    return huawei_call(  # type: ignore[no-any-return]
        form.url, method="POST", path=TRAINING_JOBS, ak=key.access, sk=key.secret, project_id=world.project,
        body=body, headers=headers,
    )  # fmt: skip


def test_a_private_workspace_named_in_metadata_is_denied(form: Form, world: World) -> None:
    # The scientist may not enter the PRIVATE workspace; naming it only in metadata.workspace_id used to reach
    # the app in workspace "0", where the backend would create the job in the private one.
    status, body = create_job(form, world.scientist, world, {"workspace_id": world.private_ws})
    assert (status, body["error_code"]) == (403, "workspace_denied")


def test_a_workspace_named_in_metadata_is_the_one_checked(form: Form, world: World) -> None:
    status, body = create_job(form, world.scientist, world, {"workspace_id": world.internal_ws})
    assert status == 200
    assert form.facts(body)["workspace"] == world.internal_ws


def test_nested_and_flat_workspaces_that_differ_conflict(form: Form, world: World) -> None:
    status, body = create_job(
        form, world.scientist, world, {"workspace_id": world.internal_ws}, workspace_id="0"
    )  # fmt: skip
    assert (status, body["error_code"]) == (400, "conflicting_workspace")
    status, body = create_job(form, world.admin, world, {"workspace_id": world.private_ws}, workspace_id="0")
    assert (status, body["error_code"]) == (400, "conflicting_workspace")  # even for one who may enter both
