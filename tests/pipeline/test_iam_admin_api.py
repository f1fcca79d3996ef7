"""The IAM administration API driven by the official ``huaweicloudsdkiam`` client, unchanged: signed with AK/SK
(and with an IAM token), through the sidecar and through an ASGI app that mounts it, over one real store."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import GlobalCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkiam.v3 import IamClient
from huaweicloudsdkiam.v3 import model as m

from authmw import asgi
from authmw.assembly import open_guard
from authmw.audit import AUDIT_LOGGER
from authmw.client import HttpxAuth
from authmw.errors import NotFound
from authmw.iam_admin import IamAdmin, with_iam_admin
from authmw.iam_api import TokenService
from authmw.signing import sign_request
from authmw.tokens import TokenSigner
from tests.support.forms import SETTINGS, Form, running
from tests.support.huawei import token_credentials
from tests.support.servers import serve_asgi
from tests.support.world import Key, World, build_world, echo_asgi

PASSWORD = "correct horse battery staple"
POLICY = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:trainJob:get"]}]}


class NoncedCredentials(GlobalCredentials):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's global credentials, each request with a signed nonce header: authmw refuses an identical signed
    request seen twice (say, reading a user again within the same second, after deleting it), as its error says."""

    def sign_request(self, request: Any) -> Any:
        request.header_params["X-Client-Nonce"] = uuid.uuid4().hex
        return super().sign_request(request)


# The client builder accepts credentials by class name.
NoncedCredentials.__name__ = GlobalCredentials.__name__


