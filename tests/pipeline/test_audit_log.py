"""The audit log writer (issue 17): records leave the request's path, and none is lost or torn on the way: whole
lines in order, every record of a real ``authmw proxy`` stopped by SIGTERM, whole lines from forked workers
sharing one file, a slow or full sink that never blocks the caller and counts what it had to drop, rotation."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from authmw import audit, auditlog
from authmw.auditlog import AuditWriter
from authmw.signing import sign_request
from tests.support.forms import FORMS, running
from tests.support.proxy import SLOW_ARRIVED, proxy_process
from tests.support.world import World


@pytest.fixture(autouse=True)
def logger_afterwards() -> Iterator[None]:
    """Whatever a test installs, the next one finds records going to the authmw.audit logger."""
    yield
    auditlog.audit_to_logger()


def line(i: int, size: int = 0) -> str:
    return json.dumps({"n": i, "pad": "x" * size}, separators=(",", ":"))


def numbers(path: Path) -> list[int]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(row)["n"] for row in text.splitlines()]


def test_lines_are_written_whole_in_order_and_soon(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    writer = AuditWriter(str(path), every=0.05)
    try:
        writer.write(line(0))
        deadline = time.monotonic() + 5
        while numbers(path) != [0]:  # written by the thread, without a flush
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for i in range(1, 20_001):
            writer.write(line(i, i % 300))
    finally:
        writer.close()
    assert numbers(path) == list(range(20_001))
    assert writer.lost == 0
    writer.write(line(20_001))  # after close: written at once, not left waiting
    assert numbers(path)[-1] == 20_001
    assert oct(path.stat().st_mode & 0o777) == oct(0o640 & ~_umask())
    writer.release()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_slow_sink_never_blocks_the_caller_and_loss_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO nobody reads: the writer thread blocks in write(), the callers do not; beyond the capacity records
    are dropped, counted and warned of; once the reader drains the FIFO, what waited arrives whole."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = AuditWriter(str(fifo), capacity=1000, every=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="authmw"):
            started = time.perf_counter()
            for i in range(5000):
                writer.write(line(i, 500))  # 2.5 MB: far more than the pipe (64 KiB) and the capacity hold
                if i == 2000:
                    time.sleep(0.2)  # the thread takes a batch and blocks on the full pipe
            spent = time.perf_counter() - started
            assert spent < 2.0  # 5,000 appends; a blocking write would wait forever here
            assert 3000 <= writer.lost < 5000
            deadline = time.monotonic() + 5
            while not any("not keeping up" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "no warning of the loss"
                time.sleep(0.02)
        received = bytearray()
        closing = threading.Thread(target=writer.close)
        closing.start()
        while True:  # read until the writer is closed (all written) and the pipe is empty
            done = not closing.is_alive()
            try:
                received += os.read(reader, 1 << 16)
            except BlockingIOError:
                if done:
                    break
                time.sleep(0.005)
    finally:
        os.close(reader)
        writer.release()
    got = [json.loads(row)["n"] for row in received.decode().splitlines()]
    assert got == sorted(got) and len(got) + writer.lost == 5000  # whole lines, in order, each kept or counted


def test_a_hung_sink_cannot_hold_the_exit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = AuditWriter(str(fifo), every=0.01)
    try:
        for i in range(1000):
            writer.write(line(i, 500))  # more than the pipe holds: the thread blocks in write()
        time.sleep(0.2)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="authmw"):
            writer.close(timeout=0.5)
        assert time.monotonic() - started < 5
        assert any("still writing" in r.getMessage() for r in caplog.records)
    finally:
        os.close(reader)  # the blocked write fails (EPIPE): the thread ends
        writer.release()


def test_standard_error_redirected_to_a_file_is_never_reopened_by_name(tmp_path: Path) -> None:
    """``-`` is fd 2; when fd 2 is a file (a redirection), no file named ``-`` is ever created beside it."""
    script = "from authmw import auditlog\nw = auditlog.audit_to('-')\nw.write('{}')\nw.flush()\nw.write('{}')\n"
    with (tmp_path / "stderr.txt").open("w") as stderr:
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, stderr=stderr, timeout=60, check=False)
    assert done.returncode == 0
    assert (tmp_path / "stderr.txt").read_text() == "{}\n{}\n"
    assert not (tmp_path / "-").exists()


def test_a_full_disk_keeps_records_waiting_and_counts_what_overflows(caplog: pytest.LogCaptureFixture) -> None:
    writer = AuditWriter("/dev/full", capacity=100, every=0.01)  # every write: ENOSPC
    try:
        with caplog.at_level(logging.WARNING, logger="authmw"):
            for i in range(300):
                writer.write(line(i))
            writer.flush()
            assert writer.lost >= 100
            assert any("cannot write" in r.getMessage() and "ENOSPC" in r.getMessage() for r in caplog.records)
    finally:
        writer.close()
        writer.release()


def test_a_rotated_file_is_opened_again_under_its_name(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    writer = AuditWriter(str(path), every=0.01)
    try:
        for i in range(100):
            writer.write(line(i))
        writer.flush()
        path.rename(tmp_path / "audit.log.1")  # logrotate's default: rename, the writer follows the name
        for i in range(100, 200):
            writer.write(line(i))
        writer.flush()
        assert numbers(tmp_path / "audit.log.1") == list(range(100))
        assert numbers(path) == list(range(100, 200))
        path.unlink()  # removed: created again
        writer.write(line(200))
        writer.flush()
        assert numbers(path) == [200]
        os.truncate(path, 0)  # copytruncate: the next line lands at the start, whole
        writer.write(line(201))
        writer.flush()
        assert numbers(path) == [201]
    finally:
        writer.close()
        writer.release()


FORKED_WORKERS = """
import json, os, sys, threading
from authmw import auditlog

