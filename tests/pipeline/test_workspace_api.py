"""The ModelArts workspace API answered from the store (issue 15 item 2), driven by ``huaweicloudsdkmodelarts``.

The SDK signs with AK/SK (or sends an IAM token from the proxy's token endpoint) and talks to a real
``authmw proxy`` process (and to the ASGI middleware wrapping
:class:`~authmw.workspace_api.WorkspaceService`); a second proxy process on the same store, with
``serve_workspaces: false``, shows both that the option sends the API upstream and that a workspace created
through the API is enforced by every running process within a second.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkmodelarts import v1

from authmw import open_guard
from authmw.asgi import AuthMiddleware
from authmw.client import HttpxAuth
from authmw.models import Request
from authmw.signing import sign_request
from authmw.workspace_api import WorkspaceService
from tests.support.huawei import token_credentials
from tests.support.proxy import proxy_process
from tests.support.servers import serve_asgi
from tests.support.world import Key, World, build_world, echo_asgi

WORKSPACE_ID = re.compile(r"[0-9a-f]{32}")
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("wsapi"))
    for user in ("admin", "scientist", "outsider"):  # before any login: a password change revokes older tokens
        built.store.update_user(user, password=PASSWORD)
    yield built
    built.store.close()


@pytest.fixture(scope="module")
def proxies(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(serving proxy, proxy with ``serve_workspaces: false``), both processes on the world's store."""
    serving, passing = tmp_path_factory.mktemp("serving"), tmp_path_factory.mktemp("passing")
    with (
        proxy_process(world, serving, "unmatched: deny\nreplay_protection: false\n") as (_a, url, _audit_a),
        proxy_process(world, passing, "unmatched: deny\nreplay_protection: false\nserve_workspaces: false\n") as (
            _b,
            other,
            _audit_b,
        ),
    ):
        yield url, other


def client(url: str, key: Key | None, project: str, *, token: str | None = None) -> Any:
    """The SDK signing with ``key``'s AK/SK, or sending the IAM ``token``."""
    config = HttpConfig.get_default_config()
    config.timeout = (5, 20)
    if token is not None:
        credentials = token_credentials(BasicCredentials, token, project)
    else:
        assert key is not None
        credentials = BasicCredentials(key.access, key.secret, project)
    return v1.ModelArtsClient.new_builder().with_credentials(credentials).with_http_config(config).with_endpoints(
        [url]
    ).build()  # fmt: skip


def refused(call: Any, request: Any) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as caught:
        call(request)
    return caught.value


def create(name: str, auth_type: str = "PUBLIC", **fields: Any) -> Any:
    return v1.CreateWorkspaceRequest(v1.CreateWorkspaceReq(name=name, auth_type=auth_type, **fields))


def signed(world: World, key: Key, method: str, url: str, body: bytes = b"", **headers: str) -> httpx.Response:
    return httpx.request(method, url, content=body, headers=headers, auth=HttpxAuth(key.access, key.secret))


def test_fullaccess_creates_lists_shows_updates_and_deletes(world: World, proxies: tuple[str, str]) -> None:
    sdk = client(proxies[0], world.admin, world.project)
    grants = [v1.CreateWorkspaceReqGrants(user_name="scientist")]
    made = sdk.create_workspace(create("api-made", "INTERNAL", grants=grants))
    assert WORKSPACE_ID.fullmatch(made.id) and made.name == "api-made" and made.owner == "admin"
    assert (made.auth_type, made.status, made.enterprise_project_id) == ("INTERNAL", "NORMAL", "0")
    assert [g.user_name for g in made.grants] == ["scientist"] and made.grants[0].user_id
    assert abs(made.create_time / 1000 - time.time()) < 60
    # The CLI's view of the store is the API's.
    assert world.store.show_workspace("api-made").grants == ("user:scientist",)

    listed = sdk.list_workspace(v1.ListWorkspaceRequest(sort_by="name", order="asc"))
    names = [w.name for w in listed.workspaces]
    assert names == sorted(names) and {"default", "api-made", "team-space", "admin-only"} <= set(names)
    assert listed.total_count == listed.count == len(names) and "elsewhere" not in names  # another domain's
    assert [w.name for w in sdk.list_workspace(v1.ListWorkspaceRequest(name="api-")).workspaces] == ["api-made"]
    page = sdk.list_workspace(v1.ListWorkspaceRequest(offset=1, limit=2, order="asc"))
    assert page.count == 2 and page.total_count == listed.total_count and page.workspaces[0].name == names[1]

    shown = sdk.show_workspace(v1.ShowWorkspaceRequest(made.id))
    assert (shown.id, shown.name, [g.user_name for g in shown.grants]) == (made.id, "api-made", ["scientist"])

    change = v1.UpdateWorkspaceReq(name="api-renamed", auth_type="PRIVATE", grants=[])
    assert sdk.update_workspace(v1.UpdateWorkspaceRequest(made.id, change)).workspace_id == made.id
    shown = sdk.show_workspace(v1.ShowWorkspaceRequest(made.id))
    assert (shown.name, shown.auth_type, shown.grants) == ("api-renamed", "PRIVATE", [])

    assert sdk.delete_workspace(v1.DeleteWorkspaceRequest(made.id)).workspace_id == made.id
    gone = refused(sdk.show_workspace, v1.ShowWorkspaceRequest(made.id))
    assert (gone.status_code, gone.error_code) == (403, "workspace_not_found")


