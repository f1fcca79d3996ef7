"""authmw's in-process forms against their peer recipe, interleaved in one run (issue 17's targets).

The peer is what a Starlette or Flask user writes without authmw: Starlette's ``AuthenticationMiddleware`` with a
backend verifying a PyJWT HS256 bearer token (no policy, no workspace, no audit), and for WSGI a middleware doing
the same around a Flask app. authmw runs the full pipeline on the ``bench_pipeline`` workload: an SDK-HMAC-SHA256
(AK/SK) signed ``GET /v1/{project_id}/notebooks``, route, key, default workspace, project, IAM policy (allowed),
with audit records on (to ``/dev/null``, as ``bench_pipeline`` writes them: the audit writer the branch has) and
off. Both refuse an unauthenticated request (the peer's backend raises on a missing or bad token, so
``AuthenticationMiddleware`` answers 400 without calling the app).

- *In process*: every app callable called directly (no server), each case calibrated to batches of about
  ``--batch-ms``, ``--repeats`` round-robin rounds (so a noisy neighbour hits every case alike), GC off inside a
  batch, medians. ``--clock cpu`` (default) times with the thread's CPU clock, which leaves out the time the
  thread waits for a CPU on a shared machine; ``--clock wall`` with ``perf_counter``.
- *Over HTTP*: uvicorn (one worker, ``--loop uvloop --http httptools``, no access log) serving the Starlette app
  behind authmw (audit records to ``/dev/null``) and behind the peer; ``wrk`` at 32 connections sending the
  signed headers, resp. the bearer token; the servers on CPU 0 and wrk on CPU 1 (``taskset``) when there are two
  CPUs; ``--http-repeats`` alternating rounds, medians.

    python benchmarks/bench_peers.py [--repeats 15] [--batch-ms 50] [--clock cpu|wall] [--no-http]
                                     [--duration 10] [--http-repeats 3] [--json PATH] [--check]
    python benchmarks/bench_peers.py --quick     # 5 rounds of 20 ms, 3 s wrk runs, 2 rounds
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from authmw import admission, asgi, wsgi
from bench_pipeline import (
    CLIENT,
    PAYLOAD,
    ROUTE,
    Server,
    World,
    asgi_case,
    audit_to,
    free_port,
    http_scope,
    lua_script,
    plain_wsgi_app,
    probe,
    raw_asgi_app,
    signed_headers,
    starlette_app,
    world_and_guard,
    wsgi_case,
    wsgi_environ,
)
from bench_signing import Case, Verdict, _package, _us, case_record, machine, print_preamble, run_cases, same_op
from bench_store import Quietness

# -- the peer ---------------------------------------------------------------------------------------------

#: The peer's HS256 key (32 bytes, as RFC 7518 §3.2 asks of an HS256 key) and its token's claims.
JWT_SECRET = "bench-peer-hs256-key-0123456789ab"
CLAIMS = {"sub": "scientist", "iss": "bench", "aud": "modelarts"}

GUARD_CHECK_TARGET_US = 8.0
PEER_RATIO_TARGET = 0.5  # authmw's overhead ≤ this × the peer's, around the same app
RAW_TARGET_US = 15.0  # authmw's overhead around a raw app
RPS_TARGET = 1.5  # authmw app's req/s ≥ this × the peer app's, over HTTP


def peer_token() -> str:
    """A bearer token for the peer (valid for a day: one serves a whole run)."""
    return jwt.encode({**CLAIMS, "exp": int(time.time()) + 86400}, JWT_SECRET, algorithm="HS256")


def _verify(token: str) -> dict[str, Any]:
    # What a careful peer checks: the algorithm pinned, expiry, audience and issuer.
    claims: dict[str, Any] = jwt.decode(
        token, JWT_SECRET, algorithms=["HS256"], audience="modelarts", issuer="bench", options={"require": ["exp"]}
    )
    return claims


def peer_asgi(app: Any) -> Any:
    """``app`` behind Starlette's AuthenticationMiddleware with a PyJWT HS256 bearer backend."""
    from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, SimpleUser
    from starlette.middleware.authentication import AuthenticationMiddleware

    class BearerBackend(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser]:
            scheme, _, token = conn.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthenticationError("a bearer token is required")
            try:
                claims = _verify(token)
            except jwt.InvalidTokenError as exc:
                raise AuthenticationError(str(exc)) from None
            return AuthCredentials(["authenticated"]), SimpleUser(claims["sub"])

    return AuthenticationMiddleware(app, backend=BearerBackend())