path, count = sys.argv[1], int(sys.argv[2])
writer = auditlog.audit_to(path)
writer.write(json.dumps({"who": "parent", "n": 0}))  # waiting in memory when the workers fork
children = []
for worker in range(2):
    pid = os.fork()
    if pid == 0:
        if not any(thread.name == "authmw-audit" for thread in threading.enumerate()):
            os._exit(3)  # the child has a writer thread of its own
        for n in range(count):  # lines of up to 20 KB: batches far larger than a pipe's atomic write
            writer.write(json.dumps({"who": worker, "n": n, "pad": "y" * (n * 7919 % 20_000)}))
        auditlog.close_audit()
        os._exit(0)  # as a proxy worker ends: no atexit, the writer was closed by hand
    children.append(pid)
for pid in children:
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
"""


def test_forked_workers_append_whole_lines_to_one_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    script = tmp_path / "workers.py"
    script.write_text(FORKED_WORKERS)
    done = subprocess.run([sys.executable, str(script), str(path), "2000"], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = path.read_text()
    assert text.endswith("\n")
    seen: dict[object, list[int]] = {"parent": [], 0: [], 1: []}
    for row in text.splitlines():
        record = json.loads(row)  # a torn or interleaved line would not parse
        seen[record["who"]].append(record["n"])
    assert seen == {"parent": [0], 0: list(range(2000)), 1: list(range(2000))}


REDIS = os.environ.get("AUTHMW_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _redis_up() -> bool:
    redis = pytest.importorskip("redis")
    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_each_record_of_a_proxy_stopped_by_sigterm_is_written(world: World, tmp_path: Path, workers: int) -> None:
    """Requests up to the signal (one of them in flight through it), then SIGTERM: the proxy drains, and every
    request has its line in the audit log as the process exits, none half-written; with two worker processes
    (each ends by os._exit, which runs no atexit) appending to the one file."""
    config, extra = "unmatched: authenticate-only\n", []
    if workers > 1:
        if not _redis_up():
            pytest.skip(f"--workers needs shared state: no Redis at {REDIS}")
        config += f"shared_state_prefix: 'authmw-test-{os.urandom(6).hex()}:'\n"
        extra = ["--workers", str(workers), "--shared-state", REDIS]
    with proxy_process(world, tmp_path, config, *extra) as (process, url, log):
        metrics = httpx.get(url + "/metrics").text
        assert "authmw_audit_records_lost 0.0" in metrics
        path = f"/v1/{world.project}/notebooks"
        key = world.scientist

        def signed(_: int) -> tuple[str, str | None]:
            """The request id and the outcome its record must have (none said when the loaded machine made the
            proxy answer 502 or 503 itself: the record is still required)."""
            request = sign_request("GET", url + path, {"X-Nonce": os.urandom(16).hex()}, b"", access_key=key.access,
                                   secret_key=key.secret)  # fmt: skip
            answer = httpx.get(request.url, headers=request.headers, timeout=30)
            if answer.status_code == 200:
                return str(answer.json()["headers"]["x-authmw-request-id"]), "allow"  # as the upstream was told
            assert answer.status_code in (502, 503), answer.text
            return answer.headers["x-authmw-request-id"], None

        def refused(_: int) -> tuple[str, str | None]:
            answer = httpx.get(url + path, timeout=30)
            assert answer.status_code == 401
            return answer.headers["x-authmw-request-id"], "deny"

        with ThreadPoolExecutor(8) as pool:  # a connection each: the kernel spreads them over the workers
            expected = dict(pool.map(signed, range(150))) | dict(pool.map(refused, range(149)))
        login = {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": "nobody", "password": "not the password", "domain": {"name": "default"}}}}}}  # fmt: skip
        answer = httpx.post(url + "/v3/auth/tokens", json=login, timeout=30)  # an IAM endpoint's event: log_event
        assert answer.status_code == 401
        expected[answer.json()["request_id"]] = "deny"
        SLOW_ARRIVED.clear()
        path = f"/v1/{world.project}/slow"  # authenticated only, then 1.5 s at the upstream: in flight
        slow = ThreadPoolExecutor(1).submit(signed, 0)
        assert SLOW_ARRIVED.wait(10), "the request did not reach the upstream"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        expected.update([slow.result()])
        text = log.read_text()
    assert text.endswith("\n")
    records = [json.loads(row) for row in text.splitlines()]  # a torn line would not parse
    assert len(records) == len(expected) == 301
    outcomes = {r["request_id"]: r["outcome"] for r in records}
    assert outcomes.keys() == expected.keys()
    assert all(outcomes[rid] == outcome for rid, outcome in expected.items() if outcome is not None)
    assert [r["event"] for r in records if r["event"] != "request"] == ["login_failed"]


def test_the_logger_path_stays_for_the_middleware_without_a_destination(caplog: pytest.LogCaptureFixture) -> None:
    from tests.core.test_audit_line import ALLOWED

    with caplog.at_level(logging.INFO, logger="authmw.audit"):
        audit.log_decision(ALLOWED, None, "GET", "/")
    assert [json.loads(r.getMessage())["request_id"] for r in caplog.records if r.name == "authmw.audit"] == [
        ALLOWED.request_id
    ]


@pytest.mark.parametrize("name", FORMS)
def test_every_form_writes_to_the_audit_log_once_set(world: World, tmp_path: Path, name: str) -> None:
    """The middleware (ASGI, WSGI) and the proxy app decide, log_decision hands the line to the writer."""
    path = tmp_path / "audit.log"
    with running(name, world) as form:
        auditlog.audit_to(str(path))
        answer = httpx.get(f"{form.url}/v1/{world.project}/notebooks", timeout=30)
        assert answer.status_code == 401
        auditlog.close_audit()
    (record,) = [json.loads(row) for row in path.read_text().splitlines()]
    assert (record["request_id"], record["error_code"]) == (answer.json()["request_id"], "missing_credentials")
