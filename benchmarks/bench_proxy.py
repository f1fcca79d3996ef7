"""``authmw proxy``'s CPU per request with its upstream client against the httpx transports it replaced (issue 17).

wrk → ``authmw proxy`` → a bare uvicorn app (bench_pipeline's), the proxy pinned to CPU 0, wrk and the upstream
to CPU 1 (``taskset``), so the proxy's CPU time is its own. Two proxy processes run side by side over the same
store and upstream: ``client`` (``authmw.proxy.upstream``, as shipped) and ``httpx`` (the same proxy with its
upstream client replaced, inside this benchmark only, by the httpx transports it used before: a process started
with ``--serve-variant httpx`` patches ``authmw.proxy.app.UpstreamClient``); with ``--uvloop`` a third,
``client+uvloop``, the proxy's event loop on uvloop; with ``--baseline-src DIR`` the whole proxy of another
checkout (``baseline``: the commit before this client, to compare whole proxies). Their wrk runs alternate
(client, httpx, ..., then the reverse order), so the noise of a shared machine falls on all; each run reads the
proxy process's utime+stime from ``/proc/PID/stat`` before and after. Reported per variant: medians of CPU µs
per request, req/s, p50 and p99; and each one's ratio to httpx. Audit records go to ``/dev/null``; the signed
request is replayed (``replay_protection: false``).

    python benchmarks/bench_proxy.py [--duration 10] [--rounds 5] [--connections 32] [--body-kib 0]
                                     [--uvloop] [--baseline-src DIR] [--json PATH] [--check]

``--body-kib N`` makes the upstream answer N KiB (streamed in 16 KiB chunks) instead of the small JSON document.
Target (issue 17): the proxy ≤ 200 µs of CPU per request (``client``), from 540.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pipeline as bp  # the world, servers, wrk script and CPU accounting are bench_pipeline's

TARGET_US = 200.0
VARIANTS = ("client", "httpx")


# -- the httpx variant (only ever inside this benchmark) -------------------------------------------------------


class HttpxResponse:
    """An httpx transport's response behind :class:`authmw.proxy.upstream.UpstreamResponse`'s interface."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = response.headers.raw
        self._chunks = response.stream.__aiter__()

    async def receive(self) -> tuple[bytes, bool]:
        import httpx

        from authmw.errors import UpstreamUnavailable

        try:
            return await self._chunks.__anext__(), False
        except StopAsyncIteration:
            return b"", True
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(type(exc).__name__) from None

    def release(self) -> None:
        import asyncio

        task = asyncio.ensure_future(self._response.aclose())
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)


_PENDING: set[Any] = set()


class HttpxClient:
    """The proxy's previous upstream client: ``pools`` httpx.AsyncHTTPTransport (httpcore) pools used in turn,
    ``retries=0``, one TLS context, the timeouts as a request extension: what ``ProxyApp`` forwarded with."""

    def __init__(self, url: str, limits: Any, **_: Any) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.limits = limits
        size = limits.connections
        pool = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        tls = httpx.create_ssl_context()
        self._pools = [httpx.AsyncHTTPTransport(verify=tls, limits=pool, retries=0) for _ in range(limits.pools)]
        self._turn = 0

    async def request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes = b"", limits: Any = None
    ) -> HttpxResponse:
        import httpx

        from authmw.errors import UpstreamUnavailable

        limits = limits or self.limits
        timeouts = {"connect": limits.connect, "read": limits.read, "write": limits.write, "pool": limits.pool}
        request = httpx.Request(method, self.url + target, headers=headers, content=body,
                                extensions={"timeout": timeouts})  # fmt: skip
        self._turn = (self._turn + 1) % len(self._pools)
        try:
            response = await self._pools[self._turn].handle_async_request(request)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(type(exc).__name__) from None
        return HttpxResponse(response)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def serve_variant(variant: str, argv: list[str]) -> int:
    """``authmw ARGV`` (the proxy) in this process as ``variant``: ``httpx`` forwards with :class:`HttpxClient`;
    ``client+uvloop`` runs the proxy's event loop on uvloop (what the proxy would gain from it: its server is
    not this branch's to change)."""
    import asyncio

    import authmw.proxy.app
    from authmw.cli import main as cli

    if variant == "httpx":
        authmw.proxy.app.UpstreamClient = HttpxClient  # type: ignore[misc,assignment]  # the A/B's old side
    elif variant == "client+uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # serve()'s asyncio.run takes it up
    return cli(argv)


# -- the upstream ------------------------------------------------------------------------------------------


def large_app() -> Any:
    """The bare app's answer grown to ``BENCH_BODY_KIB`` KiB, sent in 16 KiB chunks (a streamed response)."""
    size = int(os.environ.get("BENCH_BODY_KIB", "0")) * 1024
    chunk = b"x" * 16384

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        left = size
        while left > 0:
            await send({"type": "http.response.body", "body": chunk[: min(left, len(chunk))], "more_body": True})
            left -= len(chunk)
        await send({"type": "http.response.body", "body": b""})

    return app


# -- the run ---------------------------------------------------------------------------------------------


