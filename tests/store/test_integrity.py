"""The store's integrity across real processes, on SQLite and PostgreSQL alike.

* an import killed with SIGKILL in the middle of its transaction leaves the store exactly as before or exactly
  as after a complete import, never in between, and the store stays writable;
* two processes writing at once lose nothing, and racing for one user's keys never beats the two-key limit;
* a change committed by another process reaches a :class:`CachedIdentity` within a second;
* ``authmw master-key rotate`` runs while requests keep verifying, without a single failure.

Helper processes run :data:`CHILD` (written into ``tmp_path``) with the store URL in ``AUTHMW_STORE`` and the
master key in ``AUTHMW_MASTER_KEY``; they report on stdout, one ``WORD payload`` line at a time.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from authmw.models import Request, WhitelistScope
from authmw.signing import Verifier, sign_request
from authmw.store import CachedIdentity, Keyring, Store
from authmw.store.database import open_database
from authmw.store.keys import access_key_context, signing_key_context
from authmw.store.secrets import SealError, hash_password, new_master_key, read_key_file, write_key_file
from authmw.store.transfer import export_store
from tests.support.pgutil import pg_schema

MASTER = bytes(range(32))  # the master key of the `keyring` fixture (checked in `master_env`)
PASSPHRASE = "integrity passphrase 0123"
PASS_ENV = {"AUTHMW_EXPORT_PASSPHRASE": PASSPHRASE}
BULK_USERS = 20_000  # with two keys each: 40,000 access keys
# When to SIGKILL an import: so long after its transaction began (None) or began inserting into a table.
# Each kill costs a helper process that loaded the export and derived its passphrase key (seconds of CPU).
FRESH_KILLS = (("users", 0.02), ("access_keys", 0.05))
REPLACE_KILLS = ((None, 0.0), ("access_keys", 0.05))
ALLOW_TRAIN = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:trainJob:*"]}]}
URL = "https://modelarts.cn-north-4.myhuaweicloud.com/v2/0a1b2c3d/training-jobs?limit=10"

CHILD = r'''
import contextlib
import json
import os
import sys
import time

from authmw.errors import ChangeRefused
from authmw.store import open_store


def say(word, payload=""):
    print(word, payload, flush=True)


def traced_import(store, path, replace):
    """Import an export file, saying when the write transaction begins, when it starts inserting into each
    table, and when it has committed."""
    from authmw.store.transfer import import_store

    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    write = store.db.write

    class TracedTx:
        def __init__(self, tx):
            self._tx = tx

        def __getattr__(self, name):
            return getattr(self._tx, name)

        def run_many(self, sql, params):
            say("INSERT", sql.split()[2])  # INSERT INTO <table> (...)
            return self._tx.run_many(sql, params)

    waiting = [True]

    @contextlib.contextmanager
    def traced():
        if waiting:  # the export is validated and re-sealed: wait for the go to write
            waiting.clear()
            say("PREPARED")
            sys.stdin.readline()
        with write() as tx:
            say("TX")
            yield TracedTx(tx)
        say("COMMITTED")

    store.db.write = traced
    say("IMPORT")
    counts = import_store(store, document, passphrase=os.environ["AUTHMW_EXPORT_PASSPHRASE"], replace=replace)
    say("DONE", json.dumps(counts))


def attempt(results, action, *args):
    """Run one change; a refusal and any other error are recorded apart."""
    try:
        return action(*args)
    except ChangeRefused as exc:
        results["refused"].append(str(exc))
    except Exception as exc:
        results["errors"].append(f"{type(exc).__name__}: {exc}")
    return None


def ready(store, results):
    store.revision()  # connected before the start signal
    say("READY")
    sys.stdin.readline()
    results["span"] = [time.monotonic()]


def create_users(store, prefix, count):
    results = {"users": {}, "refused": [], "errors": []}
    ready(store, results)
    for number in range(count):
        name = f"{prefix}{number:03d}"
        user = attempt(results, store.create_user, name)
        if user is not None:
            keys = [attempt(results, store.create_access_key, name) for _ in range(2)]
            results["users"][name] = {"id": user.id, "keys": {k.access: k.secret for k in keys if k is not None}}
    results["span"].append(time.monotonic())
    say("RESULT", json.dumps(results))


def race_keys(store, users, attempts):
    results = {"created": [], "refused": [], "errors": []}
    ready(store, results)
    for name in users:
        for _ in range(attempts):
            key = attempt(results, store.create_access_key, name)
            if key is not None:
                results["created"].append([name, key.access, key.secret])
    results["span"].append(time.monotonic())
    say("RESULT", json.dumps(results))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    store = open_store(os.environ["AUTHMW_STORE"])
    try:
        if mode == "import":
            traced_import(store, args[0], args[1] == "replace")
        elif mode == "users":
            create_users(store, args[0], int(args[1]))
        elif mode == "race":
            race_keys(store, args[0].split(","), int(args[1]))
        elif mode == "call":
            getattr(store, args[0])(*json.loads(args[1]), **json.loads(args[2]))
            say("DONE")
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        store.close()


main()
'''


# -- helper processes -------------------------------------------------------------------------------------


class Child:
    """A process running :data:`CHILD`: its stdout lines arrive on a queue, its stderr goes to a file."""

    def __init__(self, script: Path, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.stderr_file = script.parent / f"child-{uuid.uuid4().hex[:8]}.err"
        with self.stderr_file.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                cwd=script.parent,
            )
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def _fail(self, why: str) -> None:
        self.kill()
        pytest.fail(f"{why}; child said {self.seen}; stderr:\n{self.stderr_file.read_text()}")

    def expect(self, word: str, timeout: float = 60.0) -> str:
        """Wait for the line ``word payload``; returns the payload."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._fail(f"no {word} within {timeout} s")
            if line is None:
                self.proc.wait()
                self._fail(f"child exited with {self.proc.returncode} before saying {word}")
            assert line is not None
            self.seen.append(line)
            head, _, payload = line.partition(" ")
            if head == word:
                return payload.strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60.0) -> None:
        """Wait for a successful exit."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._fail(f"child still running after {timeout} s")
        if code != 0:
            self._fail(f"child exited with {code}")

    def kill(self) -> int:
        """SIGKILL the child (if still running); returns its exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=30)
        while (line := self._lines.get(timeout=30)) is not None:  # the pump ends at EOF
            self.seen.append(line)
        return code


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start helper processes (``spawn(*args, env=...)``); whatever still runs is killed afterwards."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    started: list[Child] = []

    def start(*args: str, env: dict[str, str]) -> Child:
        child = Child(script, args, env)
        started.append(child)
        return child

    yield start
    for child in started:
        if child.proc.poll() is None:
            child.kill()
        if child.proc.stdin is not None:
            child.proc.stdin.close()


