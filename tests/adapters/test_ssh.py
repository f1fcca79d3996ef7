"""The adapters/ssh recipe end to end: a real OpenSSH server whose AuthorizedKeysCommand is authmw, real ssh logins.

sshd (Debian's openssh-server) listens on a loopback port with the recipe's sshd_config lines and wrapper; the
wrapper runs as ``nobody`` on a copy of the source in a root-owned 0755 directory (sshd checks the command and
its parents), reading the store read-only, or forwarding to ``authmw ssh serve`` running as ``nobody`` too. The
OpenSSH client binds to 127.0.0.1 or 127.0.0.2 to come from a whitelisted address or not. Needs root (sshd's
privilege separation) and the ``sshd``/``ssh`` binaries.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from authmw.errors import ChangeRefused
from authmw.store import Store, open_store
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "adapters" / "ssh"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
GATE_USER = "nobody"

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="sshd needs root"),
    pytest.mark.skipif(not (os.access(SSHD, os.X_OK) and os.access(SSH, os.X_OK)), reason="no OpenSSH (.ci/run)"),
]


def _runs_as_gate_user(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sqlite3"], user=GATE_USER, capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _gate_python() -> str:
    """An interpreter of this Python version the unprivileged account can run (the venv's may live under
    /root, which nobody can enter); the gate needs the standard library only."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if os.path.exists(python) and _runs_as_gate_user(python):
            return python
    pytest.skip(f"no Python {version} that {GATE_USER} may run")


