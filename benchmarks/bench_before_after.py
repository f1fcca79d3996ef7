"""Two source trees of authmw in one process, timed interleaved: what a change did to the in-process forms.

Each tree is imported under the same name in turn (``sys.modules`` emptied of ``authmw`` in between), and its guard
and middlewares built; their functions keep their own modules, so both run side by side in one loop. Every round
times one batch of each case of each tree (thread CPU time, GC off inside a batch); the report gives medians and
the before ÷ after ratio. The workload is ``bench_pipeline``'s (an SDK-HMAC-SHA256 signed GET, allowed).

    git archive <before> src benchmarks | tar -x -C /tmp/before
    python benchmarks/bench_before_after.py /tmp/before/src src [--rounds 21] [--ops 1500]

Each tree's own ``benchmarks/bench_pipeline.py`` builds its world and cases when the tree has one (the workload is
the same in every version), so a tree from before an API change can be compared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)
_OURS = ("authmw", "bench_pipeline", "bench_signing", "bench_store")


def _load(src: str) -> Any:
    """``bench_pipeline`` over ``src``: the tree's own (``src/../benchmarks``) when it has one, else this one's.

    A tree from before the restructuring of issue 13 spells two things otherwise: ``request_from_scope`` lived in
    ``authmw.asgi``, and guards were built by ``build_guard(settings, store=)``; both are mapped here."""
    for name in [m for m in sys.modules if m.split(".")[0] in _OURS]:
        del sys.modules[name]
    own = Path(src).resolve().parent / "benchmarks"
    helpers = str(own) if (own / "bench_pipeline.py").is_file() else HERE
    sys.path[:] = [src, helpers, *[p for p in sys.path if p not in (src, helpers, HERE)]]
    module = importlib.import_module("bench_pipeline")
    if not hasattr(module, "admission"):
        module.admission = module.asgi
    if not hasattr(module, "open_guard"):
        build_guard = importlib.import_module("authmw.assembly").build_guard
        module.open_guard = lambda store, *, config: build_guard(config, store=store)
    assert module.admission.__file__.startswith(str(Path(src).resolve())), module.admission.__file__
    return module


def cases(bp: Any, world: Any, loop: asyncio.AbstractEventLoop) -> dict[str, tuple[Callable[[int], None], bool]]:
    """name -> (batch of n, audit on?)"""
    store = bp.open_store(world.url, environ=world.environ)
    guard = bp.open_guard(store, config=bp.REPLAYED)
    headers = bp.signed_headers(world)
    scope, environ = bp.http_scope(world.path, headers), bp.wsgi_environ(world.path, headers)
    request = bp.admission.request_from_scope(scope, b"")
    assert guard.check(request).decision.allowed

    def asgi(app: Any) -> Callable[[int], None]:
        bp.check_asgi(app, scope)

        async def batch(n: int) -> None:
            for _ in repeat(None, n):
                await app(dict(scope), bp._receive, bp._send)

        return lambda n: loop.run_until_complete(batch(n))

    def wsgi(app: Any) -> Callable[[int], None]:
        bp.check_wsgi(app, environ)

        def run(n: int) -> None:
            for _ in repeat(None, n):
                for _chunk in app(dict(environ), bp._start_response):
                    pass

        return run

    def check(n: int) -> None:
        for _ in repeat(None, n):
            guard.check(request)

    raw = bp.asgi.AuthMiddleware(bp.raw_asgi_app, guard=guard)
    star = bp.asgi.AuthMiddleware(bp.starlette_app(), guard=guard)
    plain = bp.wsgi.AuthMiddleware(bp.plain_wsgi_app, guard=guard)
    return {
        "Guard.check": (check, False),
        "raw ASGI app + AuthMiddleware, audit off": (asgi(raw), False),
        "raw ASGI app + AuthMiddleware, audit on": (asgi(raw), True),
        "Starlette app + AuthMiddleware, audit off": (asgi(star), False),
        "plain WSGI app + AuthMiddleware, audit off": (wsgi(plain), False),
        "plain WSGI app + AuthMiddleware, audit on": (wsgi(plain), True),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="the src directory of the tree before")
    parser.add_argument("after", help="the src directory of the tree after")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--ops", type=int, default=1500, help="operations per batch")
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    timed: dict[str, dict[str, list[float]]] = {}
    batches: dict[str, dict[str, tuple[Callable[[int], None], bool]]] = {}
    audits: dict[str, Callable[[str | None], None]] = {}
    with tempfile.TemporaryDirectory(prefix="authmw-bench-ab-") as tmp:
        for label, src in (("before", args.before), ("after", args.after)):
            bp = _load(src)
            # Each tree builds its own store (the same world): the trees' schema versions may differ.
            (Path(tmp) / label).mkdir()
            world = bp.build_world(Path(tmp) / label)
            batches[label] = cases(bp, world, loop)
            audits[label] = bp.audit_to
            timed[label] = {name: [] for name in batches[label]}
        for round_ in range(args.rounds):
            order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for name in batches["before"]:
                for label in order:
                    run, audited = batches[label][name]
                    audits[label](os.devnull if audited else None)
                    gc.collect()
                    gc.disable()
                    start = time.thread_time_ns()
                    run(args.ops)
                    elapsed = time.thread_time_ns() - start
                    gc.enable()
                    timed[label][name].append(elapsed / args.ops / 1000)
                    audits[label](None)
    print(f"\n{args.rounds} rounds × {args.ops} operations, thread CPU time, medians (µs); load {os.getloadavg()}\n")
    print("| case | before µs | after µs | before ÷ after |\n|---|---:|---:|---:|")
    for name in timed["before"]:
        before, after = statistics.median(timed["before"][name]), statistics.median(timed["after"][name])
        print(f"| {name} | {before:.2f} | {after:.2f} | {before / after:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
