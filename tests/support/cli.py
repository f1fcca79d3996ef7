"""The ``authmw`` command run in-process over a fresh SQLite store, for the CLI tests."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from authmw.cli import main


def run(*argv: str) -> tuple[int, str]:
    """Exit code and standard output of ``authmw ARGV``."""
    out = io.StringIO()
    return main(list(argv), stdout=out), out.getvalue()


def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *setup: Sequence[str]) -> str:
    """The URL of a new store in ``tmp_path`` (the environment points the CLI at it), set up by ``setup``
    commands, each of which must succeed."""
    url = f"sqlite:///{tmp_path / 'authmw.db'}"
    monkeypatch.setenv("AUTHMW_STORE", url)
    monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(tmp_path / "authmw.key"))
    monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)
    for argv in (["init"], *setup):
        assert run(*argv)[0] == 0, argv
    return url
