"""``make demo``: authmw's sidecar in front of a small ModelArts-like API, walked through with signed requests.

1. Sets up an embedded SQLite store in ``.demo/`` with the ``authmw`` CLI: a project; alice (administrator),
   bob (data scientist in ``developers``, which holds ``ModelArts CommonOperations`` and a policy denying
   training-job deletion) and eve (an outsider with no policy); the shared PUBLIC workspace ``0`` and an
   INTERNAL workspace ``research`` granted to bob; an IP whitelist on the notebook-deletion route; the cloud
   service ``op_svc_modelarts`` as a domain with a worker, and ``modelarts_agency``: alice's domain lets the
   service act on its notebooks (only) through temporary credentials.
2. Starts the demo API (``examples/demo_api.py``, which only trusts verified ``X-Authmw-*`` facts) and
   ``authmw proxy`` in front of it, as a separate process.
3. Sends real AK/SK-signed requests, IAM-token requests (after a password login at ``/v3/auth/tokens``) and
   requests signed with an agency's temporary credentials, and prints each outcome; exits 0 only if every
   outcome was as expected.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
WORK = Path.cwd() / ".demo"
PASSWORD = "demo password, not a secret"
GREEN, RED, DIM, RESET = ("\033[32m", "\033[31m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("",) * 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def authmw(*argv: str) -> Any:
    """Run one ``authmw`` command in-process (the same code as the console script), echoing it; a
    ``--password-stdin`` gets the demo password."""
    from authmw.cli import main

    print(f"{DIM}$ authmw {' '.join(argv)}{RESET}")
    out = io.StringIO()
    code = main([*argv, "--format", "json"], stdin=io.StringIO(PASSWORD + "\n"), stdout=out)
    if code != 0:
        raise SystemExit(f"authmw {' '.join(argv)} failed with exit code {code}")
    text = out.getvalue().strip()
    return json.loads(text) if text.startswith(("{", "[")) else text


def set_up() -> dict[str, Any]:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    os.environ["AUTHMW_STORE"] = f"sqlite:///{WORK / 'authmw.db'}"
    os.environ["AUTHMW_MASTER_KEY_FILE"] = str(WORK / "authmw.key")
    os.environ.pop("AUTHMW_MASTER_KEY", None)
    print("== 1. The store: identities, policies, workspaces (embedded SQLite in .demo/)")
    authmw("init")
    project = authmw("project", "create", "cn-north-4", "--region", "cn-north-4")["id"]
    for group in ("admin", "developers"):
        authmw("group", "create", group)
    (WORK / "no-delete-training.json").write_text(
        json.dumps({"Version": "1.1", "Statement": [{"Effect": "Deny", "Action": ["modelarts:trainJob:delete"]}]})
    )
    authmw("policy", "create", "no-delete-training", "--file", str(WORK / "no-delete-training.json"))
    authmw("policy", "attach", "ModelArts FullAccess", "--group", "admin")
    authmw("policy", "attach", "Security Administrator", "--group", "admin")  # the IAM API's iam:* actions
    authmw("policy", "attach", "ModelArts CommonOperations", "--group", "developers")
    authmw("policy", "attach", "no-delete-training", "--group", "developers")
    keys = {}
    for user, group in (("alice", "admin"), ("bob", "developers"), ("eve", None)):
        authmw("user", "create", user, *(("--password-stdin",) if user == "bob" else ()))
        if group:
            authmw("group", "add-user", group, user)
        keys[user] = authmw("key", "create", user)
    research = authmw(
        "workspace", "create", "research", "--auth-type", "INTERNAL", "--grant", "bob", "--owner", "alice"
    )  # fmt: skip
    authmw("whitelist", "set", "--route", "DELETE /v1/{project_id}/notebooks/{id}", "10.0.0.0/8")
    # The ModelArts pattern: the service is a domain whose users are its workers; the user's domain creates an
    # agency trusting it, with exactly the permissions the service needs.
    authmw("domain", "create", "op_svc_modelarts")
    authmw("user", "create", "worker", "--domain", "op_svc_modelarts", "--password-stdin")
    authmw("group", "create", "operators", "--domain", "op_svc_modelarts")
    authmw("group", "add-user", "operators", "worker", "--domain", "op_svc_modelarts")
    authmw("policy", "attach", "Agent Operator", "--group", "operators", "--domain", "op_svc_modelarts")
    (WORK / "notebooks-only.json").write_text(
        json.dumps({"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:*"]}]})
    )
    authmw("policy", "create", "notebooks-only", "--file", str(WORK / "notebooks-only.json"))
    authmw("agency", "create", "modelarts_agency", "--trust", "op_svc_modelarts", "--policy", "notebooks-only",
           "--max-duration", "3600")  # fmt: skip
    return {"project": project, "keys": keys, "research": research["id"]}


@contextlib.contextmanager
def running_services() -> Iterator[str]:
    import uvicorn

    api_port, proxy_port = free_port(), free_port()
    sidecar = f"http://127.0.0.1:{proxy_port}"
    os.environ["DEMO_SIDECAR"] = sidecar
    os.environ["DEMO_AUDIENCE"] = f"http://127.0.0.1:{api_port}"  # the sidecar's default: its --upstream's origin
    sys.path.insert(0, str(HERE))
    import demo_api

    server = uvicorn.Server(uvicorn.Config(demo_api.app, host="127.0.0.1", port=api_port, log_level="warning"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # runs in a thread
    threading.Thread(target=server.run, daemon=True).start()
    print("\n== 2. The demo API, and authmw proxy in front of it")
    command = [sys.executable, "-m", "authmw", "proxy", "--upstream", f"http://127.0.0.1:{api_port}",
               "--listen", f"127.0.0.1:{proxy_port}", "--audit-log", str(WORK / "audit.log")]  # fmt: skip
    print(f"{DIM}$ authmw {' '.join(command[3:])}{RESET}")
    log = open(WORK / "proxy.log", "w")  # noqa: SIM115 - lives as long as the process
    proxy = subprocess.Popen(command, stderr=log)  # noqa: S603 - our own interpreter and arguments
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(sidecar + "/readyz").status_code == 200 and server.started:
                    break
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the proxy did not start; see {WORK / 'proxy.log'}")
            time.sleep(0.1)
        print(f"sidecar on {sidecar}, demo API on http://127.0.0.1:{api_port} (reachable only through the sidecar)")
        yield sidecar
    finally:
        proxy.terminate()
        proxy.wait(30)
        log.close()
        server.should_exit = True


def audit_record(request_id: str) -> dict[str, Any]:
    """The proxy's audit record of a request (the deciding statement or failed step is never sent to the client)."""
    for _ in range(20):
        for line in (WORK / "audit.log").read_text().splitlines():
            record = json.loads(line)
            if record["request_id"] == request_id:
                return record  # type: ignore[no-any-return]
        time.sleep(0.05)
    return {"reason": "(not in the audit log)", "delegation": []}