def peer_wsgi(app: Any) -> Any:
    """``app`` behind a WSGI middleware verifying a PyJWT HS256 bearer token (401 otherwise)."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise jwt.InvalidTokenError("a bearer token is required")
            environ["peer.claims"] = _verify(token)
        except jwt.InvalidTokenError:
            body = b'{"error":"unauthorized"}'
            start_response("401 Unauthorized", [("Content-Type", "application/json"), ("Content-Length", "24")])
            return [body]
        return app(environ, start_response)

    return middleware


def flask_app() -> Any:
    """The Flask app: one route answering ``PAYLOAD`` (encoded per request, as the other apps do)."""
    from flask import Flask

    app = Flask("bench")

    @app.get(ROUTE.replace("{project_id}", "<project_id>"))
    def notebooks(project_id: str) -> Any:  # noqa: ARG001 -- Flask passes the path parameter
        return app.response_class(json.dumps(PAYLOAD, separators=(",", ":")), mimetype="application/json")

    return app


# Factories for the uvicorn servers of the HTTP phase (``uvicorn --factory bench_peers:...``).


def peer_server_app() -> Any:
    return peer_asgi(starlette_app())


def authmw_server_app() -> Any:
    """The Starlette app behind ``AuthMiddleware``, audit records to ``$BENCH_AUDIT_LOG`` (as bench_pipeline's)."""
    from bench_pipeline import middleware_app

    return middleware_app()


# -- in process ---------------------------------------------------------------------------------------------

ASGI_BARE = "Starlette app, bare"
ASGI_PEER = "Starlette app + peer (AuthenticationMiddleware, PyJWT HS256 bearer)"
ASGI_AUTHMW = "Starlette app + authmw AuthMiddleware, audit on"
ASGI_AUTHMW_OFF = "Starlette app + authmw AuthMiddleware, audit off"
RAW_BARE = "raw ASGI app, bare"
RAW_PEER = "raw ASGI app + peer"
RAW_AUTHMW = "raw ASGI app + authmw AuthMiddleware, audit on"
RAW_AUTHMW_OFF = "raw ASGI app + authmw AuthMiddleware, audit off"
FLASK_BARE = "Flask app, bare"
FLASK_PEER = "Flask app + peer (WSGI middleware, PyJWT HS256 bearer)"
FLASK_AUTHMW = "Flask app + authmw wsgi.AuthMiddleware, audit on"
FLASK_AUTHMW_OFF = "Flask app + authmw wsgi.AuthMiddleware, audit off"
WSGI_BARE = "plain WSGI app, bare"
WSGI_PEER = "plain WSGI app + peer"
WSGI_AUTHMW = "plain WSGI app + authmw wsgi.AuthMiddleware, audit on"
WSGI_AUTHMW_OFF = "plain WSGI app + authmw wsgi.AuthMiddleware, audit off"
CHECK = "Guard.check(Request), AK/SK, allowed"
PEER_DECODE = "peer's core: jwt.decode HS256 (+ exp, aud, iss)"
#: wrapped case -> its bare app
PAIRS = {
    ASGI_PEER: ASGI_BARE,
    ASGI_AUTHMW: ASGI_BARE,
    ASGI_AUTHMW_OFF: ASGI_BARE,
    RAW_PEER: RAW_BARE,
    RAW_AUTHMW: RAW_BARE,
    RAW_AUTHMW_OFF: RAW_BARE,
    FLASK_PEER: FLASK_BARE,
    FLASK_AUTHMW: FLASK_BARE,
    FLASK_AUTHMW_OFF: FLASK_BARE,
    WSGI_PEER: WSGI_BARE,
    WSGI_AUTHMW: WSGI_BARE,
    WSGI_AUTHMW_OFF: WSGI_BARE,
}


def cpu_clock(case: Case) -> Case:
    """``case`` timed with the thread's CPU clock (time spent waiting for a CPU left out)."""

    def timed(n: int) -> float:
        run = case.make(n)
        gc.collect()
        gc.disable()
        try:
            start = time.thread_time_ns()
            run()
            elapsed = time.thread_time_ns() - start
        finally:
            gc.enable()
        return elapsed / n

    case.timed = timed  # type: ignore[method-assign]
    return case


def in_process_cases(world: World, guard: Any, loop: Any) -> list[Case]:
    signed = signed_headers(world)
    bearer = {"Host": "modelarts.cn-north-4.myhuaweicloud.com", "Authorization": f"Bearer {peer_token()}"}
    signed_scope, bearer_scope = http_scope(world.path, signed), http_scope(world.path, bearer)
    signed_environ, bearer_environ = wsgi_environ(world.path, signed), wsgi_environ(world.path, bearer)
    request = admission.request_from_scope(signed_scope, b"")
    context = guard.check(request)
    assert context.decision is not None and context.decision.allowed, context
    devnull = os.devnull
    star, flask = starlette_app(), flask_app()
    token = bearer["Authorization"].split()[1]

    def quiet(maker: Callable[[int], Callable[[], object]]) -> Callable[[int], Callable[[], object]]:
        def make(n: int) -> Callable[[], object]:
            audit_to(None)
            return maker(n)

        return make

    return [
        asgi_case(ASGI_BARE, star, bearer_scope, loop, None),
        asgi_case(ASGI_PEER, peer_asgi(star), bearer_scope, loop, None),
        asgi_case(ASGI_AUTHMW, asgi.AuthMiddleware(star, guard=guard), signed_scope, loop, devnull),
        asgi_case(ASGI_AUTHMW_OFF, asgi.AuthMiddleware(star, guard=guard), signed_scope, loop, None),
        asgi_case(RAW_BARE, raw_asgi_app, bearer_scope, loop, None),
        asgi_case(RAW_PEER, peer_asgi(raw_asgi_app), bearer_scope, loop, None),
        asgi_case(RAW_AUTHMW, asgi.AuthMiddleware(raw_asgi_app, guard=guard), signed_scope, loop, devnull),
        asgi_case(RAW_AUTHMW_OFF, asgi.AuthMiddleware(raw_asgi_app, guard=guard), signed_scope, loop, None),
        wsgi_case(FLASK_BARE, flask, bearer_environ, None),
        wsgi_case(FLASK_PEER, peer_wsgi(flask), bearer_environ, None),
        wsgi_case(FLASK_AUTHMW, wsgi.AuthMiddleware(flask, guard=guard), signed_environ, devnull),
        wsgi_case(FLASK_AUTHMW_OFF, wsgi.AuthMiddleware(flask, guard=guard), signed_environ, None),
        wsgi_case(WSGI_BARE, plain_wsgi_app, bearer_environ, None),
        wsgi_case(WSGI_PEER, peer_wsgi(plain_wsgi_app), bearer_environ, None),
        wsgi_case(WSGI_AUTHMW, wsgi.AuthMiddleware(plain_wsgi_app, guard=guard), signed_environ, devnull),
        wsgi_case(WSGI_AUTHMW_OFF, wsgi.AuthMiddleware(plain_wsgi_app, guard=guard), signed_environ, None),
        Case(CHECK, "core", quiet(same_op(guard.check, request))),
        Case(PEER_DECODE, "core", quiet(same_op(_verify, token))),
    ]


# -- over HTTP ------------------------------------------------------------------------------------------------

AUTHMW_HTTP = "Starlette app + authmw AuthMiddleware (audit to /dev/null)"
PEER_HTTP = "Starlette app + peer"


def uvicorn(factory: str, port: int, cpus: str | None, env: dict[str, str], log: Path, name: str) -> Server:
    command = [
        sys.executable, "-m", "uvicorn", f"bench_peers:{factory}", "--factory",
        "--app-dir", str(Path(__file__).resolve().parent), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--http", "httptools", "--loop", "uvloop", "--lifespan", "on",
        "--log-level", "warning",
    ]  # fmt: skip
    return Server(name, command, env, port, cpus, log)


@dataclass
class HttpRun:
    target: str
    rps: float
    p99_ms: float
    cpu_us: float  # server CPU per request
    errors: int


def wrk(
    port: int, path: str, headers: dict[str, str], duration: float, workdir: Path, cpus: str | None
) -> dict[str, Any]:
    script = lua_script(headers, workdir / f"wrk-{port}.lua")
    command = (["taskset", "-c", cpus] if cpus else []) + [
        "wrk", "-t2", "-c32", f"-d{duration:g}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data: dict[str, Any] = json.loads(line.removeprefix("BENCH-JSON "))
    return data


@contextmanager
def servers(world: World, workdir: Path, split: bool) -> Iterator[dict[str, Server]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "BENCH_"))}
    running = {
        AUTHMW_HTTP: uvicorn(
            "authmw_server_app", free_port(), "0" if split else None,
            {**base, **world.environ, "BENCH_AUDIT_LOG": os.devnull}, workdir / "authmw.log", "authmw",
        ),
        PEER_HTTP: uvicorn("peer_server_app", free_port(), "0" if split else None, base, workdir / "peer.log", "peer"),
    }  # fmt: skip
    try:
        for server in running.values():
            server.start()
        for server in running.values():
            server.wait_ready()
        yield running
    finally:
        for server in running.values():
            server.stop()


