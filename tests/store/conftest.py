"""Store fixtures: every store test runs on embedded SQLite and on the real PostgreSQL server.

PostgreSQL tests get a schema of their own (``search_path`` in the URL), dropped afterwards. The server is
``$AUTHMW_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``); it must be running, as on
CI: the tests fail rather than skip without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authmw.store import Keyring, Store
from authmw.store.database import open_database
from tests.support.pgutil import pg_schema

MASTER = bytes(range(32))


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'authmw.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.from_keys(MASTER)


@pytest.fixture
def store(store_url: str, keyring: Keyring) -> Iterator[Store]:
    opened = Store(open_database(store_url, create=True), keyring)
    opened.initialize()
    try:
        yield opened
    finally:
        opened.close()
