"""``authmw proxy`` as a real process over the world's store, in front of an echo upstream whose ``/slow`` paths
take 1.5 s (tests/pipeline/test_proxy_ops.py and the other tests of the running proxy)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port, serve_asgi
from tests.support.world import World, echo_asgi

# Set when a ``/slow`` request reaches the upstream: it is in flight at the proxy (clear it before sending one).
SLOW_ARRIVED = threading.Event()


async def slow_upstream(scope: Any, receive: Any, send: Any) -> None:
    """Echo, but ``/slow`` paths take 1.5 s (a request in flight during shutdown)."""
    if scope["type"] == "http" and scope["path"].endswith("/slow"):
        SLOW_ARRIVED.set()
        await asyncio.sleep(1.5)
    await echo_asgi(scope, receive, send)


@contextlib.contextmanager
def proxy_process(
    world: World, tmp_path: Path, config: str, *extra: str
) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    config_file = tmp_path / "proxy.yaml"
    config_file.write_text(config)
    audit = tmp_path / "audit.log"
    port = free_port()
    env = {**os.environ, "AUTHMW_STORE": world.url, "AUTHMW_MASTER_KEY_FILE": world.key_file}
    with serve_asgi(slow_upstream) as upstream:
        command = [sys.executable, "-m", "authmw", "proxy", "--upstream", upstream, "--listen", f"127.0.0.1:{port}",
                   "--config", str(config_file), "--audit-log", str(audit), *extra]  # fmt: skip
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/healthz").status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"proxy did not start: {process.communicate()[1][-2000:]}")
                time.sleep(0.05)
            yield process, url, audit
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
