"""What every role of the store shares: the database, the master key ring sealing its secrets, and a clock.

The roles (:mod:`~authmw.store.admin`, :mod:`~authmw.store.keys`, :mod:`~authmw.store.reads`,
:mod:`~authmw.store.schema`) are mixins over this base; :class:`~authmw.store.facade.Store` composes them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from authmw.store.database import Database
from authmw.store.secrets import Keyring

__all__ = ["StoreBase", "new_id"]


def new_id() -> str:
    return uuid.uuid4().hex


class StoreBase:
    """A :class:`~authmw.store.database.Database` whose secrets are sealed under ``keyring``.

    ``whitelist_limit`` caps the entries of one IP whitelist (5, as ModelArts allows for a notebook).
    """

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        whitelist_limit: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.whitelist_limit = whitelist_limit
        self._clock = clock

    def __repr__(self) -> str:
        return f"Store({self.db.dialect}, keyring={self.keyring.sealing_key_id})"

    def close(self) -> None:
        self.db.close()

    def _now(self) -> int:
        return int(self._clock())