def eventually(call: Callable[[], Any], status: int) -> ClientRequestException:
    """The refusal of ``call`` once it is ``status``: a change reaches every guard's cache within a second."""
    deadline = time.monotonic() + 1.0
    while True:
        error = refused(call)
        if error.status_code == status or time.monotonic() > deadline:
            return error
        time.sleep(0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(Path(tmp_path_factory.mktemp("iam-admin")))
    built.store.attach_policy("Security Administrator", group="admin")
    built.store.update_user("admin", password=PASSWORD)
    built.store.update_user("scientist", password=PASSWORD)
    yield built
    built.store.close()


@pytest.fixture(scope="module")
def proxy(world: World) -> Iterator[Form]:
    with running("proxy", world) as form:
        yield form


@pytest.fixture(scope="module")
def mounted(world: World) -> Iterator[str]:
    """An ASGI app behind AuthMiddleware with the IAM API mounted beside it (a process of its own caches)."""
    guard = open_guard(world.store, config=SETTINGS)
    signer = TokenSigner(*world.store.token_signing_key(SETTINGS.token_algorithm), algorithm=SETTINGS.token_algorithm)
    admin = IamAdmin(world.store, guard, tokens=TokenService(world.store, signer, guard))
    with serve_asgi(with_iam_admin(asgi.AuthMiddleware(echo_asgi, guard=guard), admin)) as url:
        yield url


def domain_id(world: World) -> str:
    return next(d.id for d in world.store.list_domains() if d.name == "default")


def client(url: str, world: World, key: Key | None = None, *, token: str | None = None) -> IamClient:
    config = HttpConfig.get_default_config()
    config.timeout = 30
    if token is not None:
        credentials = token_credentials(GlobalCredentials, token, domain_id(world))
    else:
        key = key or world.admin
        credentials = NoncedCredentials(key.access, key.secret, domain_id(world))
    return IamClient.new_builder().with_credentials(credentials).with_endpoints([url]).with_http_config(config).build()


def refused(call: Callable[[], Any]) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as caught:
        call()
    return caught.value


def login(url: str, user: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": PASSWORD, "domain": {"name": "default"}}}}}}  # fmt: skip
    answer = httpx.post(url + "/v3/auth/tokens", json=body, timeout=30)
    assert answer.status_code == 201
    return answer.headers["x-subject-token"]


def test_users_groups_and_members(proxy: Form, world: World) -> None:
    iam = client(proxy.url, world)
    created = iam.keystone_create_user(
        m.KeystoneCreateUserRequest(
            m.KeystoneCreateUserRequestBody(
                m.KeystoneCreateUserOption(name="api-user", domain_id=domain_id(world), password=PASSWORD)
            )
        )
    ).user
    assert created.name == "api-user" and created.enabled is True and created.domain_id == domain_id(world)
    listed = iam.keystone_list_users(m.KeystoneListUsersRequest(name="api-user")).users
    assert [u.id for u in listed] == [created.id]
    assert iam.keystone_show_user(m.KeystoneShowUserRequest(created.id)).user.name == "api-user"
    disabled = iam.keystone_update_user_by_admin(
        m.KeystoneUpdateUserByAdminRequest(
            created.id, m.KeystoneUpdateUserByAdminRequestBody(m.KeystoneUpdateUserOption(enabled=False))
        )
    ).user
    assert disabled.enabled is False and world.store.find_user("api-user").enabled is False
    group = iam.keystone_create_group(
        m.KeystoneCreateGroupRequest(m.KeystoneCreateGroupRequestBody(m.KeystoneCreateGroupOption(name="api-group")))
    ).group
    assert [g.name for g in iam.keystone_list_groups(m.KeystoneListGroupsRequest(name="api-group")).groups] == [
        "api-group"
    ]
    assert iam.keystone_show_group(m.KeystoneShowGroupRequest(group.id)).group.id == group.id
    iam.keystone_add_user_to_group(m.KeystoneAddUserToGroupRequest(group.id, created.id))
    iam.keystone_check_user_in_group(m.KeystoneCheckUserInGroupRequest(group.id, created.id))
    members = iam.keystone_list_users_for_group_by_admin(m.KeystoneListUsersForGroupByAdminRequest(group.id)).users
    assert [u.name for u in members] == ["api-user"]
    groups = iam.keystone_list_groups_for_user(m.KeystoneListGroupsForUserRequest(created.id)).groups
    assert [g.name for g in groups] == ["api-group"]
    world.store.add_user_to_group("api-group", "scientist")  # the CLI's verb: the API then finds the member there
    scientist = world.store.find_user("scientist").id
    duplicate = refused(lambda: iam.keystone_add_user_to_group(m.KeystoneAddUserToGroupRequest(group.id, scientist)))
    assert (duplicate.status_code, duplicate.error_code) == (400, "change_refused")
    iam.keystone_remove_user_from_group(m.KeystoneRemoveUserFromGroupRequest(group.id, created.id))
    gone = refused(lambda: iam.keystone_check_user_in_group(m.KeystoneCheckUserInGroupRequest(group.id, created.id)))
    assert gone.status_code == 404
    iam.keystone_delete_group(m.KeystoneDeleteGroupRequest(group.id))
    iam.keystone_delete_user(m.KeystoneDeleteUserRequest(created.id))
    missing = refused(lambda: iam.keystone_show_user(m.KeystoneShowUserRequest(created.id)))
    assert (missing.status_code, missing.error_code) == (404, "not_found")


def test_projects_and_access_keys(proxy: Form, world: World) -> None:
    iam = client(proxy.url, world)
    project = iam.keystone_create_project(
        m.KeystoneCreateProjectRequest(
            m.KeystoneCreateProjectRequestBody(
                m.KeystoneCreateProjectOption(name="cn-south-1", parent_id=domain_id(world), domain_id=domain_id(world))
            )
        )
    ).project
    assert project.name == "cn-south-1" and world.store.find_project("cn-south-1").id == project.id
    names = [p.name for p in iam.keystone_list_projects(m.KeystoneListProjectsRequest()).projects]
    assert names == ["cn-north-4", "cn-south-1"]
    world.store.create_user("key-holder")
    holder = world.store.find_user("key-holder").id
    key = iam.create_permanent_access_key(
        m.CreatePermanentAccessKeyRequest(m.CreatePermanentAccessKeyRequestBody(m.CreateCredentialOption(holder)))
    ).credential
    assert key.user_id == holder and key.status == "active" and len(key.secret) == 40
    # The new key signs at once (a ModelArts call through the proxy: refused by policy, so it was authenticated).
    call = client(proxy.url, world, Key(key.access, key.secret))
    denied = refused(lambda: call.keystone_list_users(m.KeystoneListUsersRequest()))
    assert (denied.status_code, denied.error_code) == (403, "action_denied")
    listed = iam.list_permanent_access_keys(m.ListPermanentAccessKeysRequest(user_id=holder)).credentials
    assert [k.access for k in listed] == [key.access]
    shown = iam.show_permanent_access_key(m.ShowPermanentAccessKeyRequest(key.access)).credential
    assert shown.user_id == holder
    updated = iam.update_permanent_access_key(
        m.UpdatePermanentAccessKeyRequest(
            key.access, m.UpdatePermanentAccessKeyRequestBody(m.UpdateCredentialOption(status="inactive"))
        )
    ).credential
    assert updated.status == "inactive"
    unsigned = eventually(lambda: call.keystone_list_groups(m.KeystoneListGroupsRequest()), 401)
    assert unsigned.status_code == 401  # an inactive key no longer signs
    iam.delete_permanent_access_key(m.DeletePermanentAccessKeyRequest(key.access))
    missing = refused(lambda: iam.show_permanent_access_key(m.ShowPermanentAccessKeyRequest(key.access)))
    assert (missing.status_code, missing.error_code) == (404, "not_found")
    bad = refused(
        lambda: iam.update_permanent_access_key(
            m.UpdatePermanentAccessKeyRequest(
                world.admin.access, m.UpdatePermanentAccessKeyRequestBody(m.UpdateCredentialOption(status="on"))
            )
        )
    )
    assert (bad.status_code, bad.error_code) == (400, "malformed_body")


def _policy_body(name: str, actions: list[str]) -> Any:
    statement = m.AgencyPolicyStatement(action=actions, effect="Allow")
    policy = m.AgencyPolicy(version="1.1", statement=[statement])
    return m.CreateAgencyCustomPolicyRequestBody(m.AgencyPolicyRoleOption(display_name=name, type="AX", policy=policy))


def test_custom_policies_granted_to_groups(proxy: Form, world: World) -> None:
    iam = client(proxy.url, world)
    domain = domain_id(world)
    role = iam.create_agency_custom_policy(
        m.CreateAgencyCustomPolicyRequest(_policy_body("api-policy", ["modelarts:trainJob:get"]))
    ).role
    assert role.display_name == "api-policy" and role.policy.statement[0].action == ["modelarts:trainJob:get"]
    listed = iam.list_custom_policies(m.ListCustomPoliciesRequest()).roles
    assert "api-policy" in [r.display_name for r in listed]
    assert iam.show_custom_policy(m.ShowCustomPolicyRequest(role.id)).role.id == role.id
    update = m.UpdateAgencyCustomPolicyRequestBody(_policy_body("api-policy", ["modelarts:*:get*"]).role)
    iam.update_agency_custom_policy(m.UpdateAgencyCustomPolicyRequest(role.id, update))
    assert "modelarts:*:get*" in world.store.show_policy("api-policy").document
    group = world.store.create_group("readers").id
    iam.keystone_associate_group_with_domain_permission(
        m.KeystoneAssociateGroupWithDomainPermissionRequest(domain, group, role.id)
    )
    assert world.store.show_group("readers").policies == ("api-policy",)
    iam.keystone_check_domain_permission_for_group(
        m.KeystoneCheckDomainPermissionForGroupRequest(domain, group, role.id)
    )
    roles = iam.keystone_list_domain_permissions_for_group(
        m.KeystoneListDomainPermissionsForGroupRequest(domain, group)
    ).roles
    assert [r.display_name for r in roles] == ["api-policy"]
    attached = refused(lambda: iam.delete_custom_policy(m.DeleteCustomPolicyRequest(role.id)))
    assert (attached.status_code, attached.error_code) == (400, "change_refused")
    iam.keystone_remove_domain_permission_from_group(
        m.KeystoneRemoveDomainPermissionFromGroupRequest(domain, group, role.id)
    )
    iam.delete_custom_policy(m.DeleteCustomPolicyRequest(role.id))
    invalid = refused(
        lambda: iam.create_agency_custom_policy(
            m.CreateAgencyCustomPolicyRequest(_policy_body("broken", ["not an action"]))
        )
    )
    assert (invalid.status_code, invalid.error_code) == (400, "change_refused")


def reads_job(url: str, key: Key, project: str) -> int:
    """The status of reading a training job of ``project`` (``modelarts:trainJob:get``), signed with ``key``."""
    path = f"/v2/{project}/training-jobs/job-1"
    headers = {"X-Client-Nonce": uuid.uuid4().hex}  # signed: two reads in one second are two requests
    return httpx.get(url + path, headers=headers, auth=HttpxAuth(key.access, key.secret), timeout=30).status_code


def test_policies_granted_on_a_project(proxy: Form, world: World) -> None:
    """A group's grant on one project allows its members there and nowhere else; an agency's is kept per project
    too. Listed, checked and revoked through the SDK; the revocation reaches the guard within a second."""
    iam = client(proxy.url, world)
    role = iam.create_agency_custom_policy(
        m.CreateAgencyCustomPolicyRequest(_policy_body("job-reader", ["modelarts:trainJob:get"]))
    ).role
    east = world.store.create_project("cn-east-3", region="cn-east-3").id
    group = world.store.create_group("east-readers").id
    world.store.create_user("east-user")
    world.store.add_user_to_group("east-readers", "east-user")
    created = world.store.create_access_key("east-user")
    key = Key(created.access, created.secret)
    try:
        assert (reads_job(proxy.url, key, east), reads_job(proxy.url, key, world.project)) == (403, 403)
        iam.keystone_associate_group_with_project_permission(
            m.KeystoneAssociateGroupWithProjectPermissionRequest(east, group, role.id)
        )
        deadline = time.monotonic() + 1.0
        while (status := reads_job(proxy.url, key, east)) != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 200 and reads_job(proxy.url, key, world.project) == 403  # that project only
        assert world.store.show_group("east-readers").policies == ()  # nothing granted domain-wide
        iam.keystone_check_project_permission_for_group(
            m.KeystoneCheckProjectPermissionForGroupRequest(east, group, role.id)
        )
        listed = iam.keystone_list_project_permissions_for_group(
            m.KeystoneListProjectPermissionsForGroupRequest(east, group)
        ).roles
        assert [r.display_name for r in listed] == ["job-reader"]
        twice = refused(
            lambda: iam.keystone_associate_group_with_project_permission(
                m.KeystoneAssociateGroupWithProjectPermissionRequest(east, group, role.id)
            )
        )
        assert (twice.status_code, twice.error_code) == (400, "change_refused")
        elsewhere = refused(
            lambda: iam.keystone_associate_group_with_project_permission(
                m.KeystoneAssociateGroupWithProjectPermissionRequest(world.other_project, group, role.id)
            )
        )
        assert (elsewhere.status_code, elsewhere.error_code) == (404, "not_found")  # another domain's project
        attached = refused(lambda: iam.delete_custom_policy(m.DeleteCustomPolicyRequest(role.id)))
        assert (attached.status_code, attached.error_code) == (400, "change_refused")  # granted on a project
        iam.keystone_remove_project_permission_from_group(
            m.KeystoneRemoveProjectPermissionFromGroupRequest(east, group, role.id)
        )
        gone = refused(
            lambda: iam.keystone_check_project_permission_for_group(
                m.KeystoneCheckProjectPermissionForGroupRequest(east, group, role.id)
            )
        )
        assert gone.status_code == 404
        deadline = time.monotonic() + 1.0
        while (status := reads_job(proxy.url, key, east)) != 403 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 403

        agency = world.store.create_agency("east-agency", trust="other").id
        iam.associate_agency_with_project_permission(
            m.AssociateAgencyWithProjectPermissionRequest(east, agency, role.id)
        )
        iam.check_project_permission_for_agency(m.CheckProjectPermissionForAgencyRequest(east, agency, role.id))
        roles = iam.list_project_permissions_for_agency(m.ListProjectPermissionsForAgencyRequest(east, agency)).roles
        assert [r.display_name for r in roles] == ["job-reader"]
        assert world.store.project_grants(east, agency="east-agency") == ("job-reader",)
        assert world.store.show_agency("east-agency").policies == ()
        iam.remove_project_permission_from_agency(m.RemoveProjectPermissionFromAgencyRequest(east, agency, role.id))
        assert world.store.project_grants(east, agency="east-agency") == ()
        iam.delete_custom_policy(m.DeleteCustomPolicyRequest(role.id))
    finally:
        for cleanup in (
            lambda: world.store.delete_agency("east-agency"),
            lambda: world.store.delete_user("east-user"),
            lambda: world.store.delete_group("east-readers"),
            lambda: world.store.delete_project("cn-east-3"),
        ):
            with contextlib.suppress(NotFound):
                cleanup()


def test_agencies_and_their_policies(proxy: Form, world: World) -> None:
    iam = client(proxy.url, world)
    domain = domain_id(world)
    agency = iam.create_agency(
        m.CreateAgencyRequest(
            m.CreateAgencyRequestBody(
                m.CreateAgencyOption(name="api-agency", domain_id=domain, trust_domain_name="other")
            )
        )
    ).agency
    other = next(d.id for d in world.store.list_domains() if d.name == "other")
    assert agency.name == "api-agency" and agency.trust_domain_id == other
    assert [a.name for a in iam.list_agencies(m.ListAgenciesRequest(domain_id=domain)).agencies] == ["api-agency"]
    assert iam.show_agency(m.ShowAgencyRequest(agency.id)).agency.id == agency.id
    iam.update_agency(
        m.UpdateAgencyRequest(
            agency.id, m.UpdateAgencyRequestBody(m.UpdateAgencyOption(trust_domain_name="op_svc_modelarts"))
        )
    )
    assert world.store.show_agency("api-agency").trust_domain == "op_svc_modelarts"
    full = next(p.id for p in world.store.list_policies() if p.name == "ModelArts FullAccess")
    iam.associate_agency_with_domain_permission(m.AssociateAgencyWithDomainPermissionRequest(domain, agency.id, full))
    iam.check_domain_permission_for_agency(m.CheckDomainPermissionForAgencyRequest(domain, agency.id, full))
    roles = iam.list_domain_permissions_for_agency(m.ListDomainPermissionsForAgencyRequest(domain, agency.id)).roles
    assert [r.display_name for r in roles] == ["ModelArts FullAccess"]
    iam.remove_domain_permission_from_agency(m.RemoveDomainPermissionFromAgencyRequest(domain, agency.id, full))
    gone = refused(
        lambda: iam.check_domain_permission_for_agency(m.CheckDomainPermissionForAgencyRequest(domain, agency.id, full))
    )
    assert gone.status_code == 404
    iam.delete_agency(m.DeleteAgencyRequest(agency.id))
    missing = refused(lambda: iam.show_agency(m.ShowAgencyRequest(agency.id)))
    assert (missing.status_code, missing.error_code) == (404, "not_found")


@pytest.fixture(params=["proxy", "mounted"])
def served(request: pytest.FixtureRequest) -> str:
    """The URL of the IAM API as the sidecar serves it, then as an ASGI app mounts it (with_iam_admin)."""
    return request.getfixturevalue("proxy").url if request.param == "proxy" else request.getfixturevalue("mounted")


def test_a_user_without_the_policy_is_refused(served: str, world: World, caplog: pytest.LogCaptureFixture) -> None:
    iam = client(served, world, world.scientist)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER.name)
    for call in (
        lambda: iam.keystone_list_users(m.KeystoneListUsersRequest()),
        lambda: iam.keystone_create_group(
            m.KeystoneCreateGroupRequest(m.KeystoneCreateGroupRequestBody(m.KeystoneCreateGroupOption(name="mine")))
        ),
        lambda: iam.list_permanent_access_keys(m.ListPermanentAccessKeysRequest()),
    ):
        error = refused(call)
        assert (error.status_code, error.error_code) == (403, "action_denied")
    assert [g.name for g in world.store.list_groups()].count("mine") == 0
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER.name]
    listed = next(r for r in records if r["action"] == "iam:users:listUsers")
    assert listed["event"] == "iam_admin" and listed["outcome"] == "deny" and listed["user_name"] == "scientist"
    assert listed["error_code"] == "action_denied" and listed["path"] == "/v3/users"
    stranger = refused(lambda: client(served, world, world.stranger).keystone_list_users(m.KeystoneListUsersRequest()))
    assert (stranger.status_code, stranger.error_code) == (403, "action_denied")  # another domain, no policy
    walled = refused(lambda: client(served, world, world.walled).keystone_list_users(m.KeystoneListUsersRequest()))
    assert (walled.status_code, walled.error_code) == (403, "address_not_allowed")  # its user whitelist, first


