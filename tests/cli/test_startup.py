"""An ``authmw`` process starts with what its command needs: the parser of that command alone, answering exactly as
the whole parser does, and no import of the request pipeline, JWT or the signature schemes for a store verb."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authmw.cli import _parser_for, build_parser
from tests.support.cli import fresh_store

SRC = Path(__file__).resolve().parents[2] / "src"


def _paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from _paths(child, (*prefix, name))


def _parser_at(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_the_parser_of_one_command_is_the_whole_parsers() -> None:
    whole = build_parser()
    paths = list(_paths(whole))
    assert len(paths) > 90
    for path in paths:
        alone = _parser_for(os.environ.get("AUTHMW_DOMAIN"), path[0])
        assert [p for p in _paths(alone) if len(p) == 1] == [path[:1]]
        assert _parser_at(alone, path).format_help() == _parser_at(whole, path).format_help(), path


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["user", "list"], "user"),
        (["--store", "sqlite:///x.db", "--config", "c.yaml", "policy", "list"], "policy"),
        (["--store=sqlite:///x.db", "key", "create", "alice"], "key"),
        (["--help"], None),
        (["-h", "user"], None),  # the top-level help lists every command
        (["--version"], None),
        (["--sto", "x.db", "user", "list"], None),  # an abbreviation: argparse decides what it is
        (["--store", "user", "list"], None),  # "user" is the store URL; "list" no command
        (["no-such-command"], None),  # the whole parser's message lists the commands
        ([], None),
    ],
)
def test_the_command_is_read_only_after_the_global_options(argv: list[str], named: str | None) -> None:
    from authmw.cli import _command_named

    assert _command_named(argv) == named


def test_a_store_verb_imports_neither_the_pipeline_nor_jwt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_store(tmp_path, monkeypatch, ["user", "create", "alice"])
    probe = (
        "import runpy, sys, json\n"
        "sys.argv = ['authmw', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('authmw', run_name='__main__')\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jwt', 'yaml', 'psycopg', 'redis')"
        " or m.startswith('cryptography.x509') or m in ('authmw.guard', 'authmw.routes', 'authmw.oidc',"
        " 'authmw.assembly', 'authmw.signing.registry', 'authmw.signing.verifier', 'authmw.signing.signer'))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    for argv in (["user", "list"], ["policy", "list"], ["key", "create", "alice"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, "--store", url, *argv],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SRC)},
            cwd=tmp_path,
            check=False,
        )
        report = json.loads(done.stderr.strip().splitlines()[-1])
        assert report == {"code": 0, "heavy": []}, (argv, done.stderr)