def proxy_server(name: str, workdir: Path, upstream: int, port: int, env: dict[str, str]) -> bp.Server:
    serve = ["--serve-variant", name] if name not in ("client", "baseline") else []
    argv = ["proxy", "--upstream", f"http://127.0.0.1:{upstream}", "--listen", f"127.0.0.1:{port}",
            "--audit-log", os.devnull, "--config", str(bp.replayed_config(workdir))]  # fmt: skip
    command = [sys.executable, str(Path(__file__).resolve()), *serve, *argv] if serve else [*bp.authmw_command(), *argv]
    return bp.Server(f"authmw proxy ({name})", command, env, port, "0", workdir / f"proxy-{name}.log")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    variants = args.variants
    world = bp.build_world(workdir)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "BENCH_"))}
    store_env = {**base, **world.environ}
    ports = {name: bp.free_port() for name in (*variants, "upstream")}
    if args.body_kib:
        upstream = bp.uvicorn_server("upstream", "bare_app", ports["upstream"], "1", base, workdir / "upstream.log")
        upstream.command[upstream.command.index("bench_pipeline:bare_app")] = "bench_proxy:large_app"
        upstream.env = {**base, "BENCH_BODY_KIB": str(args.body_kib)}
    else:
        upstream = bp.uvicorn_server("upstream", "bare_app", ports["upstream"], "1", base, workdir / "upstream.log")
    servers = {"upstream": upstream}
    for name in variants:
        env = store_env
        if name == "baseline":  # another checkout's authmw, first on the path (before this one's editable install)
            env = {
                **store_env,
                "PYTHONPATH": os.pathsep.join([str(args.baseline_src), store_env.get("PYTHONPATH", "")]),
            }
        servers[name] = proxy_server(name, workdir, ports["upstream"], ports[name], env)
    load = bp.Load(args.connections)
    runs: dict[str, list[bp.LoadRun]] = {name: [] for name in variants}
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        group = bp.Servers(servers, {n: ports[n] for n in variants}, {n: [n] for n in variants}, "split")
        if not args.body_kib:
            for name in variants:
                bp.probe(ports[name], world.path, bp.signed_headers(world))
        for name in variants:
            print(f"  warm-up: {name}", file=sys.stderr, flush=True)
            bp.run_wrk(group, name, load, args.warmup, world, workdir, "split")
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else variants[::-1]  # neither always runs after the other
            for name in order:
                print(f"  wrk {name}, round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
                runs[name].append(bp.run_wrk(group, name, load, args.duration, world, workdir, "split"))
    finally:
        for server in servers.values():
            server.stop()
    out: dict[str, Any] = {"connections": args.connections, "duration_s": args.duration, "rounds": args.rounds,
                           "body_kib": args.body_kib, "variants": {}}  # fmt: skip
    for name in variants:
        done = runs[name]
        out["variants"][name] = {
            "cpu_us_per_request": statistics.median(r.cpu_us_per_request(name) for r in done),
            "cpu_us_each_run": [round(r.cpu_us_per_request(name), 1) for r in done],
            "rps": statistics.median(r.rps for r in done),
            "p50_ms": statistics.median(r.p50_ms for r in done),
            "p99_ms": statistics.median(r.p99_ms for r in done),
            "errors": sum(r.errors for r in done),
        }
    return out


def report(out: dict[str, Any], load: tuple[float, float, float], end: tuple[float, float, float]) -> str:
    client, old = out["variants"]["client"], out["variants"]["httpx"]
    rows = [
        f"wrk → authmw proxy → bare uvicorn app, {out['connections']} connections, {out['rounds']} interleaved "
        f"rounds of {out['duration_s']:g} s per variant, proxy on CPU 0, wrk + upstream on CPU 1"
        + (f", {out['body_kib']} KiB responses" if out["body_kib"] else ", the bare app's small JSON answer"),
        f"load average at start {load[0]:.2f}, at end {end[0]:.2f}",
        "",
        "| variant | proxy CPU µs/request | req/s | p50 ms | p99 ms | errors | CPU µs each run |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, v in out["variants"].items():
        rows.append(
            f"| {name} | {v['cpu_us_per_request']:.0f} | {v['rps']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
            f"{v['errors']} | {', '.join(f'{x:.0f}' for x in v['cpu_us_each_run'])} |"
        )
    rows.append("")
    for name, v in out["variants"].items():
        if name != "httpx":
            rows.append(
                f"{name}: httpx / {name} CPU per request {old['cpu_us_per_request'] / v['cpu_us_per_request']:.2f}×, "
                f"req/s {name} / httpx {v['rps'] / old['rps']:.2f}×"
            )
    met = client["cpu_us_per_request"] <= TARGET_US
    rows.append(
        f"target ≤ {TARGET_US:.0f} µs of proxy CPU per request (client): {'met' if met else 'missed'} "
        f"({client['cpu_us_per_request']:.0f} µs, {client['cpu_us_per_request'] - TARGET_US:+.0f} µs)"
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--serve-variant"]:  # internal: a variant's proxy process
        return serve_variant(argv[1], argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="wrk runs per variant, interleaved (default 5)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk warm-up per variant (default 3)")
    parser.add_argument("--connections", type=int, default=bp.TARGET_CONNECTIONS, help="wrk connections (32)")
    parser.add_argument("--body-kib", type=int, default=0, help="upstream answer size in KiB (0: the small JSON)")
    parser.add_argument("--uvloop", action="store_true", help="also the client with the proxy on uvloop")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        metavar="DIR",
        help="also the proxy of another checkout's src/ (e.g. `git archive ac04f08 src | tar -x -C /tmp/base` "
        "and /tmp/base/src): the whole previous proxy, not only its transport",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    args.variants = (
        *VARIANTS,
        *(["client+uvloop"] if args.uvloop else []),
        *(["baseline"] if args.baseline_src else []),
    )
    if len(os.sched_getaffinity(0)) < 2:
        parser.error("needs 2 CPUs (the proxy on one, wrk and the upstream on the other)")
    start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="authmw-bench-proxy-") as tmp:
        out = run(args, Path(tmp))
    text = report(out, start, os.getloadavg())
    print(text)
    if args.json:
        args.json.write_text(json.dumps({**out, "load_average": [start, os.getloadavg()]}, indent=2))
    return 1 if args.check and out["variants"]["client"]["cpu_us_per_request"] > TARGET_US else 0


if __name__ == "__main__":
    sys.exit(main())
