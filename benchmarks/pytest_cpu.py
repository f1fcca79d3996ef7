"""Where the test suite's time goes: CPU and wall per test, for making `make test` faster where it counts.

As a pytest plugin it appends one JSON line per test to ``$AUTHMW_TEST_CPU_DIR/cpu-<pid>.jsonl`` (one file per xdist
worker): the node id, the worker's own CPU seconds, its waited-for children's CPU seconds and the wall seconds. As a
script it sums them per file, largest CPU first::

    mkdir -p /tmp/cpu && AUTHMW_TEST_CPU_DIR=/tmp/cpu PYTHONPATH=benchmarks \\
        .venv/bin/python -m pytest -q -n 4 --dist worksteal -p pytest_cpu
    .venv/bin/python benchmarks/pytest_cpu.py /tmp/cpu

Children count once waited for (a server the test stops, a CLI run); servers outliving the test, PostgreSQL and
Redis do not.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    own, children, wall = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), time.monotonic()
    yield
    row = [item.nodeid, _cpu(resource.RUSAGE_SELF) - own, _cpu(resource.RUSAGE_CHILDREN) - children]
    path = Path(os.environ["AUTHMW_TEST_CPU_DIR"]) / f"cpu-{os.getpid()}.jsonl"
    with path.open("a") as out:
        out.write(json.dumps([*row, time.monotonic() - wall]) + "\n")


def main(directory: str) -> None:
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    for path in Path(directory).glob("cpu-*.jsonl"):
        for line in path.read_text().splitlines():
            nodeid, own, children, wall = json.loads(line)
            total: list[Any] = files[nodeid.split("::")[0]]
            total[0] += own
            total[1] += children
            total[2] += wall
            total[3] += 1
    print(f"{'own CPU':>8} {'children':>8} {'wall':>7} {'tests':>6}  file")
    for name, (own, children, wall, count) in sorted(files.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        print(f"{own:8.1f} {children:8.1f} {wall:7.1f} {count:6d}  {name}")
    own, children, wall = (sum(total[i] for total in files.values()) for i in range(3))
    print(f"{own:8.1f} {children:8.1f} {wall:7.1f} {'':6}  (all)")


if __name__ == "__main__":
    main(sys.argv[1])