def http_phase(world: World, workdir: Path, args: argparse.Namespace) -> list[HttpRun]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk), or run with --no-http")
    split = shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2
    runs: list[HttpRun] = []
    bearer = {"Authorization": f"Bearer {peer_token()}"}
    with servers(world, workdir, split) as running:
        for target, server in running.items():
            headers = signed_headers(world) if target == AUTHMW_HTTP else bearer
            probe(server.port, world.path, headers)
            wrk(server.port, world.path, headers, args.warmup, workdir, "1" if split else None)
        for round_ in range(args.http_repeats):
            order = list(running.items()) if round_ % 2 == 0 else list(reversed(running.items()))
            for target, server in order:
                print(f"  wrk {target}, round {round_ + 1}/{args.http_repeats}", file=sys.stderr, flush=True)
                headers = signed_headers(world) if target == AUTHMW_HTTP else bearer
                before = server.cpu_seconds()
                data = wrk(server.port, world.path, headers, args.duration, workdir, "1" if split else None)
                cpu = server.cpu_seconds() - before
                requests = max(1.0, float(data["requests"]))
                errors = int(sum(data[k] for k in ("connect", "read", "write", "status", "timeout")))
                rps = requests / (float(data["duration_us"]) / 1e6)
                runs.append(HttpRun(target, rps, float(data["p99_us"]) / 1000, cpu / requests * 1e6, errors))
    print(
        f"  HTTP placement: {'servers on CPU 0, wrk on CPU 1 (taskset)' if split else 'not pinned'}",
        file=sys.stderr,
    )
    return runs