def child_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a helper process or CLI run: no inherited AUTHMW_* setting, the store ``url``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUTHMW_")}
    env["AUTHMW_STORE"] = url
    env.update(extra)
    return env


def master_env(url: str, keyring: Keyring, **extra: str) -> dict[str, str]:
    """:func:`child_env` with the master key of ``keyring`` (the fixture's) in ``AUTHMW_MASTER_KEY``."""
    assert keyring.sealing_key_id == Keyring.from_keys(MASTER).sealing_key_id, "the keyring fixture changed key"
    return child_env(url, AUTHMW_MASTER_KEY=base64.b64encode(MASTER).decode(), **extra)


# -- stores and exports -----------------------------------------------------------------------------------


@contextlib.contextmanager
def another_store(store_url: str, keyring: Keyring, name: str) -> Iterator[tuple[str, Store]]:
    """A second initialised store on the backend of ``store_url``: its URL and the store."""
    with contextlib.ExitStack() as stack:
        if store_url.startswith("sqlite"):
            url = f"sqlite:///{Path(store_url.removeprefix('sqlite:///')).parent / name}.db"
        else:
            url = stack.enter_context(pg_schema())
        store = Store(open_database(url, create=True), keyring)
        stack.callback(store.close)
        store.initialize()
        yield url, store


