"""The README's quick start run as written, in a fresh directory: its shell blocks
through bash with the real ``authmw`` command, its apps under real uvicorn, ``flask run`` and ``authmw proxy``
processes, and its Python block as a separate process whose output must be the one the snippet shows.

The blocks are found by their first line (``# store``, ``# fastapi``, ...); only the port changes (a free one
instead of 8000/9000), and the install block is skipped (the test environment has everything installed).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
README = (ROOT / "README.md").read_text()
SNIPPET = README[README.index("## Quick start") : README.index("\n## ", README.index("## Quick start") + 1)]
FENCED = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shell_blocks() -> dict[str, str]:
    """The ``bash`` blocks by the name on their first line (``# store`` → ``store``)."""
    found = {}
    for kind, body in FENCED.findall(SNIPPET):
        if kind == "bash":
            name, _, rest = body.partition("\n")
            found[name.removeprefix("# ")] = rest
    return found


def block(kind: str) -> str:
    """The one block of a kind (``python``, ``text``)."""
    (body,) = [body for found, body in FENCED.findall(SNIPPET) if found == kind and "protect(app)" not in body]
    return body


SHELL = shell_blocks()
EXPORT = next(line for line in SHELL["store"].splitlines() if line.startswith("export AUTHMW_STORE="))


def environment() -> dict[str, str]:
    """A user's shell: the venv's commands on PATH, this checkout's authmw importable, no AUTHMW_* inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHMW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh directory with the example apps and the store the snippet's ``# store`` block makes."""
    where = tmp_path_factory.mktemp("quickstart")
    for app in ("fastapi_app.py", "flask_app.py"):
        shutil.copy(QUICKSTART / app, where / app)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", SHELL["store"]],
        cwd=where,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "secret" not in done.stdout  # the keys went to their files
    return where


@contextlib.contextmanager
def running(script: str, where: Path, *ports: int) -> Iterator[None]:
    """Run a shell block (the store's ``export`` line first, as in the user's terminal) until each of ``ports``
    answers; stop its whole process group after."""
    process = subprocess.Popen(
        ["bash", "-c", f"{EXPORT}\n{script}"],
        cwd=where,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the block's background jobs stop with it
    )
    try:
        deadline = time.monotonic() + 20
        waiting = list(ports)
        while waiting:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2):
                waiting.pop(0)
                continue
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{script!r} did not serve port {waiting[0]}:\n{process.communicate()[0]}")
            time.sleep(0.05)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def call(where: Path, port: int, reports: str = "/reports") -> list[str]:
    """The snippet's Python block against ``port``: the lines it prints."""
    code = block("python").replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
    code = code.replace('"/reports"', repr(reports))
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=where,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["fastapi", "flask"])
def test_the_quickstart_app_answers_as_the_snippet_shows(directory: Path, framework: str) -> None:
    port = free_port()
    with running(SHELL[framework].replace("8000", str(port)), directory, port):
        printed = call(directory, port)
    assert printed == block("text").splitlines()


def test_the_quickstart_sidecar_answers_as_the_snippet_shows(directory: Path) -> None:
    port, upstream = free_port(), free_port()
    script = SHELL["sidecar"].replace("8000", str(port)).replace("9000", str(upstream))
    with running(script, directory, upstream, port):
        printed = call(directory, port, reports="/reports.json")
    assert printed[:3] == block("text").splitlines()[:3]  # alice 200, unsigned 401, bob 403
