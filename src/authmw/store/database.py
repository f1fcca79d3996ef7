"""The two databases behind the store: embedded SQLite (WAL) and PostgreSQL (psycopg 3 with a pool).

Both expose the same tiny interface: ``write()`` and ``read()`` context managers yielding a :class:`Tx` whose
SQL uses ``?`` placeholders. A write transaction serialises with every other writer (``BEGIN IMMEDIATE`` on
SQLite, the revision row's lock on PostgreSQL) and bumps the store revision that caches watch; a read
transaction is one consistent snapshot. Driver errors become :class:`Conflict` (a constraint refused the
change) or :class:`~authmw.errors.StoreUnavailable` (the database cannot be reached or is locked too long).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from authmw.errors import ChangeRefused, ConfigurationError, StoreUnavailable
from authmw.extras import requires

__all__ = [
    "Conflict",
    "Database",
    "PostgresDatabase",
    "SqliteDatabase",
    "StoreTimeouts",
    "Tx",
    "open_database",
    "table_exists",
]

Row = tuple[Any, ...]
_BUMP = "UPDATE authmw_meta SET value = value + 1 WHERE name = 'revision'"
_PG_WRITE_LOCK = 0x61757468_6D77  # "authmw": the advisory lock key of store writers
_REVIVE_EVERY = 0.25  # seconds between direct connection attempts after a PostgreSQL failure


class Conflict(ChangeRefused):
    """The database refused the change: a uniqueness or reference constraint, or a value out of its range."""


class Tx(Protocol):
    """One transaction's statements."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def run_many(self, sql: str, params: Iterable[Sequence[Any]]) -> None: ...


class Database(Protocol):
    dialect: str
    url: str

    def write(self, *, bump: bool = True) -> Any:
        """A write transaction; ``bump=False`` only for bookkeeping no cache reads (a key's last use)."""

    def read(self) -> Any: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def close(self) -> None: ...


class _SqliteTx:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def run_many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, params)


class _Held:
    """A thread's connection; when the thread ends its thread-local slot goes, and the connection is closed."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


# A change the database refused because of the value given, not because it is unreachable.
_SQLITE_REFUSED = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    OverflowError,
    UnicodeEncodeError,
)


class SqliteDatabase:
    """One connection per thread on a WAL-mode file; writers wait up to ``busy_timeout`` seconds for the lock.

    Only with ``create`` (``authmw init``) are a missing file and its directory created: any other use of a
    store that is not there is :class:`~authmw.errors.StoreUnavailable`, naming the path looked for, and
    leaves nothing behind (a mistyped URL must not become an empty store). A file deleted or replaced after it
    was opened is unavailable too (one ``stat`` per transaction): its open connections would otherwise keep
    serving the deleted data indefinitely. ``read_only`` opens an existing file with SQLite's ``mode=ro`` and
    ``query_only``: nothing is created or changed, so an unprivileged reader (the SSH gate) needs read access
    only (plus the WAL's ``-shm`` file, which SQLite creates beside the store if it is absent).
    """

    dialect = "sqlite"

    def __init__(self, path: str, *, busy_timeout: float = 30.0, create: bool = False, read_only: bool = False) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.read_only = read_only
        self._busy_timeout = busy_timeout
        self._create = create
        if not create and not os.path.isfile(path):  # at once: before the master key, say, is looked for
            raise StoreUnavailable(missing_store(path))
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._file: tuple[int, int] | None = None  # (device, inode) of the file first opened

    def _same_file(self) -> None:
        """Refuse a file deleted or replaced since it was opened."""
        try:
            found = os.stat(self.path)
        except OSError:
            raise StoreUnavailable(missing_store(self.path)) from None
        if self._file is None:
            self._file = (found.st_dev, found.st_ino)
        elif self._file != (found.st_dev, found.st_ino):
            raise StoreUnavailable(f"the SQLite store {os.path.abspath(self.path)} was replaced while open")

    def _conn(self) -> sqlite3.Connection:
        held: _Held | None = getattr(self._local, "held", None)
        conn = None if held is None else held.conn
        if conn is not None:
            self._same_file()
        elif self.read_only:
            conn = self._connect_read_only()
        else:
            try:
                if self._create:
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    # Owner-only from the start: the file holds sealed secrets and password hashes. Only ever
                    # create it: closing a descriptor of a file this process has open in SQLite drops every
                    # POSIX lock the process holds on it, and another process could then delete the WAL under us.
                    with suppress(FileExistsError):
                        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
                elif not os.path.isfile(self.path):
                    raise StoreUnavailable(missing_store(self.path))
                # mode=rw: SQLite itself never creates the file (it could be deleted since the check above).
                target = f"{Path(self.path).absolute().as_uri()}?mode=rw"
                conn = sqlite3.connect(
                    target, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False, uri=True
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                self._same_file()
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from None
        if held is None or held.conn is not conn:
            held = _Held(conn)
            weakref.finalize(held, conn.close)
            self._local.held = held
            self._held.add(held)
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path} read-only: {exc}") from None
        return conn

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[_SqliteTx]:
        conn = self._conn()
        try:
            conn.execute(begin)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store busy or unreadable: {exc}") from None
        try:
            yield _SqliteTx(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, _SQLITE_REFUSED):
                raise Conflict(f"the store refused the value: {exc}") from None
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"SQLite store error: {exc}") from None
            raise

    @contextmanager
    def write(self, *, bump: bool = True) -> Iterator[_SqliteTx]:
        if self.read_only:
            raise ChangeRefused("the store was opened read-only")
        with self._transaction("BEGIN IMMEDIATE") as tx:
            if bump and _has_meta(tx):
                tx.run(_BUMP)
            yield tx

    @contextmanager
    def read(self) -> Iterator[_SqliteTx]:
        with self._transaction("BEGIN") as tx:
            yield tx

    def query(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """One row of one statement, outside any transaction (a single statement reads one snapshot)."""
        try:
            row: Row | None = self._conn().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store error: {exc}") from None
        return row

    def close(self) -> None:
        for held in list(self._held):
            held.conn.close()
        self._held = weakref.WeakSet()
        self._local = threading.local()


def _has_meta(tx: Tx) -> bool:
    return table_exists(tx, "sqlite", "authmw_meta")


def table_exists(tx: Tx, dialect: str, table: str) -> bool:
    """Whether ``table`` exists (an empty database has none of authmw's tables)."""
    if dialect == "sqlite":
        return tx.one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)) is not None
    row = tx.one("SELECT to_regclass(?)", (table,))
    return row is not None and row[0] is not None


