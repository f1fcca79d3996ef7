"""The PostgreSQL server the shared-state tests use: ``$AUTHMW_TEST_POSTGRES`` or the local trust-auth server."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG_SERVER = os.environ.get("AUTHMW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def pg_schema_url(schema: str) -> str:
    """A store URL whose tables live in ``schema``, for a session that does not wait for the WAL flush at commit
    (``synchronous_commit=off``: a commit is as atomic and as visible, only a server crash could lose the last
    ones, which no test does): writes are 3-4 times faster on the shared test server."""
    return f"{PG_SERVER}?options=-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema's store URL, dropped with everything in it afterwards."""
    schema = f"authmw_t_{secrets.token_hex(6)}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(schema)
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