# -- report ---------------------------------------------------------------------------------------------------


def _over(value: float, budget: float, unit: str) -> str:
    if value <= budget:
        return f"{budget - value:.2f} {unit} to spare"
    return f"missed by {value - budget:.2f} {unit} ({value / budget:.2f}× the budget)"


def verdicts(cases: list[Case], runs: list[HttpRun]) -> tuple[list[Verdict], list[str]]:
    by = {case.name: case for case in cases}
    out: list[Verdict] = []
    info: list[str] = []

    def overhead(name: str) -> float:
        return (by[name].median - by[PAIRS[name]].median) / 1000

    check = by[CHECK].median / 1000
    out.append(
        Verdict(
            f"Guard.check (AK/SK, allowed) ≤ {GUARD_CHECK_TARGET_US:g} µs",
            check <= GUARD_CHECK_TARGET_US,
            f"median {check:.2f} µs, {_over(check, GUARD_CHECK_TARGET_US, 'µs')} "
            f"(the peer's jwt.decode alone: {by[PEER_DECODE].median / 1000:.2f} µs)",
        )
    )
    for form, peer, ours, off in (
        ("ASGI (Starlette)", ASGI_PEER, ASGI_AUTHMW, ASGI_AUTHMW_OFF),
        ("WSGI (Flask)", FLASK_PEER, FLASK_AUTHMW, FLASK_AUTHMW_OFF),
    ):
        theirs = overhead(peer)
        for label, name in (("audit on", ours), ("audit off", off)):
            mine = overhead(name)
            ratio = mine / theirs
            budget = PEER_RATIO_TARGET * theirs
            out.append(
                Verdict(
                    f"{form}: authmw's overhead ≤ {PEER_RATIO_TARGET:g}× the peer's, {label}",
                    ratio <= PEER_RATIO_TARGET,
                    f"{mine:.2f} µs ÷ {theirs:.2f} µs = {ratio:.2f}× ("
                    + (
                        f"{budget - mine:.2f} µs to spare"
                        if mine <= budget
                        else f"missed by {mine - budget:.2f} µs: {PEER_RATIO_TARGET:g}× needs ≤ {budget:.2f} µs"
                    )
                    + ")",
                )
            )
    for form, ours, off, peer in (
        ("raw ASGI app", RAW_AUTHMW, RAW_AUTHMW_OFF, RAW_PEER),
        ("plain WSGI app", WSGI_AUTHMW, WSGI_AUTHMW_OFF, WSGI_PEER),
    ):
        for label, name in (("audit on", ours), ("audit off", off)):
            mine = overhead(name)
            out.append(
                Verdict(
                    f"{form}: authmw adds ≤ {RAW_TARGET_US:g} µs, {label}",
                    mine <= RAW_TARGET_US,
                    f"{by[name].median / 1000:.2f} − {by[PAIRS[name]].median / 1000:.2f} = {mine:.2f} µs, "
                    f"{_over(mine, RAW_TARGET_US, 'µs')}",
                )
            )
        info.append(f"the peer around the {form} adds {overhead(peer):.2f} µs")
    goal = f"uvicorn + httptools + uvloop: the authmw app serves ≥ {RPS_TARGET:g}× the peer app's req/s"
    if not runs:
        out.append(Verdict(goal, None, "HTTP not run"))
        return out, info
    ours_rps = statistics.median(r.rps for r in runs if r.target == AUTHMW_HTTP)
    peer_rps = statistics.median(r.rps for r in runs if r.target == PEER_HTTP)
    ratio = ours_rps / peer_rps
    out.append(
        Verdict(
            goal,
            ratio >= RPS_TARGET,
            f"{ours_rps:,.0f} ÷ {peer_rps:,.0f} req/s = {ratio:.2f}×"
            + ("" if ratio >= RPS_TARGET else f" (missed: {RPS_TARGET:g}× needs {RPS_TARGET * peer_rps:,.0f} req/s)"),
        )
    )
    for target in (AUTHMW_HTTP, PEER_HTTP):
        mine = [r for r in runs if r.target == target]
        info.append(
            f"{target}: req/s {', '.join(f'{r.rps:,.0f}' for r in mine)}; p99 "
            f"{statistics.median(r.p99_ms for r in mine):.2f} ms; server CPU "
            f"{statistics.median(r.cpu_us for r in mine):.0f} µs/request; errors {sum(r.errors for r in mine)}"
        )
    return out, info


