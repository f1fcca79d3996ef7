"""SQLite shared by several processes: a new connection in this process must not drop the locks its other
connections hold (POSIX locks are per process: closing any descriptor of the file releases them all), or
another process closing its last connection deletes the WAL under us ("disk I/O error")."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from authmw.store import Keyring, Store
from authmw.store.database import open_database

CHILD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT value FROM authmw_meta").fetchall()
print("ready", flush=True)
sys.stdin.read()
conn.close()  # the child's last connection: it deletes the WAL if it can lock the database exclusively
"""


def test_a_new_connection_keeps_the_process_locks(tmp_path: Path) -> None:
    path = tmp_path / "authmw.db"
    store = Store(open_database(f"sqlite:///{path}", create=True), Keyring.from_keys(bytes(range(32))))
    store.initialize()
    before = store.revision()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        opened = threading.Thread(target=store.revision)  # a connection of its own, in a new thread
        opened.start()
        opened.join()
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert Path(f"{path}-wal").exists(), "the other process deleted the WAL this process still uses"
    store.create_user("still-works")
    assert store.revision() == before + 1
    store.close()
