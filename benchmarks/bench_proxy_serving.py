"""The serving side of ``authmw proxy``: its CPU per request under each HTTP parser and event loop.

Four ``authmw proxy`` processes over one store, the same configuration, differing only in how they are served:
uvicorn's h11 or httptools protocol (each with the proxy's head deadline, ``header_deadline_protocol``) on
asyncio's or uvloop's event loop. Each is pinned to CPU 0; wrk and the upstream (a bare uvicorn app) share CPU 1,
so a proxy's CPU time is its own. ``wrk`` replays one SDK-signed GET at 32 connections for ``--duration`` seconds
against each in turn, the order rotated every round (interleaved: the machine's load drifts alike for all), and
the proxy's user+system CPU time (``/proc``) is read around each run. Reported: per variant, the median CPU µs
per request and req/s, and each one's ratio to h11 on asyncio measured in the same rounds.

    python benchmarks/bench_proxy_serving.py [--rounds 5] [--duration 5] [--connections 32] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_pipeline import (
    PROXY,
    Load,
    Server,
    Servers,
    build_world,
    free_port,
    loop_impl,
    probe,
    replayed_config,
    run_wrk,
    signed_headers,
    uvicorn_server,
)

#: (HTTP parser, event loop) of each proxy.
VARIANTS = [("h11", "asyncio"), ("h11", "uvloop"), ("httptools", "asyncio"), ("httptools", "uvloop")]
BASELINE = ("h11", "asyncio")

# Runs ``authmw proxy`` (argv[3:]) served with the parser argv[1] on the loop argv[2]: the two choices serve()
# makes by what is installed are pinned here.
_LAUNCHER = """
import sys
import authmw.proxy.server as server
http, loop = sys.argv[1], sys.argv[2]
chosen = server.header_deadline_protocol
server.header_deadline_protocol = lambda timeout, _http=None: chosen(timeout, http)
if loop == "asyncio":
    server.loop_factory = lambda: None
from authmw.cli import main
sys.exit(main(sys.argv[3:]))
"""


# ``--app bare``: the same serving (protocol with the head deadline, loop) around bench_pipeline's bare Starlette
# app instead of the proxy: what the serving side alone costs per request.
_BARE_LAUNCHER = """
import asyncio, sys
import uvicorn
import bench_pipeline
from authmw.proxy.server import header_deadline_protocol, loop_factory
http, loop, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = uvicorn.Config(bench_pipeline.bare_app(), host="127.0.0.1", port=port, log_level="warning",
                        http=header_deadline_protocol(10, http), lifespan="on", server_header=False)
factory = loop_factory() if loop == "uvloop" else None
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(uvicorn.Server(config).serve())
"""


def name_of(variant: tuple[str, str]) -> str:
    return f"{variant[0]} on {variant[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--app", choices=["proxy", "bare"], default="proxy", help="bare: the serving side alone")
    args = parser.parse_args()
    if loop_impl() != "uvloop":
        raise SystemExit("uvloop is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-serving-"))
    world = build_world(workdir)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "BENCH_"))}
    here = Path(__file__).resolve()  # this checkout's authmw (not the venv's), and bench_pipeline for --app bare
    base["PYTHONPATH"] = os.pathsep.join([str(here.parents[1] / "src"), str(here.parent)])
    env = {**base, **world.environ}
    upstream_port = free_port()
    upstream = uvicorn_server("upstream", "bare_app", upstream_port, "1", base, workdir / "upstream.log")
    servers: dict[str, Server] = {"upstream": upstream}
    ports: dict[str, int] = {}
    for variant in VARIANTS:
        port = free_port()
        command = [sys.executable, "-c", _LAUNCHER, *variant, "proxy", "--upstream",
                   f"http://127.0.0.1:{upstream_port}", "--listen", f"127.0.0.1:{port}", "--audit-log", os.devnull,
                   "--config", str(replayed_config(workdir))]  # fmt: skip
        if args.app == "bare":
            command = [sys.executable, "-c", _BARE_LAUNCHER, *variant, str(port)]
        servers[name_of(variant)] = Server(name_of(variant), command, env, port, "0", workdir / f"{port}.log")
        ports[name_of(variant)] = port
    runs: dict[str, list[dict[str, float]]] = {name_of(v): [] for v in VARIANTS}
    load = Load(args.connections)
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        headers = signed_headers(world)
        for port in ports.values():
            probe(port, world.path, headers)
        for round_ in range(-1, args.rounds):  # round -1 warms every proxy up and is not counted
            order = VARIANTS[round_ % len(VARIANTS) :] + VARIANTS[: round_ % len(VARIANTS)]
            for variant in order:
                name = name_of(variant)
                view = Servers({PROXY: servers[name]}, {PROXY: ports[name]}, {PROXY: [PROXY]}, "split")
                duration = args.duration if round_ >= 0 else 2.0
                run = run_wrk(view, PROXY, load, duration, world, workdir, "split")
                if round_ >= 0:
                    runs[name].append({"cpu_us": run.cpu_us_per_request(PROXY), "rps": run.rps, "p99_ms": run.p99_ms,
                                       "errors": run.errors})  # fmt: skip
                    print(f"  round {round_ + 1}: {name}: {run.cpu_us_per_request(PROXY):.0f} µs CPU/request, "
                          f"{run.rps:.0f} req/s", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    report(runs, args)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "args": vars(args) | {"json": str(args.json)}}, indent=2))
    return 0


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    base = name_of(BASELINE)
    what = "authmw proxy" if args.app == "proxy" else "the bare app"
    print(f"{what} served, {args.connections} connections, {args.rounds} rounds × {args.duration:g} s, "
          f"interleaved; load average {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print("| served with | CPU µs/request (median, min–max) | ratio to h11 on asyncio | req/s (median) | errors |")
    print("|---|---|---|---|---|")
    for variant in VARIANTS:
        name = name_of(variant)
        cpu = [r["cpu_us"] for r in runs[name]]
        ratios = [r["cpu_us"] / b["cpu_us"] for r, b in zip(runs[name], runs[base], strict=True)]
        print(f"| {name} | {statistics.median(cpu):.0f} ({min(cpu):.0f}–{max(cpu):.0f}) | "
              f"{statistics.median(ratios):.2f}× | {statistics.median(r['rps'] for r in runs[name]):.0f} | "
              f"{sum(r['errors'] for r in runs[name])} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
