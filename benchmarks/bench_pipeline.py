"""Request-pipeline benchmarks: what authmw adds to a request, in process and over real HTTP.

Layers: raw ASGI/WSGI control, full middleware, full proxy (house rule 15). One run measures:

- *In process*: the app callable called directly with a prepared scope (``receive``/``send`` that do nothing)
  or environ, no server: a bare Starlette app (one route answering a small JSON document) against the same
  app wrapped in ``authmw.asgi.AuthMiddleware``; a plain WSGI app and a werkzeug app against the same apps
  wrapped in ``authmw.wsgi.AuthMiddleware``. The request is an SDK-HMAC-SHA256-signed
  ``GET /v1/{project_id}/notebooks`` by a user whose group holds "ModelArts CommonOperations" (route, key,
  default workspace, project, policy: allowed). The core alone (``Guard.check`` on a built ``Request``), the
  verifier alone and the request adapters are timed too. Harness: ``bench_signing``'s (batches of about
  ``--batch-ms``, ``--repeats`` round-robin rounds, GC off inside a batch, medians).
- *Over HTTP*: uvicorn (one worker, no access log, httptools when installed, else h11) serving (a) the bare
  app, (b) the app behind the ASGI middleware, and (c) ``authmw proxy`` (a subprocess, as an operator runs
  it) in front of the bare app; ``wrk`` with a Lua script sending the signed headers, at 32 connections (the
  targets), at 1 (latency without queueing), and at 32 paced to ``--paced`` req/s in all (latency under a load
  every target can carry). Requests/s, latency percentiles and each server's CPU time per request. Audit
  records go to ``/dev/null`` in (b) and (c).

    python benchmarks/bench_pipeline.py [--json PATH] [--repeats 15] [--batch-ms 50] [--duration 10]
                                        [--http-repeats 3] [--connections 32,1] [--paced 250] [--pin split|none]
                                        [--no-http] [--check]
    python benchmarks/bench_pipeline.py --quick       # a smoke run: short batches, 2 s wrk runs, ~1 min
    python benchmarks/bench_pipeline.py --breakdown   # where the µs of Guard.check and the middleware go
    python benchmarks/bench_pipeline.py --profile     # cProfile: middleware paths, Guard.check, audit, proxy
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import importlib.util
import io
import json
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from authmw import admission, asgi, auditlog, wsgi
from authmw.assembly import open_guard, session_sealer
from authmw.audit import AUDIT_LOGGER, log_decision
from authmw.guard import Guard
from authmw.models import Request
from authmw.settings import Settings
from authmw.signing import ReplayGuard, sign_request
from authmw.store import Store, open_store
from authmw.sts import assume
from authmw.tokens import TokenSigner
from bench_signing import (
    Case,
    Maker,
    Verdict,
    _package,
    _us,
    case_record,
    each_of,
    machine,
    print_preamble,
    run_cases,
    same_op,
)
from bench_store import Quietness

# -- the workload ----------------------------------------------------------------------------------------

HOST = "modelarts.cn-north-4.myhuaweicloud.com"  # the Host every request carries (signed)
ROUTE = "/v1/{project_id}/notebooks"
#: What the app answers (ModelArts' list-notebooks shape, empty): a small JSON document.
PAYLOAD = {"current": 0, "data": [], "pages": 0, "size": 0, "total": 0}
BODY = json.dumps(PAYLOAD, separators=(",", ":")).encode()
ACTION = "modelarts:notebook:list"
CLIENT = ("127.0.0.1", 50123)

ASGI_TARGET_US = 10.0
WSGI_TARGET_US = 10.0
RPS_TARGET = 0.85
P99_TARGET_MS = 2.0
TARGET_CONNECTIONS = 32


@dataclass(frozen=True)
class World:
    """A store holding one project, one user in a group with "ModelArts CommonOperations", and its key."""

    directory: Path
    url: str
    key_file: str
    project: str
    access: str
    secret: str

    @property
    def path(self) -> str:
        return ROUTE.replace("{project_id}", self.project)

    @property
    def environ(self) -> dict[str, str]:
        """What a separate process needs to open the store (``authmw proxy``, the middleware server)."""
        return {"AUTHMW_STORE": self.url, "AUTHMW_MASTER_KEY_FILE": self.key_file}


def build_world(directory: Path) -> World:
    """As ``tests/support/world.py`` builds its world, with the Store API: init, project, group, policy, key."""
    url = f"sqlite:///{directory / 'authmw.db'}"
    key_file = str(directory / "authmw.key")
    store = open_store(url, create=True, environ={"AUTHMW_MASTER_KEY_FILE": key_file})
    try:
        store.initialize()
        project = store.create_project("cn-north-4", region="cn-north-4").id
        store.create_group("developers")
        store.attach_policy("ModelArts CommonOperations", group="developers")
        store.create_user("scientist")
        store.add_user_to_group("developers", "scientist")
        created = store.create_access_key("scientist")
        # Temporary credentials: a worker of a service domain may assume an agency with the same policy.
        store.create_domain("op_svc_bench")
        store.create_user("worker", domain="op_svc_bench")
        store.attach_policy("Agent Operator", user="worker", domain="op_svc_bench")
        store.create_agency("bench_agency", trust="op_svc_bench", policies=["ModelArts CommonOperations"])
    finally:
        store.close()
    return World(directory, url, key_file, project, created.access, created.secret)


def signed_headers(world: World) -> dict[str, str]:
    """The headers of the signed GET as huaweicloudsdkcore sends them (signed now: the verifier allows 15 min
    of skew, so one set serves a whole in-process phase or one wrk run; it is replayed, so the guards and servers
    that check it run with ``replay_protection: false`` and the replay guard is measured by its own rows)."""
    out = sign_request(
        "GET",
        f"http://{HOST}{world.path}",
        {"Content-Type": "application/json", "X-Project-Id": world.project},
        b"",
        access_key=world.access,
        secret_key=world.secret,
    )
    assert out.url.endswith(world.path), out.url
    return dict(out.headers)


def credential_requests(world: World, store: Store) -> tuple[Request, Request]:
    """The workload's GET with an IAM token of the user, and signed with an agency's temporary credentials."""
    user = store.find_user("scientist")
    token, _claims = TokenSigner(*store.signing_key()).issue(
        user_id=user.id, user_name=user.name, domain_id=user.domain_id, domain_name="default",
        project_id=world.project, project_name="cn-north-4",
    )  # fmt: skip
    with_token = Request.build("GET", world.path, [("Host", HOST), ("X-Auth-Token", token)], b"")
    worker = store.principal(store.find_user("worker", domain="op_svc_bench").id)
    assert worker is not None
    session, security_token = assume(store, session_sealer(store), worker, agency=("default", "bench_agency"))
    out = sign_request(
        "GET", f"http://{HOST}{world.path}", {"Content-Type": "application/json", "X-Project-Id": world.project},
        b"", access_key=session.access_key, secret_key=session.secret_key, security_token=security_token,
    )  # fmt: skip
    return with_token, Request.build("GET", world.path, list(out.headers.items()), b"")


def http_scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The scope uvicorn builds for the request (header names lower-cased, as its h11 and httptools do)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": CLIENT,
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()],
        "state": {},
    }


def wsgi_environ(path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The environ werkzeug's server builds for the request (``REQUEST_URI``/``RAW_URI`` included)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REQUEST_URI": path,
        "RAW_URI": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": CLIENT[0],
        "REMOTE_PORT": str(CLIENT[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": "",
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    return environ


# -- the apps --------------------------------------------------------------------------------------------


def starlette_app() -> Any:
    """The bare app: Starlette, one route answering ``PAYLOAD`` with ``JSONResponse``."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def notebooks(_request: Any) -> JSONResponse:
        return JSONResponse(PAYLOAD)

    return Starlette(routes=[Route(ROUTE, notebooks)])


