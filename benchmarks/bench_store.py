"""Identity-store benchmarks: bulk import, access-key lookups through ``CachedIdentity``, the cache's memory.

Layer: identity store (the edge layer under the pipeline's key source). Every measurement runs on embedded
SQLite (a temporary file) and on PostgreSQL (a schema of its own on ``--postgres``, created before and
dropped after), over the same dataset: ``--users`` users (100,000) with two access keys each, in the
``default`` domain.

- *Bulk import*: the dataset as an export document (what ``export_store(store, passphrase=...)`` writes,
  secrets sealed under the export passphrase) loaded by ``import_store`` into a freshly initialised store;
  wall time, one run per backend. Then the same document as the files ``authmw export`` writes (YAML with
  ``yaml.CSafeDumper``, and JSON) loaded by ``authmw import FILE`` in a subprocess: what an operator runs.
- *Lookups*: ``CachedIdentity.get_access_key`` on a cache hit (one key; 1,000 cached keys in turn), on a
  miss (keys never looked up before, a fresh cache per batch), on an unknown key (first lookup and the
  negative-cache hit), and ``Store.get_access_key`` uncached. Same harness as ``bench_signing``: batches
  of about ``--batch-ms``, ``--repeats`` round-robin rounds, GC off inside a batch, medians.
- *Memory*: a fresh subprocess opens the store and looks up 100,000 distinct keys through one
  ``CachedIdentity``; peak RSS (``VmHWM``), with the default ``max_entries`` and with a bound above 100,000.

    python benchmarks/bench_store.py [--users 100000] [--backend sqlite|postgresql|both] [--json PATH]
                                     [--repeats 15] [--batch-ms 50] [--no-cli] [--check]
    python benchmarks/bench_store.py --users 2000            # a smoke run: seconds
    python benchmarks/bench_store.py --profile               # cProfile of the import, misses and YAML parsing
    python benchmarks/bench_store.py --breakdown --users 2000  # where the µs of a cache miss go
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import random
import resource
import secrets
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from authmw.store import DEFAULT_DOMAIN, CachedIdentity, Keyring, Store, reads
from authmw.store.database import open_database
from authmw.store.keys import access_key_context, sealer
from authmw.store.transfer import FORMAT, export_store, import_store
from bench_signing import (
    Case,
    Neighbours,
    Verdict,
    _package,
    _us,
    case_record,
    machine,
    print_preamble,
    run_cases,
    same_op,
)

# -- the workload ----------------------------------------------------------------------------------------

USERS = 100_000
KEYS_PER_USER = 2  # the store's limit per user
SEED = 20261128
MASTER = bytes(range(32))  # the stores' master key (AES-GCM sealing at rest)
PASSPHRASE = "benchmark export passphrase"  # seals the secrets inside the export document
PG_SERVER = os.environ.get("AUTHMW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CREATED_AT = 1_795_824_000  # 2026-11-28T00:00:00Z
ROTATING = 1_000  # cached keys the rotating-hit case walks through
TOUCH = 100_000  # distinct keys the memory child looks up
BIG_BOUND = 200_001  # max_entries of the unbounded-in-practice memory run
NO_POLL = 1e9  # refresh for caches that must not poll while timed

IMPORT_TARGET_S = 60.0
HIT_TARGET_US = 1.0
MISS_TARGET_US = 100.0
MEMORY_TARGET_MB = 150.0

BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
PATHS = {"cli-yaml": "authmw import FILE (YAML)", "cli-json": "authmw import FILE (JSON)"}
_ALNUM = string.ascii_uppercase + string.digits  # access keys: 20 of these, as `key create` makes them
_SECRET = string.ascii_letters + string.digits  # secrets: 40 of these


@dataclass
class Dataset:
    """The export document and what the lookups need to know about it."""

    users: int
    document: dict[str, Any]
    lookup_order: list[str]  # every access key, shuffled (seeded): the order misses walk them in
    samples: dict[str, tuple[str, str]]  # a few access keys -> (secret, user id), checked after each import
    system_rows: str  # what `init` put in the document besides users and keys

    @property
    def keys(self) -> int:
        return len(self.lookup_order)


def build_dataset(users: int, workdir: Path) -> Dataset:
    """The export of a store holding the dataset: ``init`` (domain, workspace 0, system policies, a signing
    key), then ``users`` users with two active keys each, written straight into the source store's tables
    (secrets sealed as the store seals them), then ``export_store(store, passphrase=...)``. So the document is
    exactly what ``authmw export --include-secrets`` produces: rows ordered by primary key, every secret
    sealed under the export passphrase, the document authenticated by it."""
    rng = random.Random(SEED)
    user_rows: list[tuple[Any, ...]] = []
    key_rows: list[tuple[str, str, str]] = []  # (access key, user id, secret)
    ids: set[str] = set()
    access_keys: set[str] = set()
    samples: dict[str, tuple[str, str]] = {}
    for number in range(users):
        user_id = f"{rng.getrandbits(128):032x}"  # uuid4().hex-shaped, as the store makes them
        assert user_id not in ids
        ids.add(user_id)
        user_rows.append((user_id, f"user{number:06d}"))
        for _ in range(KEYS_PER_USER):
            access_key = "".join(rng.choices(_ALNUM, k=20))
            assert access_key not in access_keys
            access_keys.add(access_key)
            secret = "".join(rng.choices(_SECRET, k=40))
            key_rows.append((access_key, user_id, secret))
            if len(samples) < 8 or number == users - 1:
                samples[access_key] = (secret, user_id)
    source = Store(open_database(f"sqlite:///{workdir / 'source.db'}", create=True), Keyring.from_keys(MASTER))
    try:
        source.initialize()
        with source.db.write() as tx:
            found = tx.one("SELECT id FROM domains WHERE name = ?", (DEFAULT_DOMAIN,))
            assert found is not None
            domain_id = found[0]
            seal = sealer(tx, source.keyring)
            tx.run_many(
                "INSERT INTO users (id, domain_id, name, enabled, password_hash, password_changed_at, created_at) "
                "VALUES (?, ?, ?, 1, NULL, NULL, ?)",
                [(user_id, domain_id, name, CREATED_AT) for user_id, name in user_rows],
            )
            tx.run_many(
                "INSERT INTO access_keys (access_key, user_id, secret_sealed, status, created_at) "
                "VALUES (?, ?, ?, 'active', ?)",
                [
                    (key, user_id, seal(secret.encode(), access_key_context(key, user_id)), CREATED_AT)
                    for key, user_id, secret in key_rows
                ],
            )
        for access_key, (secret, _user_id) in samples.items():
            got = source.get_access_key(access_key)
            assert got is not None and got.secret_key == secret
        document = export_store(source, passphrase=PASSPHRASE)
    finally:
        source.close()
    Path(workdir / "source.db").unlink(missing_ok=True)
    assert document["format"] == FORMAT and "secrets_salt" in document
    assert len(document["users"]) == users and len(document["access_keys"]) == users * KEYS_PER_USER
    system_rows = ", ".join(
        f"{len(rows)} {name}"
        for name, rows in document.items()
        if isinstance(rows, list) and rows and name not in ("users", "access_keys")
    )
    order = sorted(access_keys)
    rng.shuffle(order)
    return Dataset(users, document, order, samples, system_rows)


# -- stores ----------------------------------------------------------------------------------------------


def pg_schema_url(schema: str, server: str) -> str:
    return f"{server}?options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def _place(backend: str, workdir: Path, label: str, server: str) -> Iterator[str]:
    """A URL for a new store: a SQLite file removed afterwards, or a PostgreSQL schema dropped afterwards."""
    if backend == "sqlite":
        path = workdir / f"{label}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    schema = f"authmw_bench_{label}_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(schema, server)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def fresh_store(backend: str, workdir: Path, label: str, server: str) -> Iterator[tuple[Store, str]]:
    """A new ``initialize()``-d store on ``backend`` and its URL, gone afterwards."""
    with _place(backend, workdir, label, server) as url:
        store = Store(open_database(url, create=True), Keyring.from_keys(MASTER))
        try:
            store.initialize()
            yield store, url
        finally:
            store.close()


def check_imported(store: Store, dataset: Dataset) -> None:
    """Fail loudly unless the store holds the dataset (and the sampled secrets open to the right values)."""
    with store.db.read() as tx:
        users = tx.one("SELECT COUNT(*) FROM users")
        keys = tx.one("SELECT COUNT(*) FROM access_keys WHERE status = 'active'")
    assert users and int(users[0]) == dataset.users, users
    assert keys and int(keys[0]) == dataset.keys, keys
    for access_key, (secret, user_id) in dataset.samples.items():
        found = store.get_access_key(access_key)
        assert found is not None and found.secret_key == secret and found.owner == user_id, access_key


# -- bulk import -----------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    backend: str
    path: str
    seconds: float
    note: str = ""


def time_import(store: Store, dataset: Dataset) -> float:
    """Wall time of ``import_store`` (GC on, as the CLI runs it)."""
    gc.collect()
    start = time.perf_counter()
    counts = import_store(store, dataset.document, passphrase=PASSPHRASE)
    elapsed = time.perf_counter() - start
    assert counts["users"] == dataset.users and counts["access_keys"] == dataset.keys, counts
    return elapsed


def authmw_command() -> list[str]:
    script = Path(sys.executable).with_name("authmw")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from authmw.cli import main; sys.exit(main())"]


def time_cli_import(url: str, export_file: Path, workdir: Path) -> float:
    """Wall time of ``authmw import FILE --store URL`` in a subprocess (start-up and YAML parsing included)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AUTHMW_")}
    env["AUTHMW_MASTER_KEY"] = base64.b64encode(MASTER).decode()
    env["AUTHMW_EXPORT_PASSPHRASE"] = PASSPHRASE
    command = [*authmw_command(), "import", str(export_file), "--store", url, "--format", "json"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"authmw import failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def write_exports(document: dict[str, Any], workdir: Path) -> dict[str, Path]:
    """The document as ``authmw export`` writes it (YAML, one JSON-flow row per line: ``exportfile.dumps``),
    as ``--format json`` writes it, and, for scale, as a block-layout YAML file (libyaml's ``CSafeDumper``),
    which the CLI reads with the YAML loader. Setup, not timed."""
    import yaml

    from authmw.store import exportfile

    paths = {
        "yaml": workdir / "export.yaml",
        "json": workdir / "export.json",
        "yaml_block": workdir / "export-block.yaml",
    }
    paths["yaml"].write_text(exportfile.dumps(document), encoding="utf-8")
    paths["json"].write_text(json.dumps(document, sort_keys=False) + "\n", encoding="utf-8")
    block = yaml.dump(document, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True)
    paths["yaml_block"].write_text(block, encoding="utf-8")
    return paths


def time_parsers(paths: dict[str, Path]) -> dict[str, float]:
    """For scale, each alone (what ``authmw import`` does before ``import_store``): ``exportfile.loads`` of
    authmw's YAML file, ``json.loads`` of the JSON file, and ``yaml.load`` with libyaml's ``CSafeLoader`` of
    the block-layout YAML file (how any other YAML layout is read)."""
    import yaml

    from authmw.store import exportfile

    out = {}
    for kind, path in paths.items():
        text = path.read_text(encoding="utf-8")
        gc.collect()
        start = time.perf_counter()
        if kind == "yaml":
            exportfile.loads(text)
        elif kind == "yaml_block":
            yaml.load(text, Loader=yaml.CSafeLoader)  # the safe C loader, as the CLI uses for other layouts
        else:
            json.loads(text)
        out[kind] = time.perf_counter() - start
        out[f"{kind}_mb"] = path.stat().st_size / 1e6
    return out


# -- lookup cases ----------------------------------------------------------------------------------------

HIT = "CachedIdentity.get_access_key, cache hit, same key"
HIT_ROTATING = f"CachedIdentity.get_access_key, cache hit, {ROTATING:,} cached keys in turn"
MISS = "CachedIdentity.get_access_key, cache miss (key not looked up before)"
UNCACHED = "Store.get_access_key, uncached (key not looked up before)"
UNKNOWN_FIRST = "CachedIdentity.get_access_key, unknown key, first lookup"
UNKNOWN_AGAIN = "CachedIdentity.get_access_key, unknown key again (negative-cache hit)"
CONTROL = "control: harness + empty function call"
FLOOR_SQLITE = "floor: the key query on a plain sqlite3 connection (same key, autocommit)"
FLOOR_PG = "floor: SELECT 1 on a plain psycopg connection (one round trip)"
#: The key and revision queries of a lookup, as two statements in one read transaction (the store's first
#: read path; the breakdown compares it with the store's single statement).
KEY_QUERY = (
    "SELECT k.secret_sealed, k.user_id FROM access_keys k JOIN users u ON u.id = k.user_id "
    "WHERE k.access_key = ? AND k.status = 'active' AND u.enabled = 1"
)
REVISION_QUERY = "SELECT value FROM authmw_meta WHERE name = 'revision'"


class KeyPool:
    """Access keys handed out once each, in the dataset's shuffled order, from ``start``; wraps when exhausted."""

    def __init__(self, keys: Sequence[str], start: int) -> None:
        self._keys = keys
        self._next = start % len(keys)
        self.handed = 0

    def take(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            end = min(len(self._keys), self._next + n - len(out))
            out += self._keys[self._next : end]
            self._next = end % len(self._keys)
        self.handed += n
        return out

    @property
    def wrapped(self) -> bool:
        return self.handed > len(self._keys)


def _noop() -> None:
    return None


def _loop(fn: Callable[[str], object], items: list[str]) -> Callable[[], None]:
    def run() -> None:
        for item in items:
            fn(item)

    return run


def floor_case(store: Store, url: str, access_key: str, label: str) -> Case:
    """What one statement costs without the store around it: the key query on SQLite, a round trip on
    PostgreSQL (the least a miss can cost there)."""
    if store.db.dialect == "sqlite":
        raw = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
        cursor = raw.execute(KEY_QUERY, (access_key,))
        assert cursor.fetchone() is not None
        return Case(FLOOR_SQLITE, label, same_op(lambda: raw.execute(KEY_QUERY, (access_key,)).fetchone()))
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    return Case(FLOOR_PG, label, same_op(lambda: conn.execute("SELECT 1").fetchone()))


def lookup_cases(store: Store, url: str, dataset: Dataset, label: str) -> tuple[list[Case], list[KeyPool]]:
    order = dataset.lookup_order
    hit_key = order[-1]
    cached = CachedIdentity(store)  # the defaults a deployment gets (refresh 0.25 s, max_entries 50,000)
    found = cached.get_access_key(hit_key)
    assert found is not None and found.access_key == hit_key
    rotating = order[-1 - ROTATING : -1] if len(order) > ROTATING + 1 else order[: ROTATING // 2]
    for key in rotating:
        assert cached.get_access_key(key) is not None
    unknown = "NOSUCHACCESSKEY00000"
    assert cached.get_access_key(unknown) is None

    def rotating_hits(n: int) -> Callable[[], object]:
        return _loop(cached.get_access_key, list(islice(cycle(rotating), n)))

    # Misses: a fresh cache per batch (built and polled untimed, no polling while timed) and keys that were
    # never looked up, so each lookup is one read transaction, one query and one AES-GCM open.
    miss_pool, uncached_pool = KeyPool(order, 0), KeyPool(order, len(order) // 2)

    def misses(n: int) -> Callable[[], object]:
        fresh = CachedIdentity(store, refresh=NO_POLL)
        fresh.poll()
        return _loop(fresh.get_access_key, miss_pool.take(n))

    def uncached(n: int) -> Callable[[], object]:
        return _loop(store.get_access_key, uncached_pool.take(n))

    serial = iter(range(10**12))

    def unknown_first(n: int) -> Callable[[], object]:
        fresh = CachedIdentity(store, refresh=NO_POLL)
        fresh.poll()
        return _loop(fresh.get_access_key, [f"NOSUCHKEY{next(serial):011d}" for _ in range(n)])

    probe = CachedIdentity(store, refresh=NO_POLL)
    assert probe.get_access_key(order[0]) is not None and probe.get_access_key("NOSUCHKEY99999999999") is None
    cases = [
        Case(HIT, label, same_op(cached.get_access_key, hit_key)),
        Case(HIT_ROTATING, label, rotating_hits, note=f"{len(rotating):,} keys"),
        Case(MISS, label, misses),
        Case(UNCACHED, label, uncached),
        Case(UNKNOWN_FIRST, label, unknown_first),
        Case(UNKNOWN_AGAIN, label, same_op(cached.get_access_key, unknown)),
        floor_case(store, url, hit_key, label),
    ]
    return cases, [miss_pool, uncached_pool]


# -- memory ----------------------------------------------------------------------------------------------


def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_child(url: str, max_entries: int | None, touch: int) -> dict[str, Any]:
    """In this (fresh) process: open the store, look up ``touch`` distinct keys through one cache, report RSS.

    The keys are read from the store 1,000 at a time (keyset pagination), so the list of keys to touch is
    never held whole: what grows is the cache.
    """
    store = Store(open_database(url), Keyring.from_keys(MASTER))
    cached = CachedIdentity(store) if max_entries is None else CachedIdentity(store, max_entries=max_entries)
    assert cached.get_access_key("NOSUCHACCESSKEY00000") is None  # connection, revision poll, first query
    gc.collect()
    rss_before = _status_kb("VmRSS")
    start = time.perf_counter()
    touched, after = 0, ""
    while touched < touch:
        with store.db.read() as tx:
            rows = tx.rows(
                "SELECT access_key FROM access_keys WHERE access_key > ? ORDER BY access_key LIMIT ?",
                (after, min(1_000, touch - touched)),
            )
        if not rows:
            break
        for (access_key,) in rows:
            if cached.get_access_key(access_key) is None:
                raise RuntimeError(f"{access_key} not found")
        touched += len(rows)
        after = rows[-1][0]
    elapsed = time.perf_counter() - start
    rss_after = _status_kb("VmRSS")
    peak = _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    entries = len(cached._keys)  # diagnosis only: how many entries the bound let the cache keep
    store.close()
    return {
        "touched": touched,
        "entries": entries,
        "max_entries": max_entries,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "peak_kb": peak,
        "seconds": elapsed,
    }


@dataclass
class MemoryResult:
    backend: str
    bound: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_mb(self) -> float:
        return float(self.data["peak_kb"]) / 1024


def run_memory_child(url: str, max_entries: int | None, touch: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", url, "--touch", str(touch)]
    if max_entries is not None:
        command += ["--max-entries", str(max_entries)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the run ---------------------------------------------------------------------------------------------


class Quietness:
    """``Neighbours`` minus what works for this benchmark: its child processes and the local PostgreSQL
    server (its backends run our queries), read from ``/proc`` (the server's CPU counts when it is local)."""

    def __init__(self) -> None:
        self._neighbours = Neighbours()
        self._start = time.monotonic()
        self._ours = self._our_cpu()

    @staticmethod
    def _our_cpu() -> float:
        times = os.times()
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            name, _, rest = text.partition(" (")[2].rpartition(") ")
            if name == "postgres":
                fields = rest.split()
                ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        return times.children_user + times.children_system + ticks / os.sysconf("SC_CLK_TCK")

    def busy_cpus(self) -> float | None:
        busy = self._neighbours.busy_cpus()
        elapsed = time.monotonic() - self._start
        if busy is None or elapsed <= 0:
            return busy
        return max(0.0, busy - (self._our_cpu() - self._ours) / elapsed)


def facts(backends: Sequence[str], server: str) -> dict[str, Any]:
    base = machine()
    keep = ("date", "python", "implementation", "platform", "cpu", "cpu_count", "load_average_start")
    out = {key: base[key] for key in keep}
    for name in ("authmw", "cryptography", "psycopg", "PyYAML"):
        out[name] = _package(name)
    out["sqlite"] = sqlite3.sqlite_version
    try:
        import yaml

        out["libyaml"] = bool(yaml.__with_libyaml__)
    except ImportError:
        out["libyaml"] = None
    out["postgresql"] = None
    if "postgresql" in backends:
        import psycopg

        with psycopg.connect(server, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            out["postgresql"] = row[0] if row else "unknown"
    return out


@dataclass
class Run:
    dataset: Dataset
    imports: list[ImportResult] = field(default_factory=list)
    parsers: dict[str, float] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    pools: dict[str, list[KeyPool]] = field(default_factory=dict)
    memory: list[MemoryResult] = field(default_factory=list)


def run(args: argparse.Namespace, workdir: Path) -> Run:
    print(f"  building the dataset: {args.users:,} users, {args.users * KEYS_PER_USER:,} keys ...", file=sys.stderr)
    result = Run(build_dataset(args.users, workdir))
    dataset = result.dataset
    exports: dict[str, Path] = {}
    if args.cli:
        print("  writing the YAML and JSON exports ...", file=sys.stderr, flush=True)
        exports = write_exports(dataset.document, workdir)
    touch = min(TOUCH, dataset.keys)
    with contextlib.ExitStack() as stack:
        stores: dict[str, tuple[Store, str]] = {}
        for backend in args.backends:
            label = BACKENDS[backend]
            print(f"  {label}: import_store ...", file=sys.stderr, flush=True)
            store, url = stack.enter_context(fresh_store(backend, workdir, "api", args.postgres))
            seconds = time_import(store, dataset)
            check_imported(store, dataset)
            result.imports.append(ImportResult(label, "import_store", seconds))
            stores[backend] = (store, url)
            for kind in ("yaml", "json") if exports else ():
                path = exports[kind]
                print(f"  {label}: authmw import FILE ({kind}) ...", file=sys.stderr, flush=True)
                with fresh_store(backend, workdir, "cli", args.postgres) as (cli_store, cli_url):
                    seconds = time_cli_import(cli_url, path, workdir)
                    check_imported(cli_store, dataset)
                result.imports.append(ImportResult(label, f"cli-{kind}", seconds))
        if exports:
            print("  parsing the YAML and the JSON file alone ...", file=sys.stderr, flush=True)
            result.parsers = time_parsers(exports)
            for path in exports.values():
                path.unlink()
        control = Case(CONTROL, "control", same_op(_noop))
        result.cases.append(control)
        for backend, (store, url) in stores.items():
            cases, pools = lookup_cases(store, url, dataset, BACKENDS[backend])
            result.cases += cases
            result.pools[BACKENDS[backend]] = pools
        run_cases(result.cases, args.repeats, args.batch_ms)
        for backend, (_store, url) in stores.items():
            for bound, max_entries in (("default (50,000)", None), (f"{BIG_BOUND:,}", BIG_BOUND)):
                print(f"  {BACKENDS[backend]}: memory, max_entries {bound} ...", file=sys.stderr, flush=True)
                data = run_memory_child(url, max_entries, touch)
                result.memory.append(MemoryResult(BACKENDS[backend], bound, data))
    return result


# -- report ----------------------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return f"{seconds:,.2f}" if seconds < 100 else f"{seconds:,.1f}"


def _mb(kb: float | None) -> str:
    return "–" if kb is None else f"{kb / 1024:,.1f}"


def _within(measured: float, target: float, unit: str) -> tuple[bool, str]:
    if measured <= target:
        return True, f"{target - measured:,.2f} {unit} to spare"
    return False, f"{measured - target:,.2f} {unit} over ({measured / target:.2f}× the target)"


def import_table(result: Run) -> str:
    dataset = result.dataset
    rows = [
        "| backend | path | wall s | target | verdict |",
        "|---|---|---:|---|---|",
    ]
    names = {
        "import_store": "`import_store(store, document, passphrase=...)`",
        "cli-yaml": "`authmw import FILE`, YAML file (subprocess: start-up, parse, import)",
        "cli-json": "`authmw import FILE`, JSON file (`export --format json`; subprocess)",
    }
    for item in result.imports:
        met, how = _within(item.seconds, IMPORT_TARGET_S, "s")
        rows.append(
            f"| {item.backend} | {names[item.path]} | {_s(item.seconds)} | ≤ {IMPORT_TARGET_S:g} s | "
            f"{'met' if met else 'MISSED'}: {how} |"
        )
    if result.parsers:
        parsers = result.parsers
        rows += [
            f"| – | for scale: reading authmw's {parsers['yaml_mb']:,.1f} MB YAML export (`exportfile.loads`) | "
            f"{_s(parsers['yaml'])} | | what the CLI does before `import_store` |",
            f"| – | for scale: `json.loads` of the {parsers['json_mb']:,.1f} MB JSON file | {_s(parsers['json'])} | | "
            "the same for a JSON file |",
            f"| – | for scale: `yaml.load(text, CSafeLoader)` of the same document in block-layout YAML "
            f"({parsers['yaml_block_mb']:,.1f} MB) | {_s(parsers['yaml_block'])} | | how any other YAML layout "
            "is read |",
        ]
    lead = (
        f"Dataset: {dataset.users:,} users and {dataset.keys:,} access keys ({KEYS_PER_USER} per user, 20-character "
        f"keys, 40-character secrets sealed under the export passphrase) in domain `{DEFAULT_DOMAIN}`, plus what "
        f"`init` creates ({dataset.system_rows}). One import per path and backend, into a fresh `init`-ed store; "
        "GC on, as the CLI runs.\n\n"
    )
    return lead + "\n".join(rows)


def lookup_table(result: Run) -> str:
    rows = [
        "| backend | case | median µs/op | min µs | IQR µs | ops × repeats | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for case in result.cases:
        q1, q3 = case.quartiles
        name = f"{case.name} ({case.note})" if case.note else case.name
        target = ""
        if case.name in (HIT, HIT_ROTATING):
            target = f"≤ {HIT_TARGET_US:g} µs"
        elif case.name == MISS and case.group == BACKENDS["sqlite"]:
            target = f"≤ {MISS_TARGET_US:g} µs"
        elif case.name == MISS:
            target = "none"
        rows.append(
            f"| {case.group} | {name} | {_us(case.median)} | {_us(min(case.per_op_ns))} | {_us(q1)}–{_us(q3)} "
            f"| {case.n} × {len(case.per_op_ns)} | {target} |"
        )
    notes = []
    for backend, pools in result.pools.items():
        handed = sum(pool.handed for pool in pools)
        wrapped = any(pool.wrapped for pool in pools)
        reuse = " (the pool wrapped: some keys were looked up twice, in different caches)" if wrapped else ""
        notes.append(f"{backend}: {handed:,} distinct-key lookups drawn from {result.dataset.keys:,} keys{reuse}")
    return "\n".join(rows) + "\n\n" + "; ".join(notes) + "."


def memory_table(result: Run) -> str:
    rows = [
        "| backend | max_entries | keys looked up | entries kept | RSS before the lookups MB | RSS after MB "
        "| peak RSS (VmHWM) MB | lookups s | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for item in result.memory:
        d = item.data
        target = ""
        if item.backend == BACKENDS["sqlite"] and d["max_entries"] is None:
            met, how = _within(item.peak_mb, MEMORY_TARGET_MB, "MB")
            target = f"< {MEMORY_TARGET_MB:g} MB: {'met' if met else 'MISSED'}, {how}"
        rows.append(
            f"| {item.backend} | {item.bound} | {d['touched']:,} | {d['entries']:,} | {_mb(d['rss_before_kb'])} | "
            f"{_mb(d['rss_after_kb'])} | {_mb(d['peak_kb'])} | {_s(d['seconds'])} | {target} |"
        )
    return "\n".join(rows)


def verdicts(result: Run) -> tuple[list[Verdict], list[str]]:
    """Targets, and lines for the measurements that have none."""
    out: list[Verdict] = []
    info: list[str] = []
    users = result.dataset.users
    scale = "" if users == USERS else f" (measured at {users:,} users; the target is for {USERS:,})"
    size = f"{USERS:,} users + {USERS * KEYS_PER_USER:,} keys"
    for item in result.imports:
        how = PATHS.get(item.path, item.path)
        met, detail = _within(item.seconds, IMPORT_TARGET_S, "s")
        out.append(Verdict(f"bulk import of {size} ≤ 60 s, {how}, {item.backend}", met, f"{detail}{scale}"))
    by = {(case.group, case.name): case for case in result.cases}
    for backend in result.pools:
        hits = [(name, by[(backend, name)]) for name in (HIT, HIT_ROTATING) if (backend, name) in by]
        if hits:
            worst = max(case.median for _name, case in hits) / 1000
            met, how = _within(worst, HIT_TARGET_US, "µs")
            listed = ", ".join(
                f"{'same key' if name == HIT else 'rotating keys'} {case.median / 1000:.2f} µs" for name, case in hits
            )
            out.append(Verdict(f"cache hit ≤ 1 µs, {backend}", met, f"{listed}; worst {how}"))
        miss = by.get((backend, MISS))
        if miss is None:
            continue
        us = miss.median / 1000
        if backend == BACKENDS["sqlite"]:
            met, how = _within(us, MISS_TARGET_US, "µs")
            out.append(Verdict(f"cache miss ≤ 100 µs, {backend}", met, f"median {us:.1f} µs, {how}"))
        else:
            info.append(f"cache miss on {backend} (no target): median {us:.1f} µs")
        uncached = by.get((backend, UNCACHED))
        first, again = by.get((backend, UNKNOWN_FIRST)), by.get((backend, UNKNOWN_AGAIN))
        if uncached and first and again:
            info.append(
                f"{backend}: uncached Store.get_access_key {uncached.median / 1000:.1f} µs; unknown key "
                f"{first.median / 1000:.1f} µs on first lookup, {again.median / 1000:.2f} µs after (negative cache)"
            )
        floor = by.get((backend, FLOOR_PG)) or by.get((backend, FLOOR_SQLITE))
        if floor:
            what = "one round trip" if floor.name == FLOOR_PG else "the key query alone"
            info.append(
                f"{backend}: {what} on a plain driver connection {floor.median / 1000:.1f} µs; the miss costs "
                f"{miss.median / floor.median:.1f}× that"
            )
    for item in result.memory:
        d = item.data
        touched = f"{d['touched']:,} keys"
        if item.backend == BACKENDS["sqlite"] and d["max_entries"] is None:
            met, how = _within(item.peak_mb, MEMORY_TARGET_MB, "MB")
            goal = f"peak RSS < 150 MB after {TOUCH:,} distinct keys, default max_entries, {item.backend}"
            note = "" if d["touched"] >= TOUCH else f" (only {touched} in this dataset)"
            out.append(Verdict(goal, met, f"{item.peak_mb:.1f} MB peak, {how}{note}"))
        else:
            info.append(
                f"peak RSS, {item.backend}, max_entries {item.bound}, {touched}: {item.peak_mb:.1f} MB "
                f"({d['entries']:,} entries kept)"
            )
    return out, info


def report(result: Run, found: dict[str, Any], args: argparse.Namespace) -> list[Verdict]:
    pg = f", PostgreSQL {found['postgresql']}" if found["postgresql"] else ""
    versions = (
        f"authmw {found['authmw']}, SQLite {found['sqlite']}{pg}, psycopg {found['psycopg']}, "
        f"cryptography {found['cryptography']}, PyYAML {found['PyYAML']} (libyaml: {found['libyaml']})"
    )
    print_preamble("Identity store benchmarks", found, args, versions)
    print("### Bulk import\n")
    print(import_table(result))
    print("\n### Access-key lookups\n")
    print(lookup_table(result))
    print("\n### Memory of the access-key cache\n")
    print(
        "A fresh `python` process opens the store, looks up keys through one `CachedIdentity` (keys read from the "
        "store 1,000 at a time), and reports its RSS from `/proc/self/status`.\n"
    )
    print(memory_table(result))
    out, info = verdicts(result)
    print("\n### Targets\n")
    for verdict in out:
        print(verdict.line())
    for line in info:
        print(f"- {line}")
    return out


def dump(path: Path, result: Run, found: dict[str, Any], out: list[Verdict], args: argparse.Namespace) -> None:
    cases = [case_record(case, backend=case.group) for case in result.cases]
    document = {
        "machine": found,
        "settings": {
            "users": args.users,
            "keys": result.dataset.keys,
            "backends": args.backends,
            "repeats": args.repeats,
            "batch_ms": args.batch_ms,
            "seed": SEED,
        },
        "imports": [{"backend": i.backend, "path": i.path, "seconds": i.seconds} for i in result.imports],
        "parsers": result.parsers,
        "lookups": cases,
        "memory": [{"backend": m.backend, "max_entries": m.bound, **m.data} for m in result.memory],
        "targets": [{"target": v.target, "met": v.met, "detail": v.detail} for v in out],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nraw results written to {path}", file=sys.stderr)


# -- breakdown -------------------------------------------------------------------------------------------


def breakdown_cases(store: Store, url: str, access_key: str, label: str) -> list[Case]:
    """The parts of ``Store.read_access_key`` (what a cache miss runs), each timed alone on one key.

    The key is the same on every call, so its pages are hot: the gap to the miss row of the main table is
    what looking up keys never read before adds. ``_KEY_LOOKUP`` is the store's private statement (read
    here for diagnosis); the comparison rows run the revision and key queries as two statements in one read
    transaction, and the floors run on a plain driver connection without the store around it.
    """
    db = store.db
    statement = getattr(reads, "_KEY_LOOKUP", None)
    with db.read() as tx:
        row = tx.one(KEY_QUERY, (access_key,))
    assert row is not None
    sealed, context = row[0], access_key_context(access_key, row[1])

    def in_transaction() -> None:
        with db.read() as tx:
            tx.one(REVISION_QUERY)
            tx.one(KEY_QUERY, (access_key,))

    def empty() -> None:
        with db.read():
            pass

    if db.dialect == "sqlite":
        raw: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
        placeholder = "?"
    else:
        import psycopg

        raw = psycopg.connect(url, autocommit=True)
        placeholder = "%s"

    def floor_query() -> object:
        return raw.execute(KEY_QUERY.replace("?", placeholder), (access_key,)).fetchone()

    def floor_trip() -> object:
        return raw.execute("SELECT 1").fetchone()

    assert floor_query() is not None
    steps: list[tuple[str, Callable[..., object], tuple[Any, ...]]] = [
        ("Store.read_access_key (total)", store.read_access_key, (access_key,))
    ]
    if statement is not None and hasattr(db, "query"):
        assert db.query(statement, (access_key,)) is not None
        name = "1 db.query: the store's one statement (revision + key, autocommit)"
        steps.append((name, db.query, (statement, (access_key,))))
    steps += [
        ("2 Keyring.open: AES-GCM open of the sealed secret", store.keyring.open, (sealed, context)),
        ("compare: db.read() transaction around the revision and key queries", in_transaction, ()),
        ("compare: db.read(), an empty read transaction", empty, ()),
        ("floor: the key query on a plain driver connection (autocommit)", floor_query, ()),
        ("floor: SELECT 1 on a plain driver connection", floor_trip, ()),
    ]
    return [Case(name, label, same_op(fn, *args)) for name, fn, args in steps]


def breakdown(args: argparse.Namespace, workdir: Path) -> None:
    dataset = build_dataset(args.users, workdir)
    with contextlib.ExitStack() as stack:
        cases: list[Case] = []
        for backend in args.backends:
            store, url = stack.enter_context(fresh_store(backend, workdir, "breakdown", args.postgres))
            import_store(store, dataset.document, passphrase=PASSPHRASE)
            cases += breakdown_cases(store, url, dataset.lookup_order[0], BACKENDS[backend])
        run_cases(cases, args.repeats, args.batch_ms)
    print("\n## Where the µs of a cache miss go (`Store.read_access_key`, one key, hot pages)\n")
    labels = [BACKENDS[backend] for backend in args.backends]
    print("| step | " + " | ".join(f"{label} µs" for label in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for name in dict.fromkeys(case.name for case in cases):
        cells = [next((_us(c.median) for c in cases if c.name == name and c.group == label), "–") for label in labels]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        "\nEach step is timed alone (its call overhead included), so the steps do not add up exactly to the total; "
        "the compare rows are what the same reads cost as two statements in a read transaction."
    )


# -- profile ---------------------------------------------------------------------------------------------


def _profile(title: str, fn: Callable[[], object], lines: int = 16) -> None:
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    fn()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(lines)
    print(f"\n## cProfile: {title} (sorted by own time)\n")
    print("```")
    print("\n".join(line.rstrip() for line in text.getvalue().splitlines() if line.strip()))
    print("```")


def profile(args: argparse.Namespace, workdir: Path) -> None:
    """cProfile of ``import_store`` and of 5,000 cache misses per backend, and of parsing a YAML export."""
    dataset = build_dataset(args.users, workdir)
    for backend in args.backends:
        label = BACKENDS[backend]
        with fresh_store(backend, workdir, "profile", args.postgres) as (store, _url):
            _profile(
                f"import_store, {dataset.users:,} users + {dataset.keys:,} keys, {label}",
                lambda s=store: import_store(s, dataset.document, passphrase=PASSPHRASE),
            )
            cached = CachedIdentity(store, refresh=NO_POLL)
            cached.poll()
            keys = dataset.lookup_order[:5_000]
            _profile(f"{len(keys):,} cache misses, {label}", _loop(cached.get_access_key, keys))
    if args.cli:
        import yaml

        part = dict(dataset.document)
        part["users"] = part["users"][:10_000]
        kept = {row["id"] for row in part["users"]}
        part["access_keys"] = [row for row in part["access_keys"] if row["user_id"] in kept]
        text = yaml.dump(part, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True)
        title = f"yaml.load(CSafeLoader) of an export of {len(part['users']):,} users ({len(text) / 1e6:.1f} MB)"
        _profile(title, lambda: yaml.load(text, Loader=yaml.CSafeLoader))


# -- main ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=USERS, help=f"users in the dataset (default {USERS:,})")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--postgres", default=PG_SERVER, metavar="URL", help=f"server (default {PG_SERVER})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw results as JSON")
    parser.add_argument("--repeats", type=int, default=15, help="timed batches per lookup case (default 15)")
    parser.add_argument("--batch-ms", type=float, default=50.0, help="target duration of one batch (default 50)")
    parser.add_argument("--no-cli", dest="cli", action="store_false", help="skip the `authmw import FILE` paths")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--profile", action="store_true", help="cProfile the import, misses and YAML parsing")
    parser.add_argument("--breakdown", action="store_true", help="time the steps of a cache miss")
    parser.add_argument("--memory-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--max-entries", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--touch", type=int, default=TOUCH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.max_entries, args.touch)))
        return 0
    if args.users < 2 or args.repeats < 1 or args.batch_ms <= 0:
        parser.error("--users must be at least 2, --repeats and --batch-ms positive")
    args.backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory(prefix="authmw-bench-store-") as tmp:
        if args.profile:
            profile(args, Path(tmp))
            return 0
        if args.breakdown:
            breakdown(args, Path(tmp))
            return 0
        found = facts(args.backends, args.postgres)
        quiet = Quietness()
        result = run(args, Path(tmp))
        found["other_busy_cpus"] = quiet.busy_cpus()
        found["load_average_end"] = os.getloadavg()
    out = report(result, found, args)
    if args.json:
        dump(args.json, result, found, out, args)
    return 1 if args.check and any(v.met is False for v in out) else 0


if __name__ == "__main__":
    sys.exit(main())
