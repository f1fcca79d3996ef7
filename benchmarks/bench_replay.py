"""What replay protection costs ``Guard.check``, measured per request and paired (robust on a busy machine).

Each of N distinct signed requests (a signed ``X-Nonce`` each, as real traffic is distinct) is checked by a guard
without replay protection and by one with it (its ``ReplayGuard`` already holding 100,000 requests of 1,000 other
users spread over the window), alternating which goes first. Batch medians swing with the machine; the median of
per-pair differences does not.

    python benchmarks/bench_replay.py [--requests 30000]
"""

from __future__ import annotations

import argparse
import gc
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

HELD = 100_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30_000, help="distinct signed requests (default 30,000)")
    n = parser.parse_args().requests
    with tempfile.TemporaryDirectory() as tmp, bp.world_and_guard(Path(tmp)) as (world, _guard, store):
        off = open_guard(store, config=Settings(replay_protection=False))
        on = open_guard(store, config=Settings())
        replay = ReplayGuard()
        now = time.time()
        for i in range(HELD):
            replay.remember(i.to_bytes(16, "big"), now + 1 + i % 900, f"user-{i % 1000}")
        on.verifier.replay_guard = replay
        pool = []
        for i in range(n):
            headers = {"Content-Type": "application/json", "X-Project-Id": world.project, "X-Nonce": f"{i:08x}"}
            url = f"http://{bp.HOST}{world.path}"
            signed = sign_request("GET", url, headers, b"", access_key=world.access, secret_key=world.secret)
            pool.append(Request.build("GET", world.path, list(signed.headers.items()), b""))
        for request in pool[:200]:  # warm the caches of both guards' shared store
            off.check(request)
        t_off, t_on = [], []
        clock = time.perf_counter_ns
        gc.disable()
        for i, request in enumerate(pool):
            first, second = (off, on) if i % 2 else (on, off)
            a = clock()
            first.check(request)
            b = clock()
            second.check(request)
            c = clock()
            (t_off, t_on)[first is on].append(b - a)
            (t_off, t_on)[second is on].append(c - b)
        gc.enable()
    off_median, on_median = statistics.median(t_off) / 1000, statistics.median(t_on) / 1000
    difference = statistics.median(b - a for a, b in zip(t_off, t_on, strict=True)) / 1000
    print(f"{n} distinct requests, the replay guard held {len(replay):,} at the end")
    print(f"Guard.check, replay protection off: median {off_median:.2f} µs")
    print(f"Guard.check, replay protection on ({HELD:,} held): median {on_median:.2f} µs")
    print(f"median per-pair difference: {difference:.2f} µs = {difference / off_median:.1%} of the off median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