_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
_BODY = {"type": "http.response.body", "body": BODY}


async def raw_asgi_app(_scope: Any, _receive: Any, send: Callable[[Any], Awaitable[None]]) -> None:
    """No framework: two sends of prebuilt messages (the least an ASGI app can do)."""
    await send(_START)
    await send(_BODY)


def plain_wsgi_app(_environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A plain WSGI callable answering ``PAYLOAD`` (encoded per request, as the Starlette app does)."""
    body = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def werkzeug_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The same answer through werkzeug's ``Request``/``Response`` (what Flask builds on)."""
    from werkzeug.wrappers import Request as WRequest
    from werkzeug.wrappers import Response as WResponse

    request = WRequest(environ)
    assert request.path
    response = WResponse(json.dumps(PAYLOAD, separators=(",", ":")), mimetype="application/json")
    return response(environ, start_response)


# Factories for the uvicorn servers of the HTTP phase (``python -m uvicorn --factory bench_pipeline:...``).


def bare_app() -> Any:
    return starlette_app()


def middleware_app() -> Any:
    """The Starlette app behind ``AuthMiddleware``, over the store in ``$AUTHMW_STORE``, audit records to
    ``$BENCH_AUDIT_LOG`` (``/dev/null`` in the benchmark; unset: the library default, no handler)."""
    target = os.environ.get("BENCH_AUDIT_LOG")
    if target:
        audit_to(target)
    guard = open_guard(open_store(), config=REPLAYED)
    return asgi.AuthMiddleware(starlette_app(), guard=guard)


# -- audit logging ---------------------------------------------------------------------------------------

_AUDIT_DEFAULT = (list(AUDIT_LOGGER.handlers), AUDIT_LOGGER.level, AUDIT_LOGGER.propagate)


def audit_to(target: str | None) -> None:
    """Audit records to ``target`` as ``authmw proxy --audit-log`` writes them (the audit log writer, one JSON
    line each), or back to the library default (``None``: the ``authmw.audit`` logger with no handler, so no
    record is built). ``bench_audit.py`` compares the writer with the previous ``logging`` path."""
    handlers, level, propagate = _AUDIT_DEFAULT
    AUDIT_LOGGER.handlers[:] = handlers
    AUDIT_LOGGER.setLevel(level)
    AUDIT_LOGGER.propagate = propagate
    if target is None:
        auditlog.audit_to_logger()
    else:
        auditlog.audit_to(target)


# -- in-process cases ------------------------------------------------------------------------------------

ASGI_BARE = "Starlette app, bare"
ASGI_MW = "Starlette app + AuthMiddleware"
ASGI_MW_AUDIT = "Starlette app + AuthMiddleware, audit records to /dev/null"
ASGI_RAW = "raw ASGI app (prebuilt response), bare"
ASGI_RAW_MW = "raw ASGI app (prebuilt response) + AuthMiddleware"
WSGI_BARE = "plain WSGI app, bare"
WSGI_MW = "plain WSGI app + AuthMiddleware"
WSGI_MW_AUDIT = "plain WSGI app + AuthMiddleware, audit records to /dev/null"
WZ_BARE = "werkzeug Request/Response app, bare"
WZ_MW = "werkzeug Request/Response app + AuthMiddleware"
CHECK = "Guard.check(Request), allowed"
CHECK_BUILT = "request_from_scope + Guard.check (the guard's part of the ASGI middleware)"
CHECK_TOKEN = "Guard.check(Request), X-Auth-Token (verified token remembered), allowed"
CHECK_TEMPORARY = "Guard.check(Request), agency's temporary AK/SK + X-Security-Token (token remembered), allowed"
VERIFY = "Verifier.verify(Request), SDK-HMAC-SHA256"
CHECK_FRESH_OFF = "Guard.check(Request), a distinct signed request each, replay_protection: false"
CHECK_FRESH_ON = "Guard.check(Request), a distinct signed request each, replay guard on (default), 100k held"
#: The benchmark sends one signed request over and over: its guards and servers cannot refuse replays.
REPLAYED = Settings(replay_protection=False)
PROXY_MOCK = "ProxyApp, upstream answered in memory (no network, no connection pool), audit records to /dev/null"
#: (wrapped case, bare case) pairs: the overhead column and the targets.
PAIRS = {
    ASGI_MW: ASGI_BARE,
    ASGI_MW_AUDIT: ASGI_BARE,
    ASGI_RAW_MW: ASGI_RAW,
    WSGI_MW: WSGI_BARE,
    WSGI_MW_AUDIT: WSGI_BARE,
    WZ_MW: WZ_BARE,
}


def _noop() -> None:
    return None


async def _receive() -> dict[str, Any]:
    return _REQUEST_MESSAGE


_REQUEST_MESSAGE = {"type": "http.request", "body": b"", "more_body": False}


async def _send(_message: Any) -> None:
    return None


def _write(_data: bytes) -> None:
    return None


def _start_response(_status: str, _headers: list[tuple[str, str]], _exc_info: Any = None) -> Callable[[bytes], None]:
    return _write


def check_asgi(app: Any, scope: dict[str, Any]) -> None:
    """Fail before timing unless ``app`` answers 200 with the app's body (a refusal must not be timed)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(app(dict(scope), _receive, send))
    finally:
        loop.close()
    assert sent and sent[0]["status"] == 200, sent
    assert b"".join(m.get("body", b"") for m in sent[1:]) == BODY, sent


def check_wsgi(app: Any, environ: dict[str, Any]) -> None:
    status: list[str] = []

    def start_response(text: str, _headers: Any, _exc_info: Any = None) -> Callable[[bytes], None]:
        status.append(text)
        return _write

    body = b"".join(app(dict(environ), start_response))
    assert status == ["200 OK"] and body == BODY, (status, body)


def asgi_case(name: str, app: Any, scope: dict[str, Any], loop: asyncio.AbstractEventLoop, audit: str | None) -> Case:
    """Await ``app`` n times in one running loop; each request gets its own copy of the scope, as from a server."""
    check_asgi(app, scope)

    def make(n: int) -> Callable[[], object]:
        audit_to(audit)  # setup: the audit handler this case needs

        async def batch() -> None:
            for _ in repeat(None, n):
                await app(dict(scope), _receive, _send)

        return lambda: loop.run_until_complete(batch())

    return Case(name, "asgi", make)


def wsgi_case(name: str, app: Any, environ: dict[str, Any], audit: str | None) -> Case:
    """Call ``app`` n times and drain its iterable, as a WSGI server does; a fresh copy of the environ each time."""
    check_wsgi(app, environ)

    def make(n: int) -> Callable[[], object]:
        audit_to(audit)

        def run() -> None:
            for _ in repeat(None, n):
                for _chunk in app(dict(environ), _start_response):
                    pass

        return run

    return Case(name, "wsgi", make)


def quiet(maker: Maker) -> Maker:
    """A core case: the audit logger back to its default before the batch (another case may have set it)."""

    def make(n: int) -> Callable[[], object]:
        audit_to(None)
        return maker(n)

    return make


def audited(maker: Maker) -> Maker:
    """A case that writes audit records: the /dev/null handler before the batch."""

    def make(n: int) -> Callable[[], object]:
        audit_to(os.devnull)
        return maker(n)

    return make


def in_process_cases(world: World, guard: Guard, store: Store) -> tuple[list[Case], asyncio.AbstractEventLoop]:
    headers = signed_headers(world)
    scope = http_scope(world.path, headers)
    environ = wsgi_environ(world.path, headers)
    request = admission.request_from_scope(scope, b"")
    assert wsgi.request_from_environ(environ, b"") == request
    context = guard.check(request)
    assert context.action == ACTION and context.decision is not None and context.decision.allowed, context
    assert guard.verifier.verify(request).access_key == world.access

    def built_check() -> object:
        return guard.check(admission.request_from_scope(scope, b""))

    token_request, temporary_request = credential_requests(world, store)
    for other in (token_request, temporary_request):
        checked = guard.check(other)
        assert checked.decision is not None and checked.decision.allowed, checked

    loop = asyncio.new_event_loop()
    bare = starlette_app()
    cases = [
        Case("control: harness + empty function call", "control", quiet(same_op(_noop))),
        asgi_case(ASGI_BARE, bare, scope, loop, None),
        asgi_case(ASGI_MW, asgi.AuthMiddleware(bare, guard=guard), scope, loop, None),
        asgi_case(ASGI_MW_AUDIT, asgi.AuthMiddleware(bare, guard=guard), scope, loop, os.devnull),
        asgi_case(ASGI_RAW, raw_asgi_app, scope, loop, None),
        asgi_case(ASGI_RAW_MW, asgi.AuthMiddleware(raw_asgi_app, guard=guard), scope, loop, None),
        wsgi_case(WSGI_BARE, plain_wsgi_app, environ, None),
        wsgi_case(WSGI_MW, wsgi.AuthMiddleware(plain_wsgi_app, guard=guard), environ, None),
        wsgi_case(WSGI_MW_AUDIT, wsgi.AuthMiddleware(plain_wsgi_app, guard=guard), environ, os.devnull),
        wsgi_case(WZ_BARE, werkzeug_app, environ, None),
        wsgi_case(WZ_MW, wsgi.AuthMiddleware(werkzeug_app, guard=guard), environ, None),
        Case(CHECK, "core", quiet(same_op(guard.check, request))),
        Case(CHECK_BUILT, "core", quiet(same_op(built_check))),
        Case(CHECK_TOKEN, "core", quiet(same_op(guard.check, token_request))),
        Case(CHECK_TEMPORARY, "core", quiet(same_op(guard.check, temporary_request))),
        Case(VERIFY, "core", quiet(same_op(guard.verifier.verify, request))),
        *replay_cases(world, store),
        Case("request_from_scope(scope, b'')", "adapter", quiet(same_op(admission.request_from_scope, scope, b""))),
        Case("request_from_environ(environ, b'')", "adapter", quiet(same_op(wsgi.request_from_environ, environ, b""))),
        Case(
            "log_decision, audit logger off (library default)",
            "adapter",
            quiet(same_op(log_decision, context, None, "GET", world.path)),
        ),
        Case(
            "log_decision, audit records to /dev/null",
            "adapter",
            audited(same_op(log_decision, context, None, "GET", world.path)),
        ),
    ]
    return cases + proxy_cases(world, guard, store, scope, loop), loop


def replay_cases(world: World, store: Store) -> list[Case]:
    """Guard.check over distinct signed requests (a nonce each, as real traffic differs), with the default replay
    guard and without: the difference is what replay protection costs. The guard is fresh per batch but already
    holds 100,000 requests of 1,000 other users, spread over the window (it must not refuse the batch)."""
    pool: list[Request] = []

    def requests(n: int) -> list[Request]:
        while len(pool) < n:
            out = sign_request(
                "GET", f"http://{HOST}{world.path}",
                {"Content-Type": "application/json", "X-Project-Id": world.project, "X-Nonce": f"{len(pool):08x}"},
                b"", access_key=world.access, secret_key=world.secret,
            )  # fmt: skip
            pool.append(Request.build("GET", world.path, list(out.headers.items()), b""))
        return pool[:n]

    off = open_guard(store, config=REPLAYED)
    on = open_guard(store, config=Settings())
    assert on.verifier.replay_guard is not None and off.verifier.replay_guard is None

    def guarded() -> Callable[[Request], object]:
        replay = ReplayGuard()  # what open_guard makes by default, then filled
        now = time.time()
        for i in range(100_000):
            replay.remember(i.to_bytes(16, "big"), now + 1 + i % 900, f"user-{i % 1000}")
        on.verifier.replay_guard = replay
        return on.check

    return [
        Case(CHECK_FRESH_OFF, "core", quiet(each_of(requests, lambda: off.check))),
        Case(CHECK_FRESH_ON, "core", quiet(each_of(requests, guarded)), floor=CHECK_FRESH_OFF),
    ]


def proxy_cases(
    world: World, guard: Guard, store: Store, scope: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> list[Case]:
    """The sidecar's own work in process: ``ProxyApp`` with an in-memory upstream (so neither the network nor
    the upstream client's connection pool is in it), and two of its steps: the identity headers and the assertion."""
    from authmw.assertion import sign_assertion
    from authmw.proxy import ProxyApp, identity_headers

    class Answer:  # authmw.proxy.upstream.UpstreamResponse's interface: the body in one piece, as a small one comes
        def __init__(self) -> None:
            self.status = 200
            self.headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]

        async def receive(self) -> tuple[bytes, bool]:
            return BODY, True

        def release(self) -> None:
            pass

    class Upstream:  # authmw.proxy.upstream.UpstreamClient's interface, answered in memory
        async def request(self, *_args: Any) -> Answer:
            return Answer()

        async def aclose(self) -> None:
            pass

    kid, key = store.signing_key()
    app = ProxyApp(
        guard=guard,
        upstream="http://upstream.invalid",
        signing_key=(kid, key),
        public_keys=store.public_token_keys(["EdDSA"]),
        client=Upstream(),  # type: ignore[arg-type]  # the client's interface, without a network
    )
    request = admission.request_from_scope(scope, b"")
    context = guard.check(request)
    facts = identity_headers(context)
    claims = {name[len("x-authmw-") :]: value for name, value in facts if name != "x-authmw-allowed-actions"}
    path, rid = world.path, context.request_id

    def assertion() -> str:
        return sign_assertion(claims, key, kid, method="GET", path=path, query="", request_id=rid, ttl=60)

    def contexts(n: int) -> list[Any]:
        return [guard.check(request) for _ in range(n)]  # a fresh context each: allowed_actions is memoised

    proxy = asgi_case(PROXY_MOCK, app, scope, loop, os.devnull)
    proxy.group = "proxy"
    actions = len(getattr(context, "_catalog", ()) or guard.routes.actions)  # what allowed_actions decides
    return [
        proxy,
        Case(
            f"identity_headers(context): X-Authmw-* facts, allowed_actions decides {actions} catalog actions",
            "proxy",
            quiet(each_of(contexts, lambda: identity_headers)),
        ),
        Case("sign_assertion: Ed25519 JWS with PyJWT", "proxy", quiet(same_op(assertion))),
    ]


