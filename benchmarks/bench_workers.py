"""``authmw proxy --workers 1`` against ``--workers 2`` on this machine (issue 16), interleaved in one run.

Layer: full proxy. Both proxies run with ``--shared-state redis://127.0.0.1:6379/0`` (as ``--workers 2`` requires,
so the two compare like for like) and with replay protection on, as deployed: every request wrk sends is signed
afresh (a nonce each), so each one costs the Redis replay check it costs in production, and none is refused as a
replay. The requests are signed before each run (not timed) and handed to wrk in a file its Lua script reads; each
wrk thread takes every other one. The upstream is bench_envoy's bare app (a raw ASGI app under uvicorn, uvloop,
httptools). wrk -t2 -c32, ``--duration`` s per run, the two configurations alternated over ``--rounds`` rounds.

Reported: req/s, p50/p99, and the CPU per request of the proxy (all its processes: the parent and its workers), the
upstream, Redis and wrk itself. Nothing is pinned by default: ``--workers 2`` is meant to use both CPUs, and pinning
``--workers 1`` alone would compare two different machines. On 2 CPUs shared by wrk, the upstream, Redis and the
proxy the second worker cannot double the throughput: what it can add is bounded by the CPU the rest of the path
leaves (the table's CPU columns show how much that is).

    python benchmarks/bench_workers.py [--duration 10] [--rounds 3] [--redis redis://127.0.0.1:6379/0] [--json PATH]
    python benchmarks/bench_workers.py --quick     # a smoke run: 3 s runs, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_envoy as be
import bench_pipeline as bp
from authmw.signing import sign_request

CONNECTIONS = 32
WORKERS = (1, 2)

_LUA = """\
local threads = 0
local all = {}
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
  table.insert(all, thread)
end
refused = {}
function response(status, headers, body)
  if status ~= 200 then refused[status] = (refused[status] or 0) + 1 end