def test_refused_by_policy_and_by_workspace(world: World, proxies: tuple[str, str]) -> None:
    outsider = client(proxies[0], world.outsider, world.project)  # no policy at all
    for call, request in (
        (outsider.create_workspace, create("never-made")),
        (outsider.list_workspace, v1.ListWorkspaceRequest()),
        (outsider.update_workspace, v1.UpdateWorkspaceRequest("0", v1.UpdateWorkspaceReq(auth_type="PRIVATE"))),
    ):
        error = refused(call, request)
        assert (error.status_code, error.error_code) == (403, "action_denied")
    scientist = client(proxies[0], world.scientist, world.project)
    # May act in ModelArts, but not enter the owner's PRIVATE workspace: not even to read or delete it.
    for call, request in (
        (scientist.show_workspace, v1.ShowWorkspaceRequest(world.private_ws)),
        (scientist.delete_workspace, v1.DeleteWorkspaceRequest(world.private_ws)),
    ):
        error = refused(call, request)
        assert (error.status_code, error.error_code) == (403, "workspace_denied")
    stranger = client(proxies[0], world.stranger, world.other_project)  # another domain's workspace: as unknown
    error = refused(stranger.show_workspace, v1.ShowWorkspaceRequest(world.internal_ws))
    assert (error.status_code, error.error_code) == (403, "workspace_not_found")
    assert "never-made" not in [w.name for w in world.store.list_workspaces()]
    visible = scientist.list_workspace(v1.ListWorkspaceRequest(filter_accessible=True)).workspaces
    assert "admin-only" not in [w.name for w in visible] and "team-space" in [w.name for w in visible]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (create("x"), "ModelArts.4001"),  # too short: the store's rule, as the CLI's
        (create("default"), "ModelArts.4001"),
        (create("team-space"), "ModelArts.4001"),  # taken
        (create("api-bad", "EVERYONE"), "ModelArts.4001"),
        (create("api-bad", grants=[v1.CreateWorkspaceReqGrants(user_name="scientist")]), "ModelArts.4001"),
        (create("api-bad", "INTERNAL", grants=[v1.CreateWorkspaceReqGrants(user_name="nobody")]), "ModelArts.4000"),
        (create("api-bad", "INTERNAL", grants=[v1.CreateWorkspaceReqGrants(user_id="f" * 32)]), "ModelArts.4000"),
        (create("api-bad", "INTERNAL", grants=[v1.CreateWorkspaceReqGrants()]), "ModelArts.4000"),
        (
            create(
                "api-bad", "INTERNAL", grants=[v1.CreateWorkspaceReqGrants(user_name="scientist", user_type="AGENCY")]
            ),
            "ModelArts.4000",
        ),
        (create("api-bad", description="kept nowhere"), "ModelArts.4000"),
        (create("api-bad", enterprise_project_id="b0091-887f"), "ModelArts.4000"),
        (v1.CreateWorkspaceRequest(v1.CreateWorkspaceReq()), "ModelArts.4000"),
        (v1.ListWorkspaceRequest(limit=0), "ModelArts.4000"),
        (v1.ListWorkspaceRequest(sort_by="owner"), "ModelArts.4000"),
        (v1.UpdateWorkspaceRequest("0", v1.UpdateWorkspaceReq(auth_type="PRIVATE")), "ModelArts.4001"),
        (v1.DeleteWorkspaceRequest("0"), "ModelArts.4001"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_malformed_or_refused_by_the_rules(world: World, proxies: tuple[str, str], request_: Any, code: str) -> None:
    sdk = client(proxies[0], world.admin, world.project)
    call = {
        v1.CreateWorkspaceRequest: sdk.create_workspace,
        v1.ListWorkspaceRequest: sdk.list_workspace,
        v1.UpdateWorkspaceRequest: sdk.update_workspace,
        v1.DeleteWorkspaceRequest: sdk.delete_workspace,
    }[type(request_)]
    error = refused(call, request_)
    assert (error.status_code, error.error_code) == (400, code), error.error_msg
    assert "api-bad" not in [w.name for w in world.store.list_workspaces()]


def test_malformed_bodies_and_unknown_ids(world: World, proxies: tuple[str, str]) -> None:
    base = f"{proxies[0]}/v1/{world.project}/workspaces"
    for body in (b"[1]", b'{"name": 5}', b'{"name": "api-bad", "grants": {}}'):
        answer = signed(world, world.admin, "POST", base, body, **{"content-type": "application/json"})
        assert (answer.status_code, answer.json().get("error_code")) == (400, "ModelArts.4000"), answer.text
    answer = signed(world, world.admin, "POST", base, b"{", **{"content-type": "application/json"})
    assert answer.status_code == 400  # the guard reads the body first: malformed_body
    # A well-formed id of no workspace is refused as another domain's would be (nothing tells them apart).
    answer = signed(world, world.admin, "GET", f"{base}/{uuid.uuid4().hex}")
    assert (answer.status_code, answer.json()["error_code"]) == (403, "workspace_not_found")


def test_a_workspace_deleted_after_the_check_is_not_found(world: World) -> None:
    """The guard admitted a request on a workspace that is gone by the time it is answered: 404."""
    store, guard = world.store, open_guard(world.store, replay_protection=False)
    doomed = store.create_workspace("api-doomed", owner="admin")
    path = f"/v1/{world.project}/workspaces/{doomed.id}"
    signed_request = sign_request(
        "DELETE", "http://authmw.test" + path, access_key=world.admin.access, secret_key=world.admin.secret
    )
    context = guard.check(Request.build("DELETE", path, signed_request.headers, b""))
    store.delete_workspace(doomed.id)
    status, body = WorkspaceService(store).answer(context, path, "", b"")
    assert (status, body["error_code"]) == (404, "ModelArts.4040")


def test_created_through_the_api_is_enforced_by_every_process_at_once(world: World, proxies: tuple[str, str]) -> None:
    serving, other = proxies
    sdk = client(serving, world.admin, world.project)
    grants = [v1.CreateWorkspaceReqGrants(user_name="scientist")]
    made = sdk.create_workspace(create("api-live", "INTERNAL", grants=grants))
    notebooks = f"/v1/{world.project}/notebooks"

    def placed(url: str, key: Key) -> httpx.Response:
        return signed(world, key, "GET", url + notebooks, **{"x-workspace-id": made.id})

    for url in (serving, other):  # both processes know it within a second of the answer
        deadline = time.monotonic() + 1.0
        while (answer := placed(url, world.scientist)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer.status_code == 200, answer.text
        assert answer.json()["headers"]["x-authmw-workspace-id"] == made.id
        assert placed(url, world.outsider).status_code == 403  # not granted, and no policy
    sdk.update_workspace(v1.UpdateWorkspaceRequest(made.id, v1.UpdateWorkspaceReq(grants=[])))
    sdk.delete_workspace(v1.DeleteWorkspaceRequest(made.id))
    deadline = time.monotonic() + 1.0
    while (answer := placed(other, world.scientist)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (answer.status_code, answer.json()["error_code"]) == (403, "workspace_not_found")


def test_the_option_off_sends_the_api_upstream(world: World, proxies: tuple[str, str]) -> None:
    base = f"{proxies[1]}/v1/{world.project}/workspaces"
    body = b'{"name": "api-upstream"}'
    answer = signed(world, world.admin, "POST", base, body, **{"content-type": "application/json"})
    assert answer.status_code == 200 and answer.json()["path"] == f"/v1/{world.project}/workspaces"  # the echo
    assert answer.json()["headers"]["x-authmw-action"] == "modelarts:workspace:create"  # authorized all the same
    assert "api-upstream" not in [w.name for w in world.store.list_workspaces()]
    error = signed(world, world.outsider, "POST", base, body, **{"content-type": "application/json"})
    assert error.status_code == 403


def test_the_asgi_middleware_serves_it_too(world: World) -> None:
    guard = open_guard(world.store, replay_protection=False)
    with serve_asgi(AuthMiddleware(WorkspaceService(world.store, echo_asgi), guard=guard)) as url:
        sdk = client(url, world.admin, world.project)
        made = sdk.create_workspace(create("api-asgi", "PRIVATE"))
        assert sdk.show_workspace(v1.ShowWorkspaceRequest(made.id)).owner == "admin"
        other = signed(world, world.admin, "GET", f"{url}/v1/{world.project}/notebooks")
        assert other.json()["path"] == f"/v1/{world.project}/notebooks"  # not a workspace route: the app's
        sdk.delete_workspace(v1.DeleteWorkspaceRequest(made.id))
    assert "api-asgi" not in [w.name for w in world.store.list_workspaces()]


def test_the_users_a_workspace_may_be_granted_to_are_the_stores(world: World, proxies: tuple[str, str]) -> None:
    listed = client(proxies[0], world.scientist, world.project).list_users(v1.ListUsersRequest()).users
    assert [u.user_name for u in listed] == [u.name for u in world.store.list_users(domain="default")]  # its domain
    assert "stranger" not in [u.user_name for u in listed]
    error = refused(client(proxies[0], world.outsider, world.project).list_users, v1.ListUsersRequest())
    assert (error.status_code, error.error_code) == (403, "action_denied")  # modelarts:workspace:list
    upstream = signed(world, world.admin, "GET", f"{proxies[1]}/v1/{world.project}/workspaces/users/list")
    assert upstream.json()["path"].endswith("/workspaces/users/list")  # the option off: the service's


def test_quotas_are_not_served(world: World, proxies: tuple[str, str]) -> None:
    """Quotas are the service's: they go upstream even when the workspace API is served."""
    answer = signed(world, world.admin, "GET", f"{proxies[0]}/v1/{world.project}/workspaces/{world.internal_ws}/quotas")
    assert answer.status_code == 200 and answer.json()["path"].endswith("/quotas")


def login(url: str, world: World, user: str) -> str:
    """A password login scoped to the world's project, at the proxy's token endpoint: the IAM token."""
    scope = {"project": {"id": world.project}}
    identity = {"methods": ["password"], "password": {"user": {"name": user, "password": PASSWORD,
                                                               "domain": {"name": "default"}}}}  # fmt: skip
    answer = httpx.post(url + "/v3/auth/tokens", json={"auth": {"identity": identity, "scope": scope}}, timeout=30)
    assert answer.status_code == 201, answer.text
    return str(answer.headers["x-subject-token"])


def test_an_iam_token_manages_workspaces_too(world: World, proxies: tuple[str, str]) -> None:
    url = proxies[0]
    sdk = client(url, None, world.project, token=login(url, world, "admin"))
    made = sdk.create_workspace(create("api-token", "PRIVATE"))
    assert made.owner == "admin" and world.store.show_workspace("api-token").auth_type == "PRIVATE"
    assert "api-token" in [w.name for w in sdk.list_workspace(v1.ListWorkspaceRequest()).workspaces]
    assert sdk.show_workspace(v1.ShowWorkspaceRequest(made.id)).name == "api-token"
    scientist = client(url, None, world.project, token=login(url, world, "scientist"))
    error = refused(scientist.show_workspace, v1.ShowWorkspaceRequest(made.id))  # the owner's PRIVATE one
    assert (error.status_code, error.error_code) == (403, "workspace_denied")
    outsider = client(url, None, world.project, token=login(url, world, "outsider"))  # no policy
    error = refused(outsider.list_workspace, v1.ListWorkspaceRequest())
    assert (error.status_code, error.error_code) == (403, "action_denied")
    assert sdk.delete_workspace(v1.DeleteWorkspaceRequest(made.id)).workspace_id == made.id
    assert "api-token" not in [w.name for w in world.store.list_workspaces()]