# -- over HTTP -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_impl() -> str:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def loop_impl() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def authmw_command() -> list[str]:
    script = Path(sys.executable).with_name("authmw")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from authmw.cli import main; sys.exit(main())"]


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    cpus: str | None
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = (["taskset", "-c", self.cpus] if self.cpus else []) + self.command
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}): {self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on port {self.port}: {self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far, from ``/proc``."""
        assert self.process is not None
        text = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = text.rpartition(") ")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_lines(self) -> int:
        try:
            return len(self.log.read_bytes().splitlines())
        except OSError:
            return 0


def uvicorn_server(name: str, factory: str, port: int, cpus: str | None, env: dict[str, str], log: Path) -> Server:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"bench_pipeline:{factory}",
        "--factory",
        "--app-dir",
        str(Path(__file__).resolve().parent),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--http",
        http_impl(),
        "--loop",
        "auto",
        "--lifespan",
        "on",
        "--log-level",
        "warning",
    ]
    return Server(name, command, env, port, cpus, log)


#: The three configurations over HTTP, in the order they are run and reported.
BARE, MIDDLEWARE, PROXY = "bare app", "app + ASGI middleware", "bare app behind authmw proxy"
TARGETS = (BARE, MIDDLEWARE, PROXY)


@dataclass
class Servers:
    """Every server of the HTTP phase: which port each target is on, and whose CPU time counts for it."""

    by_name: dict[str, Server]
    ports: dict[str, int]
    processes: dict[str, list[str]]  # target -> the servers working for it
    placement: str


def replayed_config(workdir: Path) -> Path:
    """A proxy configuration that lets wrk replay its one signed request (see ``REPLAYED``)."""
    path = workdir / "replayed.yaml"
    path.write_text("replay_protection: false\n")
    return path


@contextmanager
def running_servers(world: World, workdir: Path, pin: str) -> Iterator[Servers]:
    """Start the servers (pinned per ``pin``) and stop them afterwards.

    ``split`` (default): the server under test on CPU 0, wrk on CPU 1; the proxy's upstream (a second bare
    app) on CPU 1 with wrk, so the proxy has CPU 0 to itself as the app and the middleware do. ``none``: the
    kernel places everything.
    """
    split = pin == "split"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "BENCH_"))}
    store_env = {**base, **world.environ}
    ports = {name: free_port() for name in (*TARGETS, "upstream")}
    servers = {
        BARE: uvicorn_server("bare", "bare_app", ports[BARE], "0" if split else None, base, workdir / "bare.log"),
        MIDDLEWARE: uvicorn_server(
            "middleware",
            "middleware_app",
            ports[MIDDLEWARE],
            "0" if split else None,
            {**store_env, "BENCH_AUDIT_LOG": os.devnull},
            workdir / "middleware.log",
        ),
        "upstream": uvicorn_server(
            "upstream", "bare_app", ports["upstream"], "1" if split else None, base, workdir / "upstream.log"
        ),
        PROXY: Server(
            "authmw proxy",
            [
                *authmw_command(),
                "proxy",
                "--upstream",
                f"http://127.0.0.1:{ports['upstream']}",
                "--listen",
                f"127.0.0.1:{ports[PROXY]}",
                "--audit-log",
                os.devnull,
                "--config",
                str(replayed_config(workdir)),
            ],
            store_env,
            ports[PROXY],
            "0" if split else None,
            workdir / "proxy.log",
        ),
    }
    placement = (
        "pinned with taskset: the server under test on CPU 0, wrk on CPU 1, the proxy's upstream on CPU 1"
        if split
        else "not pinned: the kernel places wrk and the servers on the 2 CPUs"
    )
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        yield Servers(
            servers,
            {name: ports[name] for name in TARGETS},
            {BARE: [BARE], MIDDLEWARE: [MIDDLEWARE], PROXY: [PROXY, "upstream"]},
            placement,
        )
    finally:
        for server in servers.values():
            server.stop()


def probe(port: int, path: str, headers: dict[str, str]) -> None:
    """One request before the load: the answer must be the app's 200 (a refusal must not be measured)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200 or json.loads(body) != PAYLOAD:
        raise RuntimeError(f"port {port}: {response.status} {body[:300]!r}")


_LUA = """\
wrk.method = "GET"
{headers}
{delay}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,' ..
    '"status":%.0f,"timeout":%.0f,"mean_us":%.1f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"p999_us":%.0f,' ..
    '"max_us":%.0f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


def lua_script(headers: dict[str, str], path: Path, delay_ms: float = 0.0) -> Path:
    """The wrk script: the signed headers, and with ``delay_ms`` a pause before each request of a connection
    (wrk's ``delay()`` hook, not counted as latency), drawn from an exponential distribution of that mean, so
    each connection sends a Poisson stream and the connections do not fall into step."""
    lines = [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()]
    delay = _PACING.replace("MEAN_MS", f"{delay_ms:.3f}") if delay_ms > 0 else ""
    path.write_text(_LUA.format(headers="\n".join(lines), delay=delay))
    return path


_PACING = """\
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
function init(args)
  math.randomseed(seed * 7919)
end
function delay()
  return -MEAN_MS * math.log(1 - math.random())
end"""


@dataclass(frozen=True)
class Load:
    """A wrk load: ``connections`` open connections, each pausing ``delay_ms`` before every request (0: as
    fast as the server answers, a closed loop at saturation)."""

    connections: int
    delay_ms: float = 0.0
    offered: float = 0.0  # the req/s the pacing aims at (0: unpaced)

    @property
    def label(self) -> str:
        return f"{self.connections}" + (f", paced to ~{self.offered:g} req/s" if self.delay_ms else "")

    @classmethod
    def paced(cls, connections: int, rps: float) -> Load:
        return cls(connections, 1000.0 * connections / rps, rps)


@dataclass
class LoadRun:
    target: str
    load: Load
    threads: int
    duration_s: float
    data: dict[str, Any]
    cpu: dict[str, float]  # server name -> CPU seconds used during the run

    @property
    def rps(self) -> float:
        return float(self.data["requests"]) / (float(self.data["duration_us"]) / 1e6)

    @property
    def p99_ms(self) -> float:
        return float(self.data["p99_us"]) / 1000

    @property
    def p50_ms(self) -> float:
        return float(self.data["p50_us"]) / 1000

    @property
    def errors(self) -> int:
        d = self.data
        return int(d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"])

    def cpu_us_per_request(self, server: str) -> float:
        return self.cpu[server] / max(1.0, float(self.data["requests"])) * 1e6


def run_wrk(
    servers: Servers, target: str, load: Load, duration: float, world: World, workdir: Path, pin: str
) -> LoadRun:
    """One wrk run against ``target`` with freshly signed headers; the servers' CPU time is read around it."""
    headers = signed_headers(world)
    script = lua_script(headers, workdir / "signed.lua", load.delay_ms)
    connections = load.connections
    threads = min(2, connections)
    command = (["taskset", "-c", "1"] if pin == "split" else []) + [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{servers.ports[target]}{world.path}",
    ]
    names = servers.processes[target]
    before = {name: servers.by_name[name].cpu_seconds() for name in names}
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    after = {name: servers.by_name[name].cpu_seconds() for name in names}
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH-JSON "))
    run = LoadRun(target, load, threads, duration, data, {n: after[n] - before[n] for n in names})
    if run.errors:
        print(f"  {target}, {load.label} connections: {run.errors} errors {data}", file=sys.stderr)
    return run


@dataclass
class HttpResult:
    placement: str
    http: str
    loop: str
    runs: list[LoadRun] = field(default_factory=list)
    proxy_log_lines: int = 0
    proxy_log_sample: str = ""
    loads: list[Load] = field(default_factory=list)

    def of(self, target: str, load: Load) -> list[LoadRun]:
        return [r for r in self.runs if r.target == target and r.load == load]

    def rps(self, target: str, load: Load) -> float:
        return statistics.median(r.rps for r in self.of(target, load))

    def p99(self, target: str, load: Load) -> float:
        return statistics.median(r.p99_ms for r in self.of(target, load))


def http_phase(world: World, workdir: Path, args: argparse.Namespace) -> HttpResult:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk), or run with --no-http")
    if args.pin == "split" and (shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2):
        raise RuntimeError("--pin split needs taskset and 2 CPUs; run with --pin none")
    result = HttpResult("", http_impl(), loop_impl(), loads=list(args.loads))
    with running_servers(world, workdir, args.pin) as servers:
        result.placement = servers.placement
        headers = signed_headers(world)
        for target in TARGETS:
            probe(servers.ports[target], world.path, headers)
            print(f"  warm-up: {target}", file=sys.stderr, flush=True)
            run_wrk(servers, target, Load(TARGET_CONNECTIONS), args.warmup, world, workdir, args.pin)
        for load in args.loads:
            for round_ in range(args.http_repeats):
                for target in TARGETS:
                    print(
                        f"  wrk {target}, {load.label} connections, round {round_ + 1}/{args.http_repeats}",
                        file=sys.stderr,
                        flush=True,
                    )
                    result.runs.append(run_wrk(servers, target, load, args.duration, world, workdir, args.pin))
        proxy = servers.by_name[PROXY]
    result.proxy_log_lines = proxy.log_lines()
    result.proxy_log_sample = proxy.tail(2)
    return result


# -- report ----------------------------------------------------------------------------------------------


def facts() -> dict[str, Any]:
    base = machine()
    keep = ("date", "python", "implementation", "platform", "cpu", "cpu_count", "load_average_start")
    out = {key: base[key] for key in keep}
    out["affinity"] = sorted(os.sched_getaffinity(0))
    for name in ("authmw", "starlette", "uvicorn", "h11", "httptools", "uvloop", "httpx", "werkzeug"):
        out[name] = _package(name)
    here = Path(__file__).resolve().parent
    try:
        git: dict[str, Any] = {"cwd": here, "capture_output": True, "text": True}
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, **git)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../src"], check=False, **git)
        out["commit"] = head.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")
    except OSError:
        out["commit"] = "unknown"
    try:
        found = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        out["wrk"] = (found.stdout + found.stderr).splitlines()[0].split(" Copyright")[0]
    except (OSError, IndexError):
        out["wrk"] = "not installed"
    return out