class _PgTx:
    __slots__ = ("_cur",)

    _converted: dict[str, str] = {}  # noqa: RUF012 - a process-wide memo of placeholder translations

    def __init__(self, cursor: Any) -> None:
        self._cur = cursor

    @classmethod
    def _sql(cls, sql: str) -> str:
        converted = cls._converted.get(sql)
        if converted is None:
            converted = cls._converted[sql] = sql.replace("%", "%%").replace("?", "%s")
        return converted

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cur.execute(self._sql(sql), params)
        return list(self._cur.fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._cur.execute(self._sql(sql), params)
        row: Row | None = self._cur.fetchone()
        return row

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(self._sql(sql), params)
        return int(self._cur.rowcount)

    def run_many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self._cur.executemany(self._sql(sql), list(params))


@dataclass(frozen=True, slots=True)
class StoreTimeouts:
    """How long a serving process waits on PostgreSQL: ``pool`` seconds for a pooled connection (what a caller
    waits at most), ``statement`` seconds a statement may run on the server, ``connect`` seconds to open a
    connection (libpq's floor is 2: only the pool's threads wait for it), ``keepalive`` seconds of silence before
    TCP keepalive probes (1 s apart, 3 of them, and the same bound on unacknowledged data), ``pool_size``
    connections at most. The defaults are an administrator's (no statement limit)."""

    pool: float = 10.0
    statement: float | None = None
    connect: int = 10
    keepalive: int = 30
    pool_size: int = 10


class PostgresDatabase:
    """A psycopg 3 connection pool; reads run as REPEATABLE READ, READ ONLY snapshots.

    With ``lazy`` an unreachable server is not an error here (a proxy may start while the database is down):
    calls fail with :class:`~authmw.errors.StoreUnavailable` until it answers. After a failure, the pool is
    replaced by a fresh one as soon as a direct connection succeeds (checked at most every
    :data:`_REVIVE_EVERY` seconds): psycopg_pool's own reconnection backs off exponentially, which took
    14-38 s to notice a database that came back.
    """

    dialect = "postgresql"

    def __init__(
        self, url: str, *, timeouts: StoreTimeouts | None = None, lazy: bool = False, read_only: bool = False
    ) -> None:
        with requires("postgres", "a PostgreSQL store"):
            import psycopg
            import psycopg_pool
        self.url = url
        self.read_only = read_only
        self._psycopg = psycopg
        self._pool_module = psycopg_pool
        self._timeouts = timeouts = timeouts or StoreTimeouts()
        self._options: dict[str, Any] = {
            "connect_timeout": max(2, timeouts.connect),
            "keepalives": 1,
            "keepalives_idle": timeouts.keepalive,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": (timeouts.keepalive + 3) * 1000,
        }
        server: list[str] = []
        if timeouts.statement is not None:
            server.append(f"-c statement_timeout={max(1, round(timeouts.statement * 1000))}")
        if read_only:  # a read-only session refuses every write in the server, whatever the statement
            server.append("-c default_transaction_read_only=on")
        if server:
            # Appended to the URL's own options (a search_path, say), not replacing them.
            given = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("options", [""])[-1]
            self._options["options"] = " ".join([given, *server]).strip()
        self._pool_timeout = psycopg_pool.PoolTimeout
        self._revive_lock = threading.Lock()
        self._failed_at: float | None = None
        self._revived_at = float("-inf")
        try:  # one direct attempt first: a wrong URL fails at once with the server's own message
            psycopg.connect(url, **self._options).close()
        except psycopg.Error as exc:
            if not lazy:
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL store {_redact(url)}: {_first_line(exc)}"
                ) from None
            self._failed_at = time.monotonic()
        self._pool = self._open_pool(wait=not lazy)

    def _open_pool(self, *, wait: bool) -> Any:
        pool = self._pool_module.ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._timeouts.pool_size,
            timeout=self._timeouts.pool,
            open=False,
            kwargs={"autocommit": True, **self._options},
        )
        if not wait:
            pool.open(wait=False)
            return pool
        try:
            pool.open(wait=True, timeout=max(self._timeouts.pool, float(self._options["connect_timeout"])))
        except self._pool_timeout:
            pool.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL store {_redact(self.url)}") from None
        return pool

    def _failed(self) -> None:
        if self._failed_at is None:
            self._failed_at = time.monotonic()

    def _revive(self) -> None:
        """After a failure: if a direct connection succeeds now, serve from a fresh pool (the old one is closed on
        a thread: connections stuck on a dead network must not hold the caller)."""
        if self._failed_at is None or not self._revive_lock.acquire(blocking=False):
            return
        try:
            now = time.monotonic()
            if self._failed_at is None or now - self._revived_at < _REVIVE_EVERY:
                return
            self._revived_at = now
            try:
                self._psycopg.connect(self.url, **self._options).close()
            except self._psycopg.Error:
                return
            old, self._pool = self._pool, self._open_pool(wait=False)
            self._failed_at = None
            threading.Thread(target=old.close, kwargs={"timeout": 0}, name="authmw-pool-close", daemon=True).start()
        finally:
            self._revive_lock.release()

    @contextmanager
    def _transaction(self, first: str | None) -> Iterator[_PgTx]:
        psycopg = self._psycopg
        self._revive()
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                tx = _PgTx(cur)
                if first:
                    cur.execute(first)
                yield tx
        except (psycopg.IntegrityError, psycopg.DataError, OverflowError, UnicodeEncodeError) as exc:
            raise Conflict(f"the store refused the value: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            self._failed()
            raise StoreUnavailable(f"PostgreSQL store error: {_first_line(exc)}") from None
        except self._pool_timeout:
            self._failed()
            raise StoreUnavailable("PostgreSQL pool exhausted or unreachable") from None

    @contextmanager
    def write(self, *, bump: bool = True) -> Iterator[_PgTx]:
        if self.read_only:  # refused here as on SQLite; the session would refuse the first change anyway
            raise ChangeRefused("the store was opened read-only")
        # One advisory lock orders every writer, including the first migration (before the revision row exists).
        with self._transaction(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})") as tx:
            if bump and table_exists(tx, self.dialect, "authmw_meta"):
                tx.run(_BUMP)
            yield tx

    @contextmanager
    def read(self) -> Iterator[_PgTx]:
        with self._transaction("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") as tx:
            yield tx

    def query(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """One row of one statement in autocommit: one round trip, and one snapshot (a statement's own)."""
        psycopg = self._psycopg
        self._revive()
        try:
            with self._pool.connection() as conn:
                row: Row | None = conn.execute(_PgTx._sql(sql), params, prepare=True).fetchone()
        except psycopg.Error as exc:
            self._failed()
            raise StoreUnavailable(f"PostgreSQL store error: {_first_line(exc)}") from None
        except self._pool_timeout:
            self._failed()
            raise StoreUnavailable("PostgreSQL pool exhausted or unreachable") from None
        return row

    def close(self) -> None:
        self._pool.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _redact(url: str) -> str:
    """The URL without a password (in the authority or the query), for messages."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}"
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def missing_store(path: str) -> str:
    """Why a SQLite store could not be opened: the path looked for (absolute), and how to get one there."""
    where = os.path.abspath(path)
    return (
        f"no store at {where}: run 'authmw init' to create one, or check --store / AUTHMW_STORE "
        f"(a relative path is sqlite:///PATH from the working directory, an absolute one sqlite:////{where[1:]})"
    )


def open_database(
    url: str,
    *,
    create: bool = False,
    timeouts: StoreTimeouts | None = None,
    lazy: bool = False,
    read_only: bool = False,
) -> SqliteDatabase | PostgresDatabase:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``postgresql://...``; only with ``create`` is a
    missing SQLite file created (``authmw init``). ``timeouts`` and ``lazy`` (an unreachable server is not an
    error yet) apply to PostgreSQL: a missing SQLite file is always an error. ``read_only``: never create or
    change anything (SQLite ``mode=ro``; PostgreSQL sessions whose transactions are read-only, on one
    connection, as a short-lived reader needs).
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise ConfigurationError("sqlite URL needs a file path: sqlite:///./authmw.db or sqlite:////abs/path.db")
        return SqliteDatabase(path, create=create, read_only=read_only)
    if url.startswith(("postgresql://", "postgres://")):
        if read_only:
            one = replace(timeouts or StoreTimeouts(), pool_size=1)
            return PostgresDatabase(url, timeouts=one, lazy=lazy, read_only=True)
        return PostgresDatabase(url, timeouts=timeouts, lazy=lazy)
    raise ConfigurationError(
        f"unsupported store URL {_redact(url)!r}: use sqlite:///relative/path, sqlite:////absolute/path or "
        "postgresql://..."
    )