@dataclass
class Host:
    """A notebook host: its sshd, its store and the audit log of its gate."""

    store: Store
    port: int
    home: Path
    audit: Path
    log: Path

    def ssh(self, key: Path, *, source: str = "127.0.0.1", login: str = "root") -> subprocess.CompletedProcess[str]:
        """``ssh -i key login@127.0.0.1 echo ...`` from ``source``; one key only, no agent, no password."""
        return subprocess.run(
            [
                SSH, "-F", "/dev/null", "-i", str(key), "-p", str(self.port),
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
                "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}",
                "-o", f"BindAddress={source}", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                f"{login}@127.0.0.1", "echo", "authmw-ssh-ok",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def logs_in(self, key: Path, **kwargs: Any) -> bool:
        done = self.ssh(key, **kwargs)
        if done.returncode == 0:
            assert done.stdout == "authmw-ssh-ok\n"
            return True
        assert "Permission denied (publickey)" in done.stderr, done.stderr + self.log.read_text()[-3000:]
        return False

    def decisions(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


def _private_key(home: Path, name: str, pem: str) -> Path:
    path = home / name
    path.write_text(pem)
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def _gate_tree() -> Iterator[Path]:
    """A root-owned 0755 directory whose every parent is root-owned and not group/world-writable (/tmp is)."""
    for parent in ("/run", "/var/lib", "/opt"):
        info = os.stat(parent)
        if info.st_uid == 0 and not info.st_mode & 0o022:
            break
    else:
        pytest.skip("no root-owned, non-writable directory to hold sshd's AuthorizedKeysCommand")
    gate = Path(tempfile.mkdtemp(prefix="authmw-ssh-test-", dir=parent))
    try:
        gate.chmod(0o755)
        yield gate
    finally:
        shutil.rmtree(gate, ignore_errors=True)


def _render(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template, count = re.subn(rf"^{name}=.*$", f"{name}={value}", template, flags=re.MULTILINE)
        assert count == 1, name
    return template


@pytest.fixture(scope="module", params=["command", "daemon"])
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """The host's sshd asks a cold ``authmw ssh authorized-keys`` (``command``), or the recipe's wrapper forwards to
    a running ``authmw ssh serve`` (``daemon``), both as the unprivileged account."""
    home = tmp_path_factory.mktemp("ssh")
    python = _gate_python()
    with _gate_tree() as gate:
        # The source, compiled by the gate's interpreter (the unprivileged account cannot write __pycache__).
        shutil.copytree(ROOT / "src" / "authmw", gate / "src" / "authmw", ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([python, "-m", "compileall", "-q", str(gate / "src")], check=True)
        # The store: readable by the gate's group, its directory writable by it for SQLite's WAL index (-shm).
        account = pwd.getpwnam(GATE_USER)
        nogroup = account.pw_gid
        state = gate / "store"
        state.mkdir()
        os.chown(state, 0, nogroup)
        state.chmod(0o2770)
        url = f"sqlite:///{state / 'authmw.db'}"
        store = open_store(url, create=True, environ={"AUTHMW_MASTER_KEY_FILE": str(home / "authmw.key")})
        store.initialize()
        for part in ("authmw.db", "authmw.db-wal", "authmw.db-shm"):  # made 0600 by init, as the recipe says
            os.chown(state / part, 0, nogroup)
            (state / part).chmod(0o640)
        audit = gate / "audit.jsonl"
        audit.touch(mode=0o600)
        os.chown(audit, account.pw_uid, nogroup)
        daemon = None
        socket_path = ""
        if request.param == "daemon":  # as authmw-ssh-gate.service runs it: its own account, a 0700 directory
            run = gate / "run"
            run.mkdir(mode=0o700)
            os.chown(run, account.pw_uid, nogroup)
            socket_path = str(run / "gate.sock")
            daemon_log = home / "gate.log"
            with daemon_log.open("w") as sink:
                daemon = subprocess.Popen(
                    [python, "-m", "authmw", "ssh", "serve", "--store", url, "--socket", socket_path,
                     "--audit-log", str(audit)],
                    user=GATE_USER, group=nogroup, stderr=sink,
                    env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(gate / "src"), "PYTHONDONTWRITEBYTECODE": "1"},
                )  # fmt: skip
            deadline = time.monotonic() + 30
            while "answering authorized-keys requests" not in daemon_log.read_text():
                if daemon.poll() is not None or time.monotonic() > deadline:
                    daemon.kill()
                    raise AssertionError(daemon_log.read_text())
                time.sleep(0.02)
        wrapper = gate / "authmw-authorized-keys"
        wrapper.write_text(
            _render(
                (RECIPE / "authmw-authorized-keys").read_text(),
                {
                    "PYTHON": python,
                    "STORE": url,
                    "AUDIT": str(audit),
                    "AUTHMW_SRC": str(gate / "src"),
                    "SOCKET": socket_path,
                },
            )
        )
        wrapper.chmod(0o755)
        snippet = (RECIPE / "sshd_config.authmw").read_text()
        snippet = snippet.replace("/usr/local/lib/authmw/authmw-authorized-keys", str(wrapper))
        snippet = snippet.replace("--notebook NOTEBOOK", "--notebook nb1").replace(
            "AuthorizedKeysCommandUser authmw-ssh", f"AuthorizedKeysCommandUser {GATE_USER}"
        )
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "host_key")], check=True)
        port = free_port()
        config = home / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\nPidFile {home / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nUsePAM no\nLogLevel VERBOSE\n" + snippet
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
        log = home / "sshd.log"
        with log.open("w") as sink:
            server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=sink)
        try:
            _wait_for(port)
            yield Host(store, port, home, audit, log)
        finally:
            server.terminate()
            server.wait(timeout=10)
            if daemon is not None:
                daemon.terminate()
                assert daemon.wait(timeout=10) == 0
            store.close()


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError("sshd did not start")


def _notebook(store: Store, owner: str, keypair: str, **fields: Any) -> None:
    """Notebook nb1 (the one the host's sshd asks about) afresh."""
    with contextlib.suppress(ChangeRefused):
        store.delete_notebook("nb1")
    store.create_notebook("nb1", owner=owner, keypair=keypair, login_user="root", **fields)


@pytest.mark.slow
def test_real_logins_through_openssh(host: Host) -> None:
    store, home = host.store, host.home
    for name in ("alice", "bob"):
        store.create_user(name)
    alice = _private_key(home, "alice", store.create_keypair("laptop", user="alice").private_key)
    bob = _private_key(home, "bob", store.create_keypair("desk", user="bob").private_key)
    _notebook(store, "alice", "laptop", whitelist=["127.0.0.1"])

    # The owner's key from a whitelisted address logs in and runs a command.
    assert host.logs_in(alice), host.log.read_text() + host.audit.read_text()
    allowed = host.decisions()[-1]
    assert allowed["outcome"] == "allow" and allowed["user"] == "alice"
    assert allowed["fingerprint"] == store.keypairs("alice")[0].fingerprint and allowed["notebook"] == "nb1"

    # Another user's key, another source address, another login account: refused.
    assert not host.logs_in(bob)
    assert host.decisions()[-1]["reason"] == "key_not_of_notebook"
    # sshd before 9.4 cannot tell the command the client address: the line's from= refuses the source.
    assert not host.logs_in(alice, source="127.0.0.2")
    assert 'from="127.0.0.1/32"' not in host.log.read_text()  # the key line itself is never logged
    assert "not from a permitted host (host=127.0.0.2, ip=127.0.0.2, required=127.0.0.1/32)" in host.log.read_text()
    assert not host.logs_in(alice, login="nobody")
    assert host.decisions()[-1]["reason"] == "wrong_login_account"

    # A disabled user is refused, and let in again once enabled.
    store.set_user_enabled("alice", False)
    assert not host.logs_in(alice)
    assert host.decisions()[-1]["reason"] == "user_disabled"
    store.set_user_enabled("alice", True)
    assert host.logs_in(alice)


def test_workspace_access_is_required(host: Host) -> None:
    store, home = host.store, host.home
    store.create_user("carol")
    carol = _private_key(home, "carol", store.create_keypair("laptop", user="carol").private_key)
    store.create_group("nb-team")
    store.add_user_to_group("nb-team", "carol")
    store.create_workspace("team-ws", auth_type="INTERNAL", grant_groups=["nb-team"])
    _notebook(store, "carol", "laptop", workspace="team-ws")
    assert host.logs_in(carol)
    store.remove_user_from_group("nb-team", "carol")  # the access through the group's grant is gone
    assert not host.logs_in(carol)
    assert host.decisions()[-1]["reason"] == "workspace_denied"


@pytest.mark.slow
def test_deletions_and_expiry_stop_the_next_login(host: Host) -> None:
    store, home = host.store, host.home
    store.create_user("dave")
    dave = _private_key(home, "dave", store.create_keypair("laptop", user="dave").private_key)

    # A key that expires in 3 s logs in now; it is tried again once expired, at the end (the deletions below
    # take part of the wait).
    expires_at = int(time.time()) + 3
    expiring = store.create_keypair("expiring", user="dave", expires_at=expires_at)
    key = _private_key(home, "dave-expiring", expiring.private_key)
    _notebook(store, "dave", "expiring")
    assert host.logs_in(key)

    _notebook(store, "dave", "laptop")
    assert host.logs_in(dave)

    # The notebook deleted: the very first login after it is refused (the gate reads the store every time).
    store.delete_notebook("nb1")
    deleted_at = time.time()
    assert not host.logs_in(dave)
    refused = host.decisions()[-1]
    assert refused["reason"] == "no_notebook"
    assert _seconds(refused["time"]) <= deleted_at + 1

    # The key pair deleted: refused.
    _notebook(store, "dave", "laptop")
    assert host.logs_in(dave)
    store.delete_keypair("laptop", user="dave")
    assert not host.logs_in(dave)
    assert host.decisions()[-1]["reason"] == "no_keypair"

    # The key expired: refused by authmw (and by sshd's own expiry-time= check, were the line cached anywhere).
    store.update_notebook("nb1", keypair="expiring")
    time.sleep(max(0.0, expires_at - time.time() + 1))
    assert not host.logs_in(key)
    assert host.decisions()[-1]["reason"] == "key_expired"


def _seconds(stamp: str) -> float:
    """The POSIX time of an audit record's RFC 3339 UTC ``time`` (``2026-12-08T02:18:57.467602Z``)."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def test_no_key_is_printed_when_the_store_is_unreadable(host: Host) -> None:
    store, home = host.store, host.home
    store.create_user("erin")
    erin = _private_key(home, "erin", store.create_keypair("laptop", user="erin").private_key)
    _notebook(store, "erin", "laptop")
    assert host.logs_in(erin)
    db = Path(store.db.url.removeprefix("sqlite:///"))
    db.chmod(0o600)  # the gate's account can no longer read the store
    try:
        assert not host.logs_in(erin)
        assert host.decisions()[-1]["reason"] == "store_unavailable"
    finally:
        db.chmod(0o640)
    assert host.logs_in(erin)