def in_process_table(cases: list[Case]) -> str:
    by = {case.name: case for case in cases}
    rows = [
        "| group | case | median µs/request | min µs | IQR µs | ops × repeats | overhead vs bare µs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        q1, q3 = case.quartiles
        bare = by.get(PAIRS.get(case.name, ""))
        overhead = f"{(case.median - bare.median) / 1000:.2f}" if bare else ""
        rows.append(
            f"| {case.group} | {case.name} | {_us(case.median)} | {_us(min(case.per_op_ns))} | "
            f"{_us(q1)}–{_us(q3)} | {case.n} × {len(case.per_op_ns)} | {overhead} |"
        )
    return "\n".join(rows)


def _span(values: Sequence[float], fmt: str) -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}" if len(values) > 1 else ""


def http_table(result: HttpResult) -> str:
    rows = [
        "| target | connections | req/s (median) | range | ÷ bare | p50 ms | p99 ms (median) | range | "
        "p99 − bare ms | server CPU µs/request | errors |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for load in result.loads:
        for target in TARGETS:
            runs = result.of(target, load)
            if not runs:
                continue
            rps = [r.rps for r in runs]
            p99 = [r.p99_ms for r in runs]
            bare_rps, bare_p99 = result.rps(BARE, load), result.p99(BARE, load)
            cpu_parts = []
            for name in runs[0].cpu:
                label = "upstream" if name == "upstream" else "proxy" if name == PROXY else "server"
                cpu_parts.append(f"{label} {statistics.median(r.cpu_us_per_request(name) for r in runs):.0f}")
            rows.append(
                f"| {target} | {load.label} | {statistics.median(rps):,.0f} | {_span(rps, '{:,.0f}')} | "
                f"{statistics.median(rps) / bare_rps:.2f} | {statistics.median(r.p50_ms for r in runs):.2f} | "
                f"{statistics.median(p99):.2f} | {_span(p99, '{:.2f}')} | "
                f"{'' if target == BARE else f'{statistics.median(p99) - bare_p99:+.2f}'} | "
                f"{', '.join(cpu_parts)} | {sum(r.errors for r in runs)} |"
            )
    return "\n".join(rows)


def _budget(value: float, budget: float, unit: str) -> str:
    if value <= budget:
        return f"{budget - value:.2f} {unit} to spare"
    return f"{value - budget:.2f} {unit} over ({value / budget:.2f}× the budget)"


def verdicts(cases: list[Case], result: HttpResult | None) -> tuple[list[Verdict], list[str]]:
    by = {case.name: case for case in cases}
    out: list[Verdict] = []
    info: list[str] = []

    def overhead(wrapped: str) -> float:
        return (by[wrapped].median - by[PAIRS[wrapped]].median) / 1000

    def pair(wrapped: str) -> str:
        bare = PAIRS[wrapped]
        return f"{by[wrapped].median / 1000:.2f} − {by[bare].median / 1000:.2f} = {overhead(wrapped):.2f} µs"

    for goal, main, others, budget in (
        ("in-process ASGI middleware overhead ≤ 10 µs per request", ASGI_MW, (ASGI_RAW_MW,), ASGI_TARGET_US),
        ("in-process WSGI middleware overhead ≤ 10 µs per request", WSGI_MW, (WZ_MW,), WSGI_TARGET_US),
    ):
        if main not in by:
            out.append(Verdict(goal, None, "case not run"))
            continue
        worst = max(overhead(name) for name in (main, *others) if name in by)
        detail = "; ".join(f"{name.split(' +')[0]}: {pair(name)}" for name in (main, *others) if name in by)
        out.append(Verdict(goal, worst <= budget, f"{detail}; worst {_budget(worst, budget, 'µs')}"))
    if CHECK in by and VERIFY in by:
        info.append(
            f"the core alone: Guard.check {by[CHECK].median / 1000:.2f} µs (of which Verifier.verify "
            f"{by[VERIFY].median / 1000:.2f} µs); with the Request built from the scope "
            f"{by[CHECK_BUILT].median / 1000:.2f} µs"
        )
    if ASGI_MW_AUDIT in by:
        info.append(
            f"audit records to /dev/null add {(by[ASGI_MW_AUDIT].median - by[ASGI_MW].median) / 1000:.2f} µs (ASGI) "
            f"and {(by[WSGI_MW_AUDIT].median - by[WSGI_MW].median) / 1000:.2f} µs (WSGI) per request"
        )
    if result is None or not result.runs:
        out.append(Verdict("uvicorn: the middleware keeps ≥ 85% of the bare app's req/s", None, "HTTP not run"))
        out.append(Verdict("authmw proxy adds ≤ 2 ms p99 at 32 connections", None, "HTTP not run"))
        return out, info
    unpaced = [load for load in result.loads if not load.delay_ms]
    load = next((x for x in unpaced if x.connections == TARGET_CONNECTIONS), max(unpaced, key=lambda x: x.connections))
    at = "" if load.connections == TARGET_CONNECTIONS else f" (measured at {load.connections} connections)"
    bare, mw, proxy = (result.rps(t, load) for t in TARGETS)
    ratio = mw / bare
    need = RPS_TARGET * bare
    out.append(
        Verdict(
            "uvicorn: the middleware keeps ≥ 85% of the bare app's req/s",
            ratio >= RPS_TARGET,
            f"{mw:,.0f} ÷ {bare:,.0f} req/s = {ratio:.1%}{at}"
            + ("" if ratio >= RPS_TARGET else f"; 85% needs {need:,.0f} req/s ({need - mw:,.0f} more)"),
        )
    )
    added = result.p99(PROXY, load) - result.p99(BARE, load)
    out.append(
        Verdict(
            f"authmw proxy adds ≤ 2 ms p99 at {TARGET_CONNECTIONS} connections",
            added <= P99_TARGET_MS,
            f"p99 {result.p99(PROXY, load):.2f} − {result.p99(BARE, load):.2f} ms = {added:+.2f} ms{at}, "
            f"{_budget(added, P99_TARGET_MS, 'ms')}; the proxy serves {proxy:,.0f} req/s ({proxy / bare:.1%} of bare)",
        )
    )
    for other in result.loads:
        if other == load:
            continue
        p99s = [result.p99(t, other) for t in TARGETS]
        info.append(
            f"at {other.label} connection(s): p99 bare {p99s[0]:.2f} ms, middleware {p99s[1]:.2f} ms "
            f"({p99s[1] - p99s[0]:+.2f}), proxy {p99s[2]:.2f} ms ({p99s[2] - p99s[0]:+.2f}); req/s "
            + " / ".join(f"{result.rps(t, other):,.0f}" for t in TARGETS)
        )
    info.append(
        f"the proxy wrote {result.proxy_log_lines:,} lines to its standard error during the run; the last: "
        f"`{result.proxy_log_sample.splitlines()[-1] if result.proxy_log_sample else ''}`"
    )
    return out, info


def report(
    cases: list[Case], result: HttpResult | None, found: dict[str, Any], args: argparse.Namespace
) -> list[Verdict]:
    versions = (
        f"authmw {found['authmw']}, starlette {found['starlette']}, uvicorn {found['uvicorn']}, h11 {found['h11']}, "
        f"httptools {found['httptools']}, uvloop {found['uvloop']}, httpx {found['httpx']}, "
        f"werkzeug {found['werkzeug']}, {found['wrk']}; tree: {found['commit']}"
    )
    print_preamble("Request-pipeline benchmarks", found, args, versions)
    if cases:
        print("### In process (the app called directly, no server)\n")
        print(in_process_table(cases))
    if result is not None:
        print("\n### Over HTTP (uvicorn, one worker, + wrk)\n")
        print(
            f"uvicorn --workers 1 --no-access-log --http {result.http} (loop: {result.loop}); `authmw proxy` runs "
            f"uvicorn with the same defaults and `--audit-log /dev/null`; the middleware server writes its audit "
            f"records to /dev/null too. wrk -t2 (-t1 at 1 connection) -d{args.duration:g}s --latency, a Lua "
            f"script with the signed headers (the paced rows: before every request each connection pauses for an "
            f"exponentially distributed time, wrk's `delay()`, not counted as latency, so each connection sends a "
            f"Poisson stream and the total stays below every target's capacity); "
            f"{args.http_repeats} round-robin round(s) per load after "
            f"a {args.warmup:g} s warm-up of each target; medians (range over the rounds). {result.placement}. "
            f"Server CPU µs/request: the server process's user + system time during the run ÷ requests.\n"
        )
        print(http_table(result))
    out, info = verdicts(cases, result)
    print("\n### Targets\n")
    for verdict in out:
        print(verdict.line())
    for line in info:
        print(f"- {line}")
    return out


def dump(
    path: Path,
    cases: list[Case],
    result: HttpResult | None,
    found: dict[str, Any],
    out: list[Verdict],
    args: argparse.Namespace,
) -> None:
    document = {
        "machine": found,
        "settings": {
            "repeats": args.repeats,
            "batch_ms": args.batch_ms,
            "duration_s": args.duration,
            "http_repeats": args.http_repeats,
            "warmup_s": args.warmup,
            "loads": [load.label for load in args.loads],
            "pin": args.pin,
        },
        "in_process": [case_record(case, group=case.group, bare=PAIRS.get(case.name)) for case in cases],
        "http": None
        if result is None
        else {
            "placement": result.placement,
            "http": result.http,
            "loop": result.loop,
            "proxy_log_lines": result.proxy_log_lines,
            "runs": [
                {
                    "target": r.target,
                    "connections": r.load.connections,
                    "delay_ms": r.load.delay_ms,
                    "threads": r.threads,
                    "duration_s": r.duration_s,
                    "rps": r.rps,
                    **r.data,
                    "cpu_s": r.cpu,
                }
                for r in result.runs
            ],
        },
        "targets": [{"target": v.target, "met": v.met, "detail": v.detail} for v in out],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nraw results written to {path}", file=sys.stderr)


# -- breakdown -------------------------------------------------------------------------------------------


def breakdown_cases(world: World, guard: Guard) -> list[Case]:
    """The steps of ``Guard.check`` on the workload, each timed alone (private steps, for diagnosis only:
    a step the guard no longer has is left out), and the parts of the ASGI middleware around it."""
    from authmw.guard import _State
    from authmw.models import WhitelistScope
    from authmw.routes import check_allowed, parse_path
    from authmw.workspaces import parse_body as _json_body
    from authmw.workspaces import resolve_workspace

    headers = signed_headers(world)
    scope = http_scope(world.path, headers)
    request = admission.request_from_scope(scope, b"")
    context = guard.check(request)
    principal = context.principal
    assert principal is not None and context.workspace is not None
    parsed = parse_path(request.path)
    match = guard.routes.match(request.method, parsed.segments)
    assert match is not None
    identity: Any = guard.identity

    def policy_context() -> dict[str, Any]:
        return {
            "g:sourceip": context.client or "",
            "g:currenttime": guard._now(),
            "g:userid": principal.user_id,
            "g:username": principal.user_name,
            "g:domainname": principal.domain_name,
            "g:mfapresent": False,
            "modelarts:workspaceid": "0",
            "g:projectname": "cn-north-4",
        }

    def state_context() -> object:
        state = _State("0" * 24, context.client)
        return state.context(guard, None)

    def whitelists() -> None:
        for scope_, name in (
            (WhitelistScope.ROUTE, match.route.name),
            (WhitelistScope.ROUTE, ACTION),
            (WhitelistScope.USER, principal.user_id),
            (WhitelistScope.WORKSPACE, "0"),
        ):
            identity.whitelist(scope_, name).allows(context.client)

    loop = asyncio.new_event_loop()

    def read_body(n: int) -> Callable[[], object]:  # n awaits inside one running loop, as in the middleware
        async def batch() -> None:
            for _ in repeat(None, n):
                await admission.read_body(scope, _receive, guard.max_body)

        return lambda: loop.run_until_complete(batch())

    def glue() -> object:  # what AuthMiddleware.__call__ does to the scope after the check
        copied = dict(scope)
        any(name[:9].lower() == b"x-authmw-" for name, _value in copied.get("headers", ()))
        copied["authmw"] = context
        copied["authmw.guard"] = guard
        copied["user"] = asgi.AuthmwUser(context)
        copied["auth"] = asgi.AuthmwCredentials(context)
        return [{"type": "http.request", "body": b"", "more_body": False}]

    workspace_args: tuple[Any, ...] = (guard.identity.workspace, request, match, None, principal)
    steps: list[tuple[str, Callable[[], Callable[..., object]], tuple[Any, ...]]] = [
        ("Guard.check (total)", lambda: guard.check, (request,)),
        ("1 request id (os.urandom(12).hex())", lambda: guard._request_id, ()),
        (
            "2 client address (TrustedProxies.client_address)",
            lambda: guard.proxies.client_address,
            (request.client, request.headers),
        ),
        ("3 parse_path", lambda: parse_path, (request.path,)),
        ("4 RouteCatalog.match", lambda: guard.routes.match, (request.method, parsed.segments)),
        ("5 check_allowed", lambda: check_allowed, (parsed, match.route, guard.strict_paths)),
        ("6 four whitelist lookups + allows (route ×2, user, workspace)", lambda: whitelists, ()),
        ("7 Verifier.verify", lambda: guard.verifier.verify, (request,)),
        ("8 identity.principal (cached)", lambda: identity.principal, (principal.user_id,)),
        ("9 _json_body (no body)", lambda: _json_body, (request, match)),
        ("10 resolve_workspace (default workspace)", lambda: resolve_workspace, workspace_args),
        ("11 Guard._project (path + X-Project-Id)", lambda: guard._project, (request, match, principal)),
        ("12 policy context dict (+ g:CurrentTime)", lambda: policy_context, ()),
        ("13 PolicySet.decide (cache hit)", lambda: principal.policies.decide, (ACTION, None, context.policy_context)),
        ("14 _State + AuthContext(...)", lambda: state_context, ()),
        ("ASGI: request_from_scope", lambda: admission.request_from_scope, (scope, b"")),
        ("ASGI: scope copy, header scan, scope keys, replay message", lambda: glue, ()),
        ("ASGI: log_decision, audit logger off", lambda: log_decision, (context, None, "GET", world.path)),
    ]
    cases = []
    for name, get, args in steps:
        try:
            fn = get()
            fn(*args)
        except (AttributeError, ImportError, TypeError) as exc:
            print(f"  {name}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        cases.append(Case(name, "step", quiet(same_op(fn, *args))))
    cases.insert(len(cases) - 3, Case("ASGI: await read_body (one http.request message)", "step", quiet(read_body)))
    return cases


def breakdown(args: argparse.Namespace, world: World, guard: Guard) -> None:
    cases = breakdown_cases(world, guard)
    run_cases(cases, args.repeats, args.batch_ms)
    total = cases[0].median
    print("\n## Where the µs of Guard.check go (SDK-HMAC-SHA256 GET notebooks, allowed)\n")
    print("| step | median µs | % of Guard.check |\n|---|---:|---:|")
    steps = 0.0
    for case in cases:
        print(f"| {case.name} | {case.median / 1000:.3f} | {100 * case.median / total:.0f}% |")
        if case.name[:1].isdigit():
            steps += case.median
    print(f"| guard glue (total − steps 1–14) | {(total - steps) / 1000:.3f} | {100 * (total - steps) / total:.0f}% |")
    print(
        "\nEach step is timed alone, on the same request again and again (its call overhead included), so the "
        "steps do not add up exactly to the total. The ASGI rows are the middleware's own work around the check."
    )


# -- profile ---------------------------------------------------------------------------------------------


def _print_stats(title: str, stats: pstats.Stats, lines: int, sort: str = "tottime") -> None:
    text = io.StringIO()
    stats.stream = text  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(lines)
    print(f"\n## cProfile: {title} (sorted by {'own' if sort == 'tottime' else 'cumulative'} time)\n")
    print("```")
    print("\n".join(line.rstrip() for line in text.getvalue().splitlines() if line.strip()))
    print("```")


def _profiled(title: str, fn: Callable[[], object], lines: int = 30, sorts: Sequence[str] = ("tottime",)) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    for sort in sorts:
        _print_stats(title, pstats.Stats(profiler), lines, sort)


def serve_profiled(out: str, argv: list[str]) -> int:
    """``authmw ARGV`` (the proxy) in this process, profiled from SIGUSR1 until SIGUSR2 (then written to ``out``),
    so start-up and warm-up stay out of the profile."""
    from authmw.cli import main as cli

    profiler = cProfile.Profile()

    def start(_signum: int, _frame: Any) -> None:
        profiler.enable()

    def stop(_signum: int, _frame: Any) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return cli(argv)


def profile_proxy_server(world: World, workdir: Path, args: argparse.Namespace) -> None:
    """``authmw proxy`` under wrk (32 connections, ``--duration``), profiled in its own process."""
    split = args.pin == "split"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "BENCH_"))}
    up_port, proxy_port = free_port(), free_port()
    out = workdir / "proxy.prof"
    upstream = uvicorn_server("upstream", "bare_app", up_port, "1" if split else None, base, workdir / "up.log")
    proxy = Server(
        "authmw proxy (profiled)",
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-profiled",
            str(out),
            "proxy",
            "--upstream",
            f"http://127.0.0.1:{up_port}",
            "--listen",
            f"127.0.0.1:{proxy_port}",
            "--audit-log",
            os.devnull,
            "--config",
            str(replayed_config(workdir)),
        ],
        {**base, **world.environ},
        proxy_port,
        "0" if split else None,
        workdir / "proxy-profiled.log",
    )
    servers = Servers({PROXY: proxy, "upstream": upstream}, {PROXY: proxy_port}, {PROXY: [PROXY, "upstream"]}, "")
    try:
        for server in (upstream, proxy):
            server.start()
            server.wait_ready()
        probe(proxy_port, world.path, signed_headers(world))
        run_wrk(servers, PROXY, Load(TARGET_CONNECTIONS), args.warmup, world, workdir, args.pin)
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        run = run_wrk(servers, PROXY, Load(TARGET_CONNECTIONS), args.duration, world, workdir, args.pin)
        proxy.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # let dump_stats finish writing
    finally:
        for server in (proxy, upstream):
            server.stop()
    title = (
        f"authmw proxy under wrk -c{TARGET_CONNECTIONS} -d{args.duration:g}s, {int(run.data['requests']):,} "
        f"requests ({run.rps:,.0f} req/s with the profiler on)"
    )
    for sort in ("tottime", "cumulative"):
        _print_stats(title, pstats.Stats(str(out)), 30, sort)
    print(f"\nThe proxy wrote {proxy.log_lines():,} lines to its standard error; the last: {proxy.tail(1)!r}")