def table(cases: list[Case]) -> str:
    by = {case.name: case for case in cases}
    rows = [
        "| group | case | median µs | min µs | IQR µs | ops × repeats | overhead vs bare µs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        q1, q3 = case.quartiles
        bare = by.get(PAIRS.get(case.name, ""))
        overhead = f"{(case.median - bare.median) / 1000:.2f}" if bare else ""
        rows.append(
            f"| {case.group} | {case.name} | {_us(case.median)} | {_us(min(case.per_op_ns))} | {_us(q1)}–{_us(q3)} "
            f"| {case.n} × {len(case.per_op_ns)} | {overhead} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw results as JSON")
    parser.add_argument("--repeats", type=int, default=15, help="timed batches per in-process case (15)")
    parser.add_argument("--batch-ms", type=float, default=50.0, help="target duration of one batch (50)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="in-process clock (cpu)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--http-repeats", type=int, default=3, help="alternating wrk rounds (3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up per server (2)")
    parser.add_argument("--no-http", dest="http", action="store_false", help="in-process cases only")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 rounds of 20 ms, 3 s wrk runs, 2 rounds")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batch_ms, args.duration, args.http_repeats, args.warmup = 5, 20.0, 3.0, 2, 1.0
    import asyncio

    with tempfile.TemporaryDirectory(prefix="authmw-bench-peers-") as tmp, ExitStack() as stack:
        world, guard, _store = stack.enter_context(world_and_guard(Path(tmp)))
        found = machine()
        quietness = Quietness()
        loop = asyncio.new_event_loop()
        cases = in_process_cases(world, guard, loop)
        if args.clock == "cpu":
            cases = [cpu_clock(case) for case in cases]
        run_cases(cases, args.repeats, args.batch_ms)
        loop.close()
        audit_to(None)
        runs = http_phase(world, Path(tmp), args) if args.http else []
        found["other_busy_cpus"] = quietness.busy_cpus()
        found["load_average_end"] = os.getloadavg()
    versions = ", ".join(
        f"{name} {_package(name)}" for name in ("authmw", "starlette", "flask", "werkzeug", "pyjwt", "uvicorn")
    )
    print_preamble("authmw against its peers, in process and over HTTP", found, args, versions)
    print(f"Clock: {'thread CPU time' if args.clock == 'cpu' else 'wall (perf_counter)'}; client {CLIENT[0]}.\n")
    print(table(cases))
    out, info = verdicts(cases, runs)
    print("\n### Targets\n")
    for verdict in out:
        print(verdict.line())
    for line in info:
        print(f"- {line}")
    if args.json:
        document = {
            "machine": found,
            "clock": args.clock,
            "in_process": [case_record(case, bare=PAIRS.get(case.name)) for case in cases],
            "http": [vars(run) for run in runs],
            "targets": [{"target": v.target, "met": v.met, "detail": v.detail} for v in out],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 1 if args.check and any(v.met is False for v in out) else 0


if __name__ == "__main__":
    sys.exit(main())
