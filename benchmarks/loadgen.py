"""A fixed-rate (open-loop) HTTP/1.1 load generator, wrk2-style, for latency at a given offered load.

The installed wrk (4.1) has no ``-R``: it sends as fast as the server answers (closed loop), or with a ``delay()``
pause that still waits for each answer, so a slow answer delays the requests behind it and its cost is never
counted (coordinated omission). Here each of ``--connections`` keep-alive connections owns an even share of the
rate: connection k sends its i-th request at ``t0 + (k / C + i) · C / R`` (evenly spaced, staggered). A request is
timed from its scheduled instant when its connection was still busy then (the wait a client would have seen), else
from when it was actually written (the loop's timer is late by up to a millisecond, which is not the server's). So
a stall shows up in the percentiles as the queue it builds. Requests are prebuilt bytes; the response is read by
its ``Content-Length``; anything but a 200 is counted as an error. Prints one JSON line.

    python benchmarks/loadgen.py --port 8080 --rate 2000 --duration 10 --connections 32 --request-file REQ
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for its whole response, report the status."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._complete()

    def connection_lost(self, _exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    def _complete(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at)
            length = int(head[at + 15 : stop if stop > 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buffer[: end + 4 + length]
        self.waiter.set_result(status)

    async def exchange(self, request: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


async def _run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    request = Path(args.request_file).read_bytes()
    connections = []
    for _ in range(args.connections):
        _transport, protocol = await loop.create_connection(_Connection, "127.0.0.1", args.port)
        connections.append(protocol)
    for protocol in connections:  # one round trip each before the clock starts
        await protocol.exchange(request)
    interval = args.connections / args.rate
    per_connection = int(args.duration * args.rate / args.connections)
    latencies: list[float] = []
    errors = [0]
    late = [0]
    t0 = time.perf_counter() + 0.05

    async def drive(k: int, protocol: _Connection) -> None:
        busy_until = 0.0
        for i in range(per_connection):
            due = t0 + (k / args.connections + i) * interval
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            sent = time.perf_counter()
            start = due if busy_until > due else sent  # busy at its instant: the wait counts
            if busy_until > due:
                late[0] += 1
            status = await protocol.exchange(request)
            busy_until = time.perf_counter()
            latencies.append(busy_until - start)
            if status != 200:
                errors[0] += 1

    begin = time.perf_counter()
    await asyncio.gather(*(drive(k, c) for k, c in enumerate(connections)))
    elapsed = time.perf_counter() - begin
    for protocol in connections:
        assert protocol.transport is not None
        protocol.transport.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] * 1e6

    return {
        "requests": len(latencies),
        "offered_rps": args.rate,
        "achieved_rps": len(latencies) / elapsed,
        "errors": errors[0],
        "sent_behind_schedule": late[0],
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "p999_us": pct(99.9),
        "max_us": latencies[-1] * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second in all")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--request-file", required=True, help="the raw HTTP/1.1 request to send, as bytes")
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(_run(args))
    print("LOADGEN-JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