def add_bulk(store: Store, users: int, *, extras: bool = False) -> dict[str, tuple[str, str]]:
    """Add ``users`` users with two access keys each to ``store`` in one write transaction (rows written
    directly: tens of thousands of single changes would take minutes); returns {access key: (secret, owner)}.

    With ``extras`` some users are disabled or have a password, some keys are inactive, and there are groups,
    members, a policy attachment and a project.
    """
    created = 1_700_000_000
    keys: dict[str, tuple[str, str]] = {}
    tables: dict[str, list[dict[str, Any]]] = {"users": [], "access_keys": []}
    password_hash = hash_password("bulk password 1") if extras else None
    with store.db.read() as tx:
        domain_id = tx.one("SELECT id FROM domains WHERE name = 'default'")[0]
        policy_id = tx.one("SELECT id FROM policies WHERE domain_id IS NULL ORDER BY id")[0]
    for number in range(users):
        user_id = uuid.uuid4().hex
        with_password = extras and number % 1000 == 0
        tables["users"].append(
            {
                "id": user_id,
                "domain_id": domain_id,
                "name": f"bulk{number:05d}",
                "enabled": 0 if extras and number % 97 == 0 else 1,
                "password_hash": password_hash if with_password else None,
                "password_changed_at": created if with_password else None,
                "created_at": created + number,
            }
        )
        for which in range(2):
            access = f"BULK{number:05d}K{which}{uuid.uuid4().hex[:12].upper()}"
            keys[access] = (f"{uuid.uuid4().hex}+{which}", user_id)
            tables["access_keys"].append(
                {
                    "access_key": access,
                    "user_id": user_id,
                    "secret_sealed": store.keyring.seal(keys[access][0].encode(), access_key_context(access, user_id)),
                    "status": "inactive" if extras and which and number % 89 == 0 else "active",
                    "created_at": created + number,
                }
            )
    if extras:
        groups = [
            {"id": uuid.uuid4().hex, "domain_id": domain_id, "name": f"bulk_team{n}", "created_at": created}
            for n in range(3)
        ]
        tables["groups_"] = groups
        tables["group_members"] = [
            {"group_id": groups[n % 3]["id"], "user_id": tables["users"][n]["id"]} for n in range(0, users, 7)
        ]
        tables["attachments"] = [{"policy_id": policy_id, "principal_type": "group", "principal_id": groups[0]["id"]}]
        project = {"id": uuid.uuid4().hex, "domain_id": domain_id, "name": "cn-north-4_bulk", "region": "cn-north-4"}
        tables["projects"] = [{**project, "created_at": created}]
    with store.db.write() as tx:
        for table, rows in tables.items():
            columns = list(rows[0])
            tx.run_many(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                [tuple(row[column] for column in columns) for row in rows],
            )
    return keys


def snapshot(store: Store) -> dict[str, Any]:
    """Every row of the store with its secrets opened (sealed values differ between stores, content does not)."""
    state = export_store(store)
    ring = store.keyring
    with store.db.read() as tx:
        state["access_key_secrets"] = {
            access: ring.open(sealed, access_key_context(access, owner))
            for access, owner, sealed in tx.rows("SELECT access_key, user_id, secret_sealed FROM access_keys")
        }
        state["signing_keys"] = {
            kid: (public, created, retired, ring.open(sealed, signing_key_context(kid)))
            for kid, sealed, public, created, retired in tx.rows(
                "SELECT kid, private_sealed, public_key, created_at, retired_at FROM signing_keys"
            )
        }
        state["password_hashes"] = dict(tx.rows("SELECT id, password_hash FROM users"))
    return state


def shape(state: dict[str, Any]) -> dict[str, int]:
    return {section: len(rows) for section, rows in state.items() if isinstance(rows, list | dict)}