def profile(world: World, guard: Guard, store: Store, workdir: Path, args: argparse.Namespace) -> None:
    calls = args.calls
    headers = signed_headers(world)
    scope = http_scope(world.path, headers)
    environ = wsgi_environ(world.path, headers)
    request = admission.request_from_scope(scope, b"")
    audit_to(None)
    app = asgi.AuthMiddleware(starlette_app(), guard=guard)
    check_asgi(app, scope)
    loop = asyncio.new_event_loop()

    def asgi_batch(target: Any, n: int) -> Callable[[], object]:
        async def batch() -> None:
            for _ in repeat(None, n):
                await target(dict(scope), _receive, _send)

        return lambda: loop.run_until_complete(batch())

    _profiled(f"{calls:,} requests: Starlette app + ASGI AuthMiddleware", asgi_batch(app, calls))
    wapp = wsgi.AuthMiddleware(plain_wsgi_app, guard=guard)
    check_wsgi(wapp, environ)

    def wsgi_batch() -> None:
        for _ in repeat(None, calls):
            for _chunk in wapp(dict(environ), _start_response):
                pass

    _profiled(f"{calls:,} requests: plain WSGI app + WSGI AuthMiddleware", wsgi_batch)

    def checks() -> None:
        for _ in repeat(None, calls):
            guard.check(request)

    _profiled(f"{calls:,} × Guard.check on one Request", checks)
    context = guard.check(request)

    def audits() -> None:
        for _ in repeat(None, calls):
            log_decision(context, None, "GET", world.path)

    audit_to(os.devnull)
    _profiled(f"{calls:,} × log_decision, audit records to /dev/null", audits, 20)
    proxied = next(case for case in proxy_cases(world, guard, store, scope, loop) if case.name == PROXY_MOCK)
    run = proxied.make(calls // 10)  # sets the audit handler
    _profiled(f"{calls // 10:,} requests: {PROXY_MOCK}", run, 30, ("tottime", "cumulative"))
    audit_to(None)
    loop.close()
    if args.http:
        profile_proxy_server(world, workdir, args)


# -- main ------------------------------------------------------------------------------------------------


def _connections(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


@contextmanager
def world_and_guard(tmp: Path) -> Iterator[tuple[World, Guard, Store]]:
    world = build_world(tmp)
    store = open_store(world.url, environ=world.environ)
    try:
        guard = open_guard(store, config=REPLAYED)
        yield world, guard, store
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw results as JSON")
    parser.add_argument("--repeats", type=int, default=15, help="timed batches per in-process case (default 15)")
    parser.add_argument("--batch-ms", type=float, default=50.0, help="target duration of one batch (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--http-repeats", type=int, default=3, help="wrk runs per target and connections (3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk warm-up per target (default 3)")
    parser.add_argument(
        "--connections", type=_connections, default=[TARGET_CONNECTIONS, 1], help="wrk connection counts (32,1)"
    )
    parser.add_argument(
        "--paced",
        type=float,
        default=250.0,
        metavar="RPS",
        help="also a 32-connection run paced to about RPS req/s in all, below every target's capacity (250; 0: off)",
    )
    parser.add_argument("--pin", choices=("split", "none"), default="split", help="taskset placement (split)")
    parser.add_argument("--no-http", dest="http", action="store_false", help="in-process cases only")
    parser.add_argument("--no-in-process", dest="in_process", action="store_false", help="HTTP runs only")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 rounds of 20 ms, 2 s wrk runs, 1 round")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--breakdown", action="store_true", help="time the steps of Guard.check")
    parser.add_argument("--profile", action="store_true", help="cProfile the middleware paths and Guard.check")
    parser.add_argument("--calls", type=int, default=20_000, help="requests per --profile run (default 20,000)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--serve-profiled"]:  # internal: the profiled proxy process of --profile
        return serve_profiled(argv[1], argv[2:])
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batch_ms, args.duration, args.http_repeats, args.warmup = 5, 20.0, 2.0, 1, 1.0
    args.loads = [Load(c) for c in args.connections]
    if args.paced > 0:
        args.loads.append(Load.paced(TARGET_CONNECTIONS, args.paced))
    if args.repeats < 1 or args.batch_ms <= 0 or args.duration <= 0 or args.http_repeats < 1:
        parser.error("--repeats, --batch-ms, --duration and --http-repeats must be positive")
    with tempfile.TemporaryDirectory(prefix="authmw-bench-pipeline-") as tmp, ExitStack() as stack:
        world, guard, store = stack.enter_context(world_and_guard(Path(tmp)))
        if args.profile:
            profile(world, guard, store, Path(tmp), args)
            return 0
        if args.breakdown:
            breakdown(args, world, guard)
            return 0
        found = facts()
        quietness = Quietness()
        cases: list[Case] = []
        if args.in_process:
            cases, loop = in_process_cases(world, guard, store)
            run_cases(cases, args.repeats, args.batch_ms)
            loop.close()
        audit_to(None)
        result = http_phase(world, Path(tmp), args) if args.http else None
        found["other_busy_cpus"] = quietness.busy_cpus()
        found["load_average_end"] = os.getloadavg()
    out = report(cases, result, found, args)
    if args.json:
        dump(args.json, cases, result, found, out, args)
    return 1 if args.check and any(v.met is False for v in out) else 0


if __name__ == "__main__":
    sys.exit(main())
