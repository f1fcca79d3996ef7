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
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from authmw.errors import ChangeRefused, ConfigurationError, StoreUnavailable
from authmw.extras import requires

__all__ = [
    "Conflict",
    "Database",
    "PostgresDatabase",
    "SqliteDatabase",
    "Tx",
    "open_database",
    "table_exists",
]

Row = tuple[Any, ...]
_BUMP = "UPDATE authmw_meta SET value = value + 1 WHERE name = 'revision'"
_PG_WRITE_LOCK = 0x61757468_6D77  # "authmw": the advisory lock key of store writers


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
    leaves nothing behind (a mistyped URL must not become an empty store).
    ``read_only`` opens an existing file with SQLite's ``mode=ro`` and ``query_only``: nothing is created or
    changed, so an unprivileged reader (the SSH gate) needs read access only (plus the WAL's ``-shm`` file, which
    SQLite creates beside the store if it is absent).
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

    def _conn(self) -> sqlite3.Connection:
        held: _Held | None = getattr(self._local, "held", None)
        conn = None if held is None else held.conn
        if conn is None and self.read_only:
            conn = self._connect_read_only()
        if conn is None:
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


class PostgresDatabase:
    """A psycopg 3 connection pool; reads run as REPEATABLE READ, READ ONLY snapshots."""

    dialect = "postgresql"

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0, read_only: bool = False
    ) -> None:
        with requires("postgres", "a PostgreSQL store"):
            import psycopg
            import psycopg_pool
        self.url = url
        self.read_only = read_only
        self._psycopg = psycopg
        # A read-only session refuses every write in the server, whatever the statement (added to the URL's own
        # options, which a keyword argument would replace).
        options = None
        if read_only:
            from psycopg.conninfo import conninfo_to_dict

            try:
                given = str(conninfo_to_dict(url).get("options") or "")
            except psycopg.Error:
                raise ConfigurationError(f"malformed PostgreSQL URL {_redact(url)}") from None
            options = f"{given} -c default_transaction_read_only=on".strip()
        try:  # one direct attempt first: a wrong URL fails at once with the server's own message
            psycopg.connect(url, connect_timeout=max(1, int(timeout)), options=options).close()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL store {_redact(url)}: {_first_line(exc)}") from None
        self._pool_timeout = psycopg_pool.PoolTimeout
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={"autocommit": True, **({"options": options} if options else {})},
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL store {_redact(url)}") from None

    @contextmanager
    def _transaction(self, first: str | None) -> Iterator[_PgTx]:
        psycopg = self._psycopg
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                tx = _PgTx(cur)
                if first:
                    cur.execute(first)
                yield tx
        except (psycopg.IntegrityError, psycopg.DataError, OverflowError, UnicodeEncodeError) as exc:
            raise Conflict(f"the store refused the value: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL store error: {_first_line(exc)}") from None
        except self._pool_timeout:
            raise StoreUnavailable("PostgreSQL pool exhausted or unreachable") from None

    @contextmanager
    def write(self, *, bump: bool = True) -> Iterator[_PgTx]:
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
        try:
            with self._pool.connection() as conn:
                row: Row | None = conn.execute(_PgTx._sql(sql), params, prepare=True).fetchone()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL store error: {_first_line(exc)}") from None
        except self._pool_timeout:
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


def open_database(url: str, *, create: bool = False, read_only: bool = False) -> SqliteDatabase | PostgresDatabase:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``postgresql://...``; only with ``create`` is a
    missing SQLite file created (``authmw init``).

    ``read_only``: never create or change anything (SQLite ``mode=ro``; PostgreSQL sessions whose transactions
    are read-only, on one connection, as a short-lived reader needs).
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise ConfigurationError("sqlite URL needs a file path: sqlite:///./authmw.db or sqlite:////abs/path.db")
        return SqliteDatabase(path, create=create, read_only=read_only)
    if url.startswith(("postgresql://", "postgres://")):
        if read_only:
            return PostgresDatabase(url, max_size=1, read_only=True)
        return PostgresDatabase(url)
    raise ConfigurationError(
        f"unsupported store URL {_redact(url)!r}: use sqlite:///relative/path, sqlite:////absolute/path or "
        "postgresql://..."
    )
