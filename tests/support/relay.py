"""A TCP relay a test puts between a proxy and its database, to stop or blackhole the database on demand."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Literal

State = Literal["up", "down", "blackhole"]


class Relay:
    """Forwards ``127.0.0.1:port`` to ``target`` while ``up``. ``down``: every connection is closed and new ones
    are closed at once (a stopped server). ``blackhole``: connections are accepted and bytes read, but nothing is
    forwarded either way (a network that drops packets; the kernel still acknowledges, so TCP keepalive cannot
    tell). Back ``up``, held bytes flow again and the connections accepted meanwhile are closed."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._state: State = "up"
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._open: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def set(self, state: State) -> None:
        self._loop.call_soon_threadsafe(self._set, state)

    def _set(self, state: State) -> None:
        self._state = state
        if state == "up":
            self._flowing.set()
            self._close(self._held)
        else:
            self._flowing.clear()
            if state == "down":
                self._close(self._open | self._held)

    @staticmethod
    def _close(writers: set[asyncio.StreamWriter]) -> None:
        for writer in list(writers):
            writer.close()
        writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._state == "down":
            writer.close()
            return
        if self._state == "blackhole":
            self._held.add(writer)
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._open |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        writer.close()
        self._open.discard(writer)

    def stop(self) -> None:
        """Close every connection, end every task, then the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._close(self._open | self._held)
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def relay_to(host: str, port: int) -> Iterator[Relay]:
    relay = Relay((host, port))
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()