end
local requests = {}
local at = 0
function init(args)
  local file = io.open("REQUESTS", "rb")
  local data = file:read("*a")
  file:close()
  local start, n = 1, 0
  while true do
    local stop = string.find(data, "\\0", start, true)
    if not stop then break end
    if n % THREADS == tid then requests[#requests + 1] = string.sub(data, start, stop - 1) end
    n = n + 1
    start = stop + 1
  end
end
function request()
  at = at + 1
  if at > #requests then at = 1 end  -- a replay from here on: refused, and counted as an error
  return requests[at]
end
function done(summary, latency, requests)
  local e = summary.errors
  local counts = {}
  for _, thread in ipairs(all) do
    for status, n in pairs(thread:get("refused")) do counts[status] = (counts[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(counts) do parts[#parts + 1] = string.format('"%d":%d', status, n) end
  io.write('BENCH-STATUS {' .. table.concat(parts, ",") .. '}\\n')
  io.write(string.format(
    'BENCH-JSON {"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,' ..
    '"timeout":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def signed_requests(world: bp.World, count: int, path: Path) -> Path:
    """``count`` distinct signed GETs (an ``X-Nonce`` each), raw, NUL-separated, for the Lua script."""
    with path.open("wb") as out:
        for _ in range(count):
            signed = sign_request(
                "GET",
                f"http://{bp.HOST}{world.path}",
                {"Content-Type": "application/json", "X-Project-Id": world.project, "X-Nonce": os.urandom(12).hex()},
                b"",
                access_key=world.access,
                secret_key=world.secret,
            )
            lines = [f"GET {world.path} HTTP/1.1", *(f"{k}: {v}" for k, v in signed.headers.items())]
            out.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + b"\0")
    return path


def process_cpu(pid: int, *, with_children: bool = False) -> float:
    """utime + stime of ``pid`` (and of its live children) in seconds, from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(") ")[2].split()
        except OSError:
            continue
        this = int(stat.parent.name)
        if this == pid or (with_children and int(fields[1]) == pid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def redis_pid() -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().partition(" (")[2].startswith("redis-server)"):
                return int(stat.parent.name)
        except OSError:
            continue
    return None


def run(
    port: int, proxy: bp.Server, upstream: bp.Server, world: bp.World, workdir: Path, duration: float, count: int
) -> dict[str, Any]:
    requests = signed_requests(world, count, workdir / "requests.bin")
    script = workdir / "distinct.lua"
    script.write_text(_LUA.replace("REQUESTS", str(requests)).replace("THREADS", "2"))
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency", "-s", str(script)]
    command.append(f"http://127.0.0.1:{port}{world.path}")
    assert proxy.process is not None and upstream.process is not None
    redis = redis_pid()
    watched = {
        "proxy": lambda: process_cpu(proxy.process.pid, with_children=True),  # type: ignore[union-attr]
        "upstream": upstream.cpu_seconds,
        "redis": (lambda: process_cpu(redis)) if redis else (lambda: 0.0),
    }
    before = {name: read() for name, read in watched.items()}
    started = os.times()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    ended = os.times()
    cpu = {name: read() - before[name] for name, read in watched.items()}
    cpu["wrk"] = (ended.children_user + ended.children_system) - (started.children_user + started.children_system)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    data = json.loads(line.removeprefix("BENCH-JSON "))
    statuses = next((x for x in done.stdout.splitlines() if x.startswith("BENCH-STATUS ")), "BENCH-STATUS {}")
    data["refused"] = json.loads(statuses.removeprefix("BENCH-STATUS "))  # status -> count, other than 200
    data["cpu"] = cpu
    data["signed"] = count
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    data["errors"] = sum(int(data[k]) for k in ("connect", "read", "write", "status", "timeout"))
    return data


def refused(runs: list[dict[str, Any]]) -> str:
    """The statuses other than 200, summed over ``runs``: ``(503: 12)``, or nothing."""
    counts: dict[str, int] = {}
    for r in runs:
        for status, n in r["refused"].items():
            counts[status] = counts.get(status, 0) + n
    return f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})" if counts else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the shared state both proxies use")
    parser.add_argument(
        "--redis-timeout", type=int, default=1000, metavar="MS", help="shared_state_timeout of both proxies (1000)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw results as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s runs, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 3.0, 1
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    found = be.facts()
    quietness = bp.Quietness()
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKERS}
    with tempfile.TemporaryDirectory(prefix="authmw-bench-workers-") as tmp:
        workdir = Path(tmp)
        world = bp.build_world(workdir)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "BENCH_"))}
        up_port = bp.free_port()
        upstream = be.uvicorn_app("bare app", up_port, None, base, workdir / "app.log")
        config = workdir / "proxy.yaml"
        config.write_text(
            f"shared_state_prefix: 'authmw-bench-{os.getpid()}:'\n"  # keys of its own in a shared Redis
            # A loaded machine's Redis answers late: counted as slow, not refused (the default, 50 ms, refuses
            # with 503 shared_state_unavailable, fail closed, which would measure refusals).
            f"shared_state_timeout: {args.redis_timeout}\n"
        )
        proxies = {}
        for n in WORKERS:
            port = bp.free_port()
            command = [*bp.authmw_command(), "proxy", "--workers", str(n), "--shared-state", args.redis,
                       "--upstream", f"http://127.0.0.1:{up_port}", "--listen", f"127.0.0.1:{port}",
                       "--audit-log", os.devnull, "--config", str(config)]  # fmt: skip
            proxies[n] = bp.Server(f"proxy --workers {n}", command, {**base, **world.environ}, port, None,
                                   workdir / f"proxy{n}.log")  # fmt: skip
        servers = [upstream, *proxies.values()]
        try:
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready()
            time.sleep(1.0)  # --workers 2: both workers up
            rate = 4000.0  # req/s to sign for, raised to what a run reached
            for n, proxy in proxies.items():
                be.probe(proxy.port, world)
                print(f"  warm-up: --workers {n}", file=sys.stderr, flush=True)
                run(proxy.port, proxy, upstream, world, workdir, 2.0, int(rate * 2.0))
            for round_ in range(args.rounds):
                for n in WORKERS if round_ % 2 == 0 else reversed(WORKERS):
                    proxy = proxies[n]
                    print(f"  wrk --workers {n}, round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
                    data = run(proxy.port, proxy, upstream, world, workdir, args.duration, int(rate * args.duration))
                    rate = max(rate, 1.5 * data["rps"])
                    results[n].append(data)
                    if data["errors"]:
                        print(f"  --workers {n}: {data['errors']} errors, refused {data['refused']}", file=sys.stderr)
        finally:
            for server in servers:
                server.stop()
        busy = quietness.busy_cpus()
    found["load_average_end"] = os.getloadavg()
    print(f"\n## authmw proxy --workers 1 against --workers 2 ({found['date']})\n")
    print(
        f"{found['cpu']} ×{found['cpu_count']}, Python {found['python'].split()[0]}; {found['wrk']}; tree "
        f"{found['commit']}. Not pinned. Load average (1 min) {found['load_average_start'][0]:.2f} → "
        f"{found['load_average_end'][0]:.2f}; other processes kept {busy if busy is None else f'{busy:.2f}'} CPUs "
        f"busy. wrk -t2 -c{CONNECTIONS} -d{args.duration:g}s, {args.rounds} interleaved rounds, distinct signed "
        f"requests (replay protection on, window in Redis, shared_state_timeout {args.redis_timeout} ms), medians.\n"
    )
    print("| proxy | req/s | p50 ms | p99 ms | CPU µs/req: proxy | upstream | Redis | wrk | CPUs busy | not 200 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in WORKERS:
        runs = results[n]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(float(r[key]) for r in runs)

        def cpu(name: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r["cpu"][name] / max(1, r["requests"]) * 1e6 for r in runs)

        busy_cpus = statistics.median(sum(r["cpu"].values()) / (r["duration_us"] / 1e6) for r in runs)
        rps = " / ".join(f"{r['rps']:,.0f}" for r in runs)
        print(
            f"| --workers {n} | {med('rps'):,.0f} ({rps}) | {med('p50_us') / 1000:.2f} | {med('p99_us') / 1000:.2f} | "
            f"{cpu('proxy'):.0f} | {cpu('upstream'):.0f} | {cpu('redis'):.0f} | {cpu('wrk'):.0f} | "
            f"{busy_cpus:.2f} | {sum(r['errors'] for r in runs)} {refused(runs)} |"
        )
    ratios = [b["rps"] / a["rps"] for a, b in zip(results[1], results[2], strict=True)]
    print(
        f"\n--workers 2 ÷ --workers 1, per round: {', '.join(f'{x:.2f}' for x in ratios)} "
        f"(median {statistics.median(ratios):.2f}×)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        facts = {k: (str(v) if isinstance(v, Path) else v) for k, v in found.items()}
        args.json.write_text(json.dumps({"facts": facts, "runs": results, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