def login(sidecar: str, user: str, domain: str, scope: Any = None) -> str:
    """A password login at the sidecar's token endpoint; the IAM token."""
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "password": PASSWORD, "domain": {"name": domain}}},
        }
    }
    if scope is not None:
        auth["scope"] = scope
    answer = httpx.post(sidecar + "/v3/auth/tokens", json={"auth": auth})
    print(f"\n-- {user} logs in: POST /v3/auth/tokens -> {answer.status_code} (the token is in X-Subject-Token)")
    answer.raise_for_status()
    return answer.headers["x-subject-token"]


def walkthrough(sidecar: str, world: dict[str, Any]) -> int:
    from authmw.client import HttpxAuth
    from authmw.signing import sign_request

    project, keys = world["project"], world["keys"]
    clients = {
        name: httpx.Client(base_url=sidecar, auth=HttpxAuth(key["access"], key["secret"])) for name, key in keys.items()
    }
    failures = 0

    def step(title: str, who: str, method: str, path: str, expect: tuple[int, str | None], **kwargs: Any) -> Any:
        nonlocal failures
        response = clients[who].request(method, path.format(project=project), **kwargs)
        body = response.json()
        code = body.get("error_code")
        ok = (response.status_code, code) == expect
        failures += not ok
        mark = f"{GREEN}as expected{RESET}" if ok else f"{RED}UNEXPECTED (wanted {expect}){RESET}"
        print(f"\n-- {title}\n   {who}: {method} {path.format(project='{project}')} -> {response.status_code} "
              f"{code or ''} [{mark}]")  # fmt: skip
        if code:
            record = audit_record(body["request_id"])
            print(f"   why (audit log): {record['reason'] or record['detail']}")
        else:
            print(f"   the API saw: {body['seen_by_api']}")
        return body

    print("\n== 3. Walkthrough: real signed requests through the sidecar")
    step("An allowed call: bob lists notebooks", "bob", "GET", "/v1/{project}/notebooks", (200, None))
    step(
        "A denied call, with the reason: bob may not delete training jobs",
        "bob", "DELETE", "/v2/{project}/training-jobs/job-42", (403, "action_denied"),
    )  # fmt: skip
    step("No policy, no access: eve lists notebooks", "eve", "GET", "/v1/{project}/notebooks", (403, "action_denied"))
    step(
        "Workspace isolation: bob works in the INTERNAL workspace he was granted",
        "bob", "POST", "/v2/{project}/training-jobs", (200, None), json={"workspace_id": world["research"]},
    )  # fmt: skip
    step(
        "Workspace isolation: alice, its owner and an administrator, enters it too",
        "alice", "GET", "/v1/{project}/notebooks", (200, None), params={"workspace_id": world["research"]},
    )  # fmt: skip
    step(
        "Workspace isolation: eve was not granted it",
        "eve", "GET", "/v1/{project}/notebooks", (403, "workspace_denied"), params={"workspace_id": world["research"]},
    )  # fmt: skip
    step(
        "IP whitelist: deleting notebooks is allowed from 10.0.0.0/8 only (we are 127.0.0.1)",
        "bob", "DELETE", "/v1/{project}/notebooks/nb-7", (403, "address_not_allowed"),
    )  # fmt: skip
    seen = step(
        "A spoofed identity header: bob claims to be alice",
        "bob", "GET", "/v1/{project}/notebooks", (200, None), headers={"X-Authmw-User-Name": "alice"},
    )  # fmt: skip
    if seen.get("seen_by_api", {}).get("user") != "bob":
        failures += 1
        print(f"   {RED}the API saw a spoofed user{RESET}")
    else:
        print("   the API never saw 'alice': authmw dropped the header and re-added the verified identity")
    print("\n-- A captured signed request sent again (replay protection is on by default)")
    captured = sign_request(
        "GET",
        f"{sidecar}/v1/{project}/notebooks",
        {},
        b"",
        access_key=keys["bob"]["access"],
        secret_key=keys["bob"]["secret"],
    )
    first, again = (httpx.get(captured.url, headers=captured.headers) for _ in range(2))
    replayed = (first.status_code, again.status_code, again.json().get("error_code"))
    print(f"   first use -> {first.status_code}; the same request again -> {again.status_code} {replayed[2]}")
    failures += replayed != (200, 401, "replayed_request")
    print("\n== 4. IAM tokens: a password login at the sidecar's /v3/auth/tokens, then X-Auth-Token")
    token = login(sidecar, "bob", "default", scope={"project": {"name": "cn-north-4"}})
    clients["bob (IAM token)"] = httpx.Client(base_url=sidecar, headers={"X-Auth-Token": token})
    step("bob's token lists notebooks", "bob (IAM token)", "GET", "/v1/{project}/notebooks", (200, None))
    step(
        "bob's token carries bob's policies: no deleting training jobs",
        "bob (IAM token)", "DELETE", "/v2/{project}/training-jobs/job-42", (403, "action_denied"),
    )  # fmt: skip
    revoked = httpx.delete(sidecar + "/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
    print(f"\n-- bob revokes his token: DELETE /v3/auth/tokens -> {revoked.status_code}")
    failures += revoked.status_code != 204
    time.sleep(0.3)  # every process sharing the store refuses it within its 0.25 s refresh
    step("The revoked token", "bob (IAM token)", "GET", "/v1/{project}/notebooks", (401, "invalid_token"))

    print("\n== 5. Agencies: op_svc_modelarts's worker acts on alice's domain with temporary credentials")
    worker_token = login(sidecar, "worker", "op_svc_modelarts")
    identity = {
        "methods": ["assume_role"],
        "assume_role": {"domain_name": "default", "agency_name": "modelarts_agency", "duration_seconds": 900},
    }
    answer = httpx.post(
        sidecar + "/v3.0/OS-CREDENTIAL/securitytokens",
        json={"auth": {"identity": identity}},
        headers={"X-Auth-Token": worker_token},
    )
    print(f"-- worker assumes modelarts_agency: POST /v3.0/OS-CREDENTIAL/securitytokens -> {answer.status_code}")
    failures += answer.status_code != 201
    credential = answer.json()["credential"]
    print(f"   temporary AK {credential['access']}, expires {credential['expires_at']}, "
          f"security token of {len(credential['securitytoken'])} characters (sealed: nothing stored)")  # fmt: skip
    clients["worker (agency)"] = httpx.Client(
        base_url=sidecar,
        auth=HttpxAuth(credential["access"], credential["secret"], security_token=credential["securitytoken"]),
    )
    seen = step(
        "The worker lists alice's domain's notebooks as the agency",
        "worker (agency)", "GET", "/v1/{project}/notebooks", (200, None),
    )  # fmt: skip
    failures += seen.get("seen_by_api", {}).get("agency") != "modelarts_agency"
    step(
        "The agency may do exactly what its policies allow: no training jobs",
        "worker (agency)", "DELETE", "/v2/{project}/training-jobs/job-42", (403, "action_denied"),
    )  # fmt: skip
    delegation = audit_record(seen["seen_by_api"]["request_id"])["delegation"]
    print(f"   delegation (audit log): {' -> '.join(delegation)}")
    failures += len(delegation) != 3
    failures += administrator(sidecar, project, keys)
    failures += data_scientist(sidecar, project, keys)
    unsigned = httpx.get(f"{sidecar}/v1/{project}/notebooks")
    print(f"\n-- No signature at all -> {unsigned.status_code} {unsigned.json()['error_code']}")
    failures += (unsigned.status_code, unsigned.json()["error_code"]) != (401, "missing_credentials")
    for client in clients.values():
        client.close()
    return failures


def administrator(sidecar: str, project: str, keys: dict[str, Any]) -> int:
    """alice administers with the official IAM SDK: a custom policy, a group granted it, a user in the group and
    the user's access key, all through the sidecar's IAM API; the new key works at once. Unexpected outcomes."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials, GlobalCredentials
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkiam.v3 import IamClient
    from huaweicloudsdkiam.v3 import model as iam_model
    from huaweicloudsdkmodelarts import v1

    def mark(ok: bool) -> str:
        return f"{GREEN}as expected{RESET}" if ok else f"{RED}UNEXPECTED{RESET}"

    print("\n== 6. An administrator with huaweicloudsdkiam: users, keys and policies through authmw's IAM API")
    domain = authmw("domain", "show", "default")["id"]
    alice = GlobalCredentials(keys["alice"]["access"], keys["alice"]["secret"], domain)
    iam = IamClient.new_builder().with_credentials(alice).with_endpoints([sidecar]).build()
    statement = iam_model.AgencyPolicyStatement(action=["modelarts:notebook:list"], effect="Allow")
    option = iam_model.AgencyPolicyRoleOption(
        display_name="notebook-readers", type="AX", policy=iam_model.AgencyPolicy(version="1.1", statement=[statement])
    )
    role = iam.create_agency_custom_policy(
        iam_model.CreateAgencyCustomPolicyRequest(iam_model.CreateAgencyCustomPolicyRequestBody(option))
    ).role
    group = iam.keystone_create_group(
        iam_model.KeystoneCreateGroupRequest(
            iam_model.KeystoneCreateGroupRequestBody(iam_model.KeystoneCreateGroupOption(name="readers"))
        )
    ).group
    iam.keystone_associate_group_with_domain_permission(
        iam_model.KeystoneAssociateGroupWithDomainPermissionRequest(domain, group.id, role.id)
    )
    user = iam.keystone_create_user(
        iam_model.KeystoneCreateUserRequest(
            iam_model.KeystoneCreateUserRequestBody(iam_model.KeystoneCreateUserOption(name="carol", domain_id=domain))
        )
    ).user
    iam.keystone_add_user_to_group(iam_model.KeystoneAddUserToGroupRequest(group.id, user.id))
    key = iam.create_permanent_access_key(
        iam_model.CreatePermanentAccessKeyRequest(
            iam_model.CreatePermanentAccessKeyRequestBody(iam_model.CreateCredentialOption(user.id))
        )
    ).credential
    print(
        "\n-- alice: create_agency_custom_policy(notebook-readers), keystone_create_group(readers), grant on the "
        f"domain, keystone_create_user(carol), add to readers, create_permanent_access_key -> {key.access}"
    )
    carol = (
        v1.ModelArtsClient.new_builder()
        .with_credentials(BasicCredentials(key.access, key.secret, project))
        .with_endpoints([sidecar])
        .build()
    )
    listed = carol.list_notebooks(v1.ListNotebooksRequest())
    ok = listed.status_code == 200
    print(f"\n-- carol, with the new key: list_notebooks -> {listed.status_code} [{mark(ok)}]")
    failures = not ok
    try:
        IamClient.new_builder().with_credentials(GlobalCredentials(key.access, key.secret, domain)).with_endpoints(
            [sidecar]
        ).build().keystone_list_users(iam_model.KeystoneListUsersRequest())
        refused = None
    except ClientRequestException as exc:
        refused = (exc.status_code, exc.error_code)
    ok = refused == (403, "action_denied")
    print(f"\n-- carol: keystone_list_users -> {refused} (no iam: action in her policy) [{mark(ok)}]")
    return failures + (not ok)


def data_scientist(sidecar: str, project: str, keys: dict[str, Any]) -> int:
    """bob works with the official ModelArts SDK: authmw answers the workspace API from its store, and the
    training job goes on to the API, placed in the new workspace. The number of unexpected outcomes."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkmodelarts import v1

    def sdk(user: str) -> Any:
        credentials = BasicCredentials(keys[user]["access"], keys[user]["secret"], project)
        return v1.ModelArtsClient.new_builder().with_credentials(credentials).with_endpoints([sidecar]).build()

    def mark(ok: bool) -> str:
        return f"{GREEN}as expected{RESET}" if ok else f"{RED}UNEXPECTED{RESET}"

    print("\n== 7. A data scientist with huaweicloudsdkmodelarts: workspaces come from authmw's store")
    bob = sdk("bob")
    made = bob.create_workspace(v1.CreateWorkspaceRequest(v1.CreateWorkspaceReq(name="bob-lab", auth_type="PRIVATE")))
    ok = made.owner == "bob" and made.status == "NORMAL"
    print(f"\n-- bob: create_workspace(name='bob-lab', auth_type='PRIVATE') -> id {made.id}, owner {made.owner} "
          f"(answered by authmw; `authmw workspace show bob-lab` shows it) [{mark(ok)}]")  # fmt: skip
    failures = not ok
    job = v1.Job(
        kind="job",
        metadata=v1.JobMetadata(name="mnist", workspace_id=made.id),
        algorithm=v1.JobAlgorithm(code_dir="obs://bucket/code/", boot_file="train.py"),
    )
    answer = bob.create_training_job(v1.CreateTrainingJobRequest(body=job))
    seen = json.loads(answer.raw_content)["seen_by_api"]
    ok = seen["workspace"] == made.id and seen["action"] == "modelarts:trainJob:create"
    print(f"\n-- bob: create_training_job in bob-lab -> {answer.status_code}, forwarded; the API saw {seen} "
          f"[{mark(ok)}]")  # fmt: skip
    failures += not ok
    try:
        sdk("eve").create_training_job(v1.CreateTrainingJobRequest(body=job))
        refused = None
    except ClientRequestException as exc:
        refused = (exc.status_code, exc.error_code)
    ok = refused == (403, "workspace_denied")
    print(f"\n-- eve: create_training_job in bob's PRIVATE workspace -> {refused} [{mark(ok)}]")
    return failures + (not ok)


def main() -> int:
    world = set_up()
    with running_services() as sidecar:
        failures = walkthrough(sidecar, world)
    print(f"\naudit log: {WORK / 'audit.log'} (one JSON line per decision)")
    if failures:
        print(f"{RED}{failures} outcome(s) were not as expected{RESET}")
        return 1
    print(f"{GREEN}every outcome was as expected{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
