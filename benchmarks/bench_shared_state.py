"""What the Redis replay window adds to ``Guard.check``, against the in-process window, interleaved in one run.

Each of N distinct signed requests is checked by a guard whose replay window is in the process (``ReplayGuard``)
and by one whose window is in Redis (``RedisState``: one round-trip running one Lua script), alternating which goes
first; the per-pair difference is the added latency (p50 and p99), robust on a busy machine. The bare ``remember``
calls are timed the same way.

    python benchmarks/bench_shared_state.py [--requests 5000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pipeline as bp
from authmw.assembly import open_guard
from authmw.models import Request
from authmw.settings import Settings
from authmw.signing import ReplayGuard, sign_request
from authmw.store.redisstate import RedisState


def _quantiles(values: list[int]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) / 1000, ordered[int(0.99 * (len(ordered) - 1))] / 1000


def _paired(n: int, local: object, shared: object, run: object) -> tuple[list[int], list[int]]:
    clock = time.perf_counter_ns
    t_local: list[int] = []
    t_shared: list[int] = []
    gc.disable()
    for i in range(n):
        first, second = (local, shared) if i % 2 else (shared, local)
        a = clock()
        run(first, i)  # type: ignore[operator]
        b = clock()
        run(second, i)  # type: ignore[operator]
        c = clock()
        (t_local, t_shared)[first is shared].append(b - a)
        (t_local, t_shared)[second is shared].append(c - b)
    gc.enable()
    return t_local, t_shared


def _report(what: str, t_local: list[int], t_shared: list[int]) -> None:
    (l50, l99), (s50, s99) = _quantiles(t_local), _quantiles(t_shared)
    added = [b - a for a, b in zip(t_local, t_shared, strict=True)]
    a50, a99 = _quantiles(added)
    print(f"{what}: in-process p50 {l50:.1f} µs p99 {l99:.1f} µs | Redis p50 {s50:.1f} µs p99 {s99:.1f} µs")
    print(f"{what}: added by Redis (per-pair difference) p50 {a50:.1f} µs p99 {a99:.1f} µs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5_000, help="distinct signed requests (default 5,000)")
    parser.add_argument("--redis", default=os.environ.get("AUTHMW_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    n, prefix = args.requests, f"authmw-bench-{os.urandom(4).hex()}:"
    state = RedisState(args.redis, prefix=prefix)
    try:
        with tempfile.TemporaryDirectory() as tmp, bp.world_and_guard(Path(tmp)) as (world, _guard, store):
            local = open_guard(store, config=Settings())
            shared = open_guard(store, config=Settings(shared_state=args.redis, shared_state_prefix=prefix))
            pool: list[Request] = []
            for i in range(n + 100):
                headers = {"Content-Type": "application/json", "X-Project-Id": world.project, "X-Nonce": f"{i:08x}"}
                url = f"http://{bp.HOST}{world.path}"
                signed = sign_request("GET", url, headers, b"", access_key=world.access, secret_key=world.secret)
                pool.append(Request.build("GET", world.path, list(signed.headers.items()), b""))
            for i in range(50):  # warm both guards' caches and connections with requests not timed
                local.check(pool[n + i])
                shared.check(pool[n + 50 + i])
            t_local, t_shared = _paired(n, local, shared, lambda guard, i: guard.check(pool[i]))
            _report(f"Guard.check ({n} requests)", t_local, t_shared)

            replay, now = ReplayGuard(), time.time()
            fingerprints = [os.urandom(16) for _ in range(n)]

            def remember(window: object, i: int) -> None:
                window.remember(fingerprints[i], now + 900, "user")  # type: ignore[attr-defined]

            t_local, t_shared = _paired(n, replay, state, remember)
            _report(f"remember alone ({n} calls)", t_local, t_shared)
    finally:
        import redis

        client = redis.Redis.from_url(args.redis)
        for name in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(name)
        state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