def test_malformed_requests_and_other_domains(served: str, world: World) -> None:
    iam = client(served, world)
    nameless = refused(
        lambda: iam.keystone_create_user(
            m.KeystoneCreateUserRequest(m.KeystoneCreateUserRequestBody(m.KeystoneCreateUserOption(enabled=True)))
        )
    )
    assert (nameless.status_code, nameless.error_code) == (400, "malformed_body")
    weak = refused(
        lambda: iam.keystone_create_user(
            m.KeystoneCreateUserRequest(
                m.KeystoneCreateUserRequestBody(m.KeystoneCreateUserOption(name="weak-user", password="short"))
            )
        )
    )
    assert (weak.status_code, weak.error_code) == (400, "change_refused")
    elsewhere = next(d.id for d in world.store.list_domains() if d.name == "other")
    foreign = refused(
        lambda: iam.keystone_create_group(
            m.KeystoneCreateGroupRequest(
                m.KeystoneCreateGroupRequestBody(m.KeystoneCreateGroupOption(name="planted", domain_id=elsewhere))
            )
        )
    )
    assert (foreign.status_code, foreign.error_code) == (403, "action_denied")
    stranger = world.store.find_user("stranger", domain="other").id
    hidden = refused(lambda: iam.keystone_show_user(m.KeystoneShowUserRequest(stranger)))
    assert (hidden.status_code, hidden.error_code) == (404, "not_found")
    unknown = httpx.get(served + "/v3/users/x/unknown", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "not_found"
    anonymous = httpx.get(served + "/v3/users", timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "missing_credentials"


def test_an_unsigned_body_changes_nothing(proxy: Form, world: World) -> None:
    body = json.dumps({"group": {"name": "unsigned-group"}}).encode()
    signed = sign_request(
        "POST",
        proxy.url + "/v3/groups",
        {"Content-Type": "application/json"},
        body,
        access_key=world.admin.access,
        secret_key=world.admin.secret,
        unsigned_payload=True,
    )
    answer = httpx.post(signed.url, content=signed.body, headers=signed.headers, timeout=30)
    assert (answer.status_code, answer.json()["error_code"]) == (401, "unsigned_payload_refused")
    assert "unsigned-group" not in [g.name for g in world.store.list_groups()]


def test_an_iam_token_administers_and_is_validated(proxy: Form, world: World) -> None:
    token = login(proxy.url, "admin")
    iam = client(proxy.url, world, token=token)
    names = [u.name for u in iam.keystone_list_users(m.KeystoneListUsersRequest()).users]
    assert "admin" in names and "stranger" not in names
    scientist = login(proxy.url, "scientist")
    checked = iam.keystone_validate_token(m.KeystoneValidateTokenRequest(x_subject_token=scientist))
    assert checked.token.user.name == "scientist" and checked.token.user.domain.name == "default"
    own = client(proxy.url, world, token=scientist)
    assert own.keystone_validate_token(m.KeystoneValidateTokenRequest(x_subject_token=scientist)).token.user
    denied = refused(lambda: own.keystone_validate_token(m.KeystoneValidateTokenRequest(x_subject_token=token)))
    assert (denied.status_code, denied.error_code) == (403, "action_denied")
    refusal = refused(lambda: own.keystone_list_groups(m.KeystoneListGroupsRequest()))
    assert (refusal.status_code, refusal.error_code) == (403, "action_denied")
    scientist_id = world.store.find_user("scientist").id
    body = m.KeystoneUpdateUserPasswordRequestBody(
        m.KeystoneUpdatePasswordOption(password=PASSWORD + "!", original_password="not the password")
    )
    wrong = refused(lambda: own.keystone_update_user_password(m.KeystoneUpdateUserPasswordRequest(scientist_id, body)))
    assert (wrong.status_code, wrong.error_code) == (403, "action_denied")
    body.user.original_password = PASSWORD
    own.keystone_update_user_password(m.KeystoneUpdateUserPasswordRequest(scientist_id, body))
    stale = eventually(lambda: own.keystone_list_users(m.KeystoneListUsersRequest()), 401)
    assert (stale.status_code, stale.error_code) == (401, "invalid_token")  # issued before the password changed
    others = refused(lambda: iam.keystone_update_user_password(m.KeystoneUpdateUserPasswordRequest(scientist_id, body)))
    assert (others.status_code, others.error_code) == (403, "action_denied")  # administrators PATCH the user
    reset = m.KeystoneUpdateUserByAdminRequestBody(m.KeystoneUpdateUserOption(password=PASSWORD))
    iam.keystone_update_user_by_admin(m.KeystoneUpdateUserByAdminRequest(scientist_id, reset))
    assert world.store.check_password("scientist", PASSWORD, domain="default") is not None  # set back by the admin
    assert login(proxy.url, "scientist")


def test_the_mounted_api_sees_changes_made_through_the_proxy(proxy: Form, mounted: str, world: World) -> None:
    through_proxy, through_app = client(proxy.url, world), client(mounted, world)
    user = through_app.keystone_create_user(
        m.KeystoneCreateUserRequest(m.KeystoneCreateUserRequestBody(m.KeystoneCreateUserOption(name="mounted-user")))
    ).user
    group = next(g for g in world.store.list_groups() if g.name == "developers").id
    through_app.keystone_add_user_to_group(m.KeystoneAddUserToGroupRequest(group, user.id))
    key = through_app.create_permanent_access_key(
        m.CreatePermanentAccessKeyRequest(m.CreatePermanentAccessKeyRequestBody(m.CreateCredentialOption(user.id)))
    ).credential
    signed = client(mounted, world, Key(key.access, key.secret))
    denied = refused(lambda: signed.keystone_list_users(m.KeystoneListUsersRequest()))
    assert denied.error_code == "action_denied"  # the key works at once on the app's side
    through_proxy.keystone_update_user_by_admin(
        m.KeystoneUpdateUserByAdminRequest(
            user.id, m.KeystoneUpdateUserByAdminRequestBody(m.KeystoneUpdateUserOption(enabled=False))
        )
    )
    # The app's guard reads through its own cache: the store revision tells it within a second.
    assert eventually(lambda: signed.keystone_list_groups(m.KeystoneListGroupsRequest()), 401).status_code == 401
    assert through_app.keystone_show_user(m.KeystoneShowUserRequest(user.id)).user.enabled is False
    through_app.keystone_delete_user(m.KeystoneDeleteUserRequest(user.id))