def assert_before_or_after(state: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    """The store is exactly as before or exactly as after the import."""
    if state in (before, after):
        return
    differing = sorted(k for k in {*before, *after, *state} if state.get(k) not in (before.get(k), after.get(k)))
    pytest.fail(
        f"the store is neither as before nor as after the import: {shape(state)} "
        f"(before: {shape(before)}; after: {shape(after)}); sections matching neither: {differing}"
    )


def assert_writable(store: Store) -> None:
    """A write goes through (no lock left behind by a killed writer) and reads back."""
    revision = store.revision()
    name = f"probe_{uuid.uuid4().hex[:8]}"
    store.create_user(name)
    key = store.create_access_key(name)
    found = store.get_access_key(key.access)
    assert found is not None
    assert found.secret_key == key.secret
    assert store.revision() == revision + 2


def populate(store: Store) -> None:
    """A little of everything, for an import to replace."""
    store.create_domain("acme")
    store.create_project("cn-north-4_pre")
    store.create_user("pre_alice", password="correct horse battery")
    store.create_access_key("pre_alice")
    store.create_group("pre_team")
    store.add_user_to_group("pre_team", "pre_alice")
    store.create_policy("pre-train", json.dumps(ALLOW_TRAIN))
    store.attach_policy("pre-train", group="pre_team")
    store.create_workspace("pre-space", auth_type="INTERNAL", grant_users=["pre_alice"])
    store.create_keypair("pre-pair", user="pre_alice")
    store.set_whitelist(WhitelistScope.USER, "pre_alice", ["10.0.0.0/8"])


def signed_request(access: str, secret: str) -> Request:
    out = sign_request("GET", URL, access_key=access, secret_key=secret)
    split = urlsplit(out.url)
    return Request.build(out.method, f"{split.path}?{split.query}", out.headers, out.body)


def eventually(condition: Callable[[], bool], deadline: float, what: str) -> None:
    """Poll ``condition`` until it holds, failing at ``deadline`` (a ``time.monotonic()`` value)."""
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not by the deadline")
        time.sleep(0.005)


# -- 1. an import killed mid-transaction ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bulk_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSON export (secrets sealed under :data:`PASSPHRASE`) of a store holding 20,000 users and 40,000
    access keys, and a few disabled users, passwords, inactive keys, groups... Built once per run: the xdist
    workers of a run share it (their temporary directories' parent is the run's), as the killed-import tests of
    both backends usually run on two workers (building it costs ~2 s of CPU)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return _bulk_export(tmp_path_factory.mktemp("bulk"))
    shared = tmp_path_factory.getbasetemp().parent / "integrity-bulk"
    shared.mkdir(exist_ok=True)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker building it: wait for its export
        path = shared / "export.json"
        return path if path.exists() else _bulk_export(shared)


def _bulk_export(folder: Path) -> Path:
    """Build :func:`bulk_export`'s file in ``folder``; written under another name and renamed, whole or not at
    all."""
    for leftover in folder.glob("source.db*"):  # of a worker that failed building it
        leftover.unlink()
    source = Store(open_database(f"sqlite:///{folder / 'source.db'}", create=True), Keyring.from_keys(MASTER))
    try:
        source.initialize()
        add_bulk(source, BULK_USERS, extras=True)
        document = export_store(source, passphrase=PASSPHRASE)
    finally:
        source.close()
    assert (len(document["users"]), len(document["access_keys"])) == (BULK_USERS, 2 * BULK_USERS)
    path = folder / "export.json"
    partial = folder / "export.json.partial"
    partial.write_text(json.dumps(document))
    partial.rename(path)
    return path


def kill_mid_import(child: Child, table: str | None, delay: float) -> None:
    """Let the prepared ``child`` begin its import transaction and SIGKILL it ``delay`` seconds after it began
    (``table`` None) or began inserting into ``table``; it must still be running then."""
    child.send("go")
    child.expect("TX")
    while table is not None and child.expect("INSERT") != table:
        pass
    time.sleep(delay)
    assert child.proc.poll() is None, f"the import ended before the kill: {child.seen}"
    assert child.kill() == -signal.SIGKILL
    assert "DONE" not in [line.partition(" ")[0] for line in child.seen]


def assert_killed_before_commit(child: Child) -> None:
    """The kill landed inside the import transaction (checked after the store, which tells more if not)."""
    assert "COMMITTED" not in child.seen, f"the transaction had committed before the kill: {child.seen}"


@pytest.mark.slow
def test_a_killed_import_leaves_the_store_exactly_before_or_after(
    store: Store, store_url: str, keyring: Keyring, bulk_export: Path, spawn: Callable[..., Child]
) -> None:
    with contextlib.ExitStack() as stack:
        reference_url, reference = stack.enter_context(another_store(store_url, keyring, "reference"))
        fresh = [stack.enter_context(another_store(store_url, keyring, f"fresh{n}")) for n in range(len(FRESH_KILLS))]

        def importer(url: str, mode: str) -> Child:
            return spawn("import", str(bulk_export), mode, env=master_env(url, keyring, **PASS_ENV))

        # Every importer loads and validates the export at once, then waits for its turn to write.
        reference_child = importer(reference_url, "fresh")
        fresh_children = [importer(url, "fresh") for url, _target in fresh]
        replace_children = [importer(store_url, "replace") for _ in REPLACE_KILLS]

        # The "after" state: the same import run to completion into another store.
        reference_child.expect("PREPARED")
        reference_child.send("go")
        counts = json.loads(reference_child.expect("DONE"))
        reference_child.finish()
        assert "COMMITTED" in reference_child.seen
        assert (counts["users"], counts["access_keys"]) == (BULK_USERS, 2 * BULK_USERS)
        after = snapshot(reference)
        assert shape(after)["access_key_secrets"] == 2 * BULK_USERS

        # Into stores holding nothing yet (one per kill: a completed import would fill it)...
        for (_url, target), child, (table, delay) in zip(fresh, fresh_children, FRESH_KILLS, strict=True):
            before = snapshot(target)
            child.expect("PREPARED")
            kill_mid_import(child, table, delay)
            assert_before_or_after(snapshot(target), before, after)
            assert_killed_before_commit(child)
            assert_writable(target)

    # ... and with replace=True into a populated store.
    populate(store)
    for child, (table, delay) in zip(replace_children, REPLACE_KILLS, strict=True):
        before = snapshot(store)
        child.expect("PREPARED")
        kill_mid_import(child, table, delay)
        assert_before_or_after(snapshot(store), before, after)
        assert_killed_before_commit(child)
        assert_writable(store)


# -- 2. concurrent writers --------------------------------------------------------------------------------


def start_together(children: list[Child]) -> list[dict[str, Any]]:
    """Release children waiting at READY at once; their RESULT documents."""
    for child in children:
        child.expect("READY")
    for child in children:
        child.send("go")
    results = [json.loads(child.expect("RESULT", timeout=120)) for child in children]
    for child in children:
        child.finish()
    starts, ends = zip(*(result["span"] for result in results), strict=True)
    assert max(starts) < min(ends), "the writers did not overlap in time"
    return results


def test_two_processes_creating_users_and_keys_lose_nothing(
    store: Store, store_url: str, keyring: Keyring, spawn: Callable[..., Child]
) -> None:
    revision = store.revision()
    env = master_env(store_url, keyring)
    results = start_together([spawn("users", prefix, "100", env=env) for prefix in ("left_", "right_")])
    for result in results:
        assert result["errors"] == []
        assert result["refused"] == []
    made = {name: info for result in results for name, info in result["users"].items()}
    assert set(made) == {f"{side}_{n:03d}" for side in ("left", "right") for n in range(100)}
    users = {user.name: user for user in store.list_users()}
    assert set(users) == set(made)
    for name, info in made.items():
        assert users[name].id == info["id"]
        assert len(info["keys"]) == 2
        assert {key.access for key in store.list_access_keys(name)} == set(info["keys"])
        for access, secret in info["keys"].items():
            found = store.get_access_key(access)
            assert found is not None, access
            assert (found.secret_key, found.owner) == (secret, info["id"])
    assert store.revision() == revision + 600  # one committed transaction per change, none lost


def test_processes_racing_for_one_users_keys_respect_the_limit(
    store: Store, store_url: str, keyring: Keyring, spawn: Callable[..., Child]
) -> None:
    names = [f"shared{n}" for n in range(5)]
    ids = {name: store.create_user(name).id for name in names}
    revision = store.revision()
    env = master_env(store_url, keyring)
    results = start_together([spawn("race", ",".join(names), "3", env=env) for _ in range(2)])
    for result in results:
        assert result["errors"] == []  # a refusal is the only acceptable failure
    created = [entry for result in results for entry in result["created"]]
    refused = [message for result in results for message in result["refused"]]
    assert len(created) == 2 * len(names)
    assert len(refused) == 2 * 3 * len(names) - len(created)
    assert all("already has 2 access keys" in message for message in refused), refused
    for name in names:
        mine = {access: secret for owner, access, secret in created if owner == name}
        assert len(mine) == 2, name
        assert {key.access for key in store.list_access_keys(name)} == set(mine)
        for access, secret in mine.items():
            found = store.get_access_key(access)
            assert found is not None
            assert (found.secret_key, found.owner) == (secret, ids[name])
    assert store.revision() == revision + len(created)  # refused changes were rolled back entirely


# -- 3. another process's change reaches the cache --------------------------------------------------------


def test_a_change_by_another_process_reaches_the_cache_within_a_second(
    store: Store, store_url: str, keyring: Keyring, spawn: Callable[..., Child]
) -> None:
    carol = store.create_user("carol")
    first, second = store.create_access_key("carol"), store.create_access_key("carol")
    dave = store.create_user("dave")
    store.create_group("team")
    store.add_user_to_group("team", "dave")
    store.create_policy("train-only", json.dumps(ALLOW_TRAIN))
    cached = CachedIdentity(store)  # the default refresh: the revision is read at most every 0.25 s
    for key in (first, second):
        found = cached.get_access_key(key.access)
        assert found is not None
        assert found.secret_key == key.secret
    assert cached.principal(carol.id) is not None
    dave_before = cached.principal(dave.id)
    assert dave_before is not None
    assert not dave_before.policies.decide("modelarts:trainJob:create").allowed
    env = master_env(store_url, keyring)

    def change(method: str, *args: Any, **kwargs: Any) -> float:
        """Make the change in another process; the deadline: a second after it committed."""
        child = spawn("call", method, json.dumps(args), json.dumps(kwargs), env=env)
        child.expect("DONE")
        deadline = time.monotonic() + 1.0
        child.finish()
        return deadline

    deadline = change("set_access_key_status", first.access, False)
    assert store.get_access_key(first.access) is None
    eventually(lambda: cached.get_access_key(first.access) is None, deadline, "the disabled key is still served")
    assert cached.get_access_key(second.access) is not None

    deadline = change("set_user_enabled", "carol", False)
    eventually(
        lambda: cached.get_access_key(second.access) is None and cached.principal(carol.id) is None,
        deadline,
        "the disabled user's key or principal is still served",
    )

    def dave_may_train() -> bool:
        principal = cached.principal(dave.id)
        assert principal is not None
        names = {policy.name for policy in principal.policies.policies}
        return "train-only" in names and principal.policies.decide("modelarts:trainJob:create").allowed

    assert not dave_may_train()
    deadline = change("attach_policy", "train-only", group="team")
    eventually(dave_may_train, deadline, "the policy attached to dave's group is not in effect")


# -- 4. master-key rotation under load --------------------------------------------------------------------

ROTATION_USERS = 2_000  # 4,000 access-key secrets to re-seal


def test_master_key_rotation_while_requests_keep_verifying(store_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    old = new_master_key()
    write_key_file(key_file, [old])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    store = Store(open_database(store_url, create=True), Keyring.from_file(key_file))
    try:
        store.initialize()
        keys = add_bulk(store, ROTATION_USERS)
        requests = [
            (access, owner, signed_request(access, secret)) for access, (secret, owner) in sorted(keys.items())[::50]
        ]
        long_lived = CachedIdentity(store, refresh=0.001)
        long_verifier = Verifier(keys=long_lived, replay_guard=False)  # verifies the same requests in a loop
        failures: list[str] = []
        revisions: list[int] = []
        stop = threading.Event()

        def newcomer_verifier() -> Verifier:
            """As a worker process starting this moment sees the store: its key ring read from the file now."""
            return Verifier(keys=CachedIdentity(Store(store.db, Keyring.from_file(key_file))))

        def verify_in_a_loop() -> None:
            number = 0
            while not stop.is_set():
                access, owner, request = requests[number % len(requests)]
                number += 1
                fresh = CachedIdentity(store, refresh=0.001)
                verifiers: list[Callable[[], Verifier]] = [
                    functools.partial(Verifier, keys=fresh),
                    lambda: long_verifier,
                    newcomer_verifier,
                ]
                for verifier in verifiers:
                    try:
                        credential = verifier().verify(request)
                    except Exception as exc:
                        failures.append(f"{access}: {type(exc).__name__}: {exc}")
                        continue
                    if (credential.access_key, credential.owner) != (access, owner):
                        failures.append(f"{access}: verified as {credential.access_key} of {credential.owner}")
                revisions.append(fresh.revision)

        reader = threading.Thread(target=verify_in_a_loop, daemon=True)
        reader.start()
        try:
            eventually(lambda: len(revisions) > 10, time.monotonic() + 10, "the reader does not verify")
            revision = store.revision()
            env = {name: value for name, value in os.environ.items() if not name.startswith("AUTHMW_")}
            env["AUTHMW_MASTER_KEY_FILE"] = str(key_file)
            during = len(revisions)
            cli = subprocess.run(
                [sys.executable, "-m", "authmw", "master-key", "rotate", "--store", store_url, "--format", "json"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                check=False,
                text=True,
                timeout=120,
            )
            during = len(revisions) - during
            # keep verifying after the rotation: a few hundred more lookups, all against the new key
            done = len(revisions)
            eventually(lambda: len(revisions) > done + 200, time.monotonic() + 20, "the reader stopped")
        finally:
            stop.set()
            reader.join(timeout=30)
        assert cli.returncode == 0, cli.stderr
        report = json.loads(cli.stdout)
        assert not failures, f"{len(failures)} failed verifications, the first: {failures[:3]}"
        assert during > 10, "the reader hardly ran while the CLI rotated the key"
        assert set(revisions) == {revision, revision + 1}  # the reader saw both sides of the re-seal commit
        with store.db.read() as tx:
            signing_keys = tx.one("SELECT COUNT(*) FROM signing_keys")[0]
        assert report["resealed"] == len(keys) + signing_keys

        # The key file now holds the new key alone; the old key opens nothing, the new one everything.
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        in_file = read_key_file(key_file)
        assert len(in_file) == 1
        assert in_file[0] != old
        assert store.keyring.sealing_key_id == report["key_id"]  # the reader's ring reloaded the file
        old_ring, new_ring = Keyring.from_keys(old), Keyring.from_keys(in_file[0])
        with store.db.read() as tx:
            sealed = [
                (access, access_key_context(access, owner), value)
                for access, owner, value in tx.rows("SELECT access_key, user_id, secret_sealed FROM access_keys")
            ]
            sealed += [
                (None, signing_key_context(kid), value)
                for kid, value in tx.rows("SELECT kid, private_sealed FROM signing_keys")
            ]
        assert len(sealed) == report["resealed"]
        for access, context, value in sealed:
            assert value.split(".")[1] == report["key_id"]
            with pytest.raises(SealError):
                old_ring.open(value, context)
            opened = new_ring.open(value, context)
            if access is not None:
                assert opened.decode() == keys[access][0]
        for access, owner, request in requests[:5]:
            credential = Verifier(keys=CachedIdentity(Store(store.db, new_ring))).verify(request)
            assert (credential.access_key, credential.owner) == (access, owner)
    finally:
        store.close()
