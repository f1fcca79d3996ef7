"""A store opened read-only (the SSH gate's) reads, and refuses every write whichever way it is tried.

The gate runs as an unprivileged account on every key sshd is offered; whatever a bug in it attempted, the
database must refuse to change (SQLite ``mode=ro`` + ``query_only``, PostgreSQL read-only sessions).
"""

from __future__ import annotations

import base64

import pytest

from authmw.errors import ChangeRefused, ServiceUnavailable
from authmw.store import open_store
from authmw.store.database import open_database

MASTER = bytes(range(32))


def _populated(url: str) -> str:
    store = open_store(url, create=True, environ={"AUTHMW_MASTER_KEY": base64.b64encode(MASTER).decode()})
    try:
        store.initialize()
        store.create_user("alice")
        return store.revision()
    finally:
        store.close()


def test_a_read_only_store_reads_and_refuses_every_write(store_url: str) -> None:
    revision = _populated(store_url)
    db = open_database(store_url, read_only=True)
    try:
        with db.read() as tx:
            assert tx.one("SELECT name FROM users WHERE name = 'alice'") == ("alice",)
        with pytest.raises(ChangeRefused), db.write() as tx:
            tx.run("UPDATE users SET enabled = 0")
        with pytest.raises((ChangeRefused, ServiceUnavailable)), db.read() as tx:
            tx.run("UPDATE users SET enabled = 0")
        with pytest.raises((ChangeRefused, ServiceUnavailable)):
            db.query("UPDATE users SET enabled = 0 RETURNING id")
        with db.read() as tx:
            assert tx.one("SELECT enabled FROM users WHERE name = 'alice'") in ((1,), (True,))
            assert tx.one("SELECT value FROM authmw_meta WHERE name = 'revision'") == (revision,)
    finally:
        db.close()
