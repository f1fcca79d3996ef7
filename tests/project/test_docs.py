"""The documentation works: every code block of README.md and docs/*.md runs or parses, every link resolves, and
the generated reference pages are current.

How a block is checked, by the language of its fence (an unlisted language fails):

- ``bash``: run with ``bash -eu -o pipefail`` in the document's own temporary directory, where ``authmw`` is this
  checkout's command (``python -m authmw``) and no ``AUTHMW_*`` variable is set, so the store is the default
  ``./authmw.db`` with ``./authmw.key`` in that directory. Passwords are hashed at the test run's scrypt cost, as
  in every process a test starts (tests/support/child_site, first on PYTHONPATH; tests/store/test_store.py checks
  the production cost, at which each ``user create --password-stdin`` or export with a passphrase took 0.5-1 s).
- ``python``: run with this checkout's interpreter (``authmw`` importable) in the same directory.
- ``yaml``: a configuration file: loaded by ``authmw.settings.load_settings``, its routes compiled and its OIDC
  issuers checked, as ``authmw proxy --config`` would at start-up.
- ``json``: parsed with ``json.loads``.
- ``text``: not code (directory trees, program output); not checked.

Blocks of one document run in order and share its directory, so a later block may use what an earlier one made
(a store, a key file, a running sidecar). The ports ``8080`` and ``9000`` (the sidecar and its upstream) are
replaced by free ports of this run.

A marker, an HTML comment on the line right before the fence, changes the check:

- ``<!-- fragment -->``: a YAML block that is part of a configuration: only parsed as YAML.
- ``<!-- background -->``: a bash block that starts servers: run in the background until the document's last
  block has run, then stopped (SIGTERM to its process group).
- ``<!-- not-run: REASON -->``: a block that needs what a test cannot have (another machine, a real database
  URL): bash is only syntax-checked (``bash -n``); Python is compiled and every import in it resolved.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash", "python", "yaml", "json", "text"}
MARKER = re.compile(r"^<!--\s*(fragment|background|not-run:\s*\S.*?)\s*-->$")
FENCE = re.compile(r"^```(\S*)\s*$")
PORTS = ("8080", "9000")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    marker: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the marker before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
        assert end is not None, f"{path.relative_to(ROOT)}:{index + 1}: unclosed code block"
        before = lines[index - 1].strip() if index else ""
        marker = MARKER.match(before)
        code = "\n".join(lines[index + 1 : end]) + "\n"
        found.append(Block(path, index + 1, opening.group(1), marker.group(1) if marker else None, code))
        index = end + 1
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(work: Path) -> dict[str, str]:
    bin_dir = work / ".bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "authmw"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m authmw "$@"\n')
    shim.chmod(0o755)
    # PYTHONPATH as tests/conftest.py set it for every process a test starts: the run's scrypt cost, this checkout.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHMW_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _check_yaml(block: Block, work: Path) -> None:
    data = yaml.safe_load(block.code)
    if block.marker == "fragment":
        return
    from authmw.assembly import routes_of, trusted_issuers
    from authmw.settings import load_settings

    config = work / "block.yaml"
    config.write_text(block.code, encoding="utf-8")
    settings = load_settings(str(config))
    assert isinstance(data, dict)
    routes_of(settings)

    def offline(url: str) -> tuple[bytes, float | None]:
        raise OSError(f"no network in the docs test ({url})")

    trusted_issuers(settings, fetch=offline)


def _check_imports(block: Block) -> None:
    tree = ast.parse(block.code, filename=block.where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"{block.where}: {node.module} has no {alias.name}"
                )


def _run(argv: list[str], block: Block, work: Path, env: dict[str, str]) -> None:
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (
        f"{block.where}: exit {done.returncode}\n--- code\n{block.code}--- stdout\n{done.stdout[-3000:]}"
        f"--- stderr\n{done.stderr[-3000:]}"
    )


@contextlib.contextmanager
def _background(block: Block, work: Path, env: dict[str, str]) -> Iterator[None]:
    log = (work / f"background-{block.line}.log").open("w")
    process = subprocess.Popen(
        ["bash", "-eu", "-o", "pipefail", "-c", block.code],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _check_document(path: Path, work: Path) -> None:
    env = _environment(work)
    ports = {port: str(_free_port()) for port in PORTS}
    with contextlib.ExitStack() as servers:
        for block in blocks_of(path):
            code = block.code
            for documented, actual in ports.items():
                code = re.sub(rf"\b{documented}\b", actual, code)
            block = Block(block.path, block.line, block.language, block.marker, code)  # noqa: PLW2901
            not_run = (block.marker or "").startswith("not-run")
            assert block.language in LANGUAGES, f"{block.where}: a code block needs one of {sorted(LANGUAGES)}"
            assert block.marker != "fragment" or block.language == "yaml", f"{block.where}: only YAML is a fragment"
            assert block.marker != "background" or block.language == "bash", f"{block.where}: background is bash"
            if block.language == "json":
                json.loads(block.code)
            elif block.language == "yaml":
                _check_yaml(block, work)
            elif block.language == "bash" and not_run:
                _run(["bash", "-n", "-c", block.code], block, work, env)
            elif block.language == "bash" and block.marker == "background":
                servers.enter_context(_background(block, work, env))
            elif block.language == "bash":
                _run(["bash", "-eu", "-o", "pipefail", "-c", block.code], block, work, env)
            elif block.language == "python" and not_run:
                compile(block.code, block.where, "exec")
                _check_imports(block)
            elif block.language == "python":
                _run([sys.executable, "-c", block.code], block, work, env)


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_block_runs(path: Path, tmp_path: Path) -> None:
    _check_document(path, tmp_path)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _resolves(page: Path, target: str) -> bool:
    """A link to a file of the repo that exists (and, for a Markdown page, a heading it has), or to the web."""
    if target.startswith(("http://", "https://", "mailto:")):
        return True
    file_part, _, anchor = target.partition("#")
    resolved = (page.parent / file_part).resolve() if file_part else page
    if not resolved.exists() or ROOT not in resolved.parents:
        return False
    return not anchor or resolved.suffix != ".md" or anchor in _anchors(resolved)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    broken = [target for target in LINK.findall(text) if not _resolves(path, target)]
    assert not broken, f"{path.relative_to(ROOT)}: links to nothing: {broken}"


def test_no_reference_to_files_outside_the_repo() -> None:
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for stale in ("research/", "SPEC §", "../shared"):
            assert stale not in text, f"{path.relative_to(ROOT)} mentions {stale!r}, which users do not have"


def test_the_code_points_users_to_the_docs_not_the_spec() -> None:
    """Docstrings and messages are read by users too (help(), tracebacks): they name docs/ pages, not the SPEC."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "SPEC §" in line
    ]
    assert not found, f"SPEC references users do not have: {found}"


def test_generated_pages_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_harness_finds_blocks_and_markers(tmp_path: Path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text(
        textwrap.dedent(
            """\
            <!-- fragment -->
            ```yaml
            a: {b: c}
            ```
            text
            <!-- not-run: needs a database -->
            ```bash
            authmw init
            ```
            """
        )
    )
    found = blocks_of(sample)
    assert [(b.line, b.language, b.marker) for b in found] == [
        (2, "yaml", "fragment"),
        (7, "bash", "not-run: needs a database"),
    ]


@pytest.mark.parametrize(
    ("language", "marker", "code"),
    [
        ("yaml", None, "routes:\n  - {method: GET, path: /reports/{id}, action: a:b:c}\n"),  # the old README's
        ("yaml", None, "routes:\n  - {method: GET, path: /r, actoin: a:b:c}\n"),  # a route key misspelt
        ("yaml", None, "trusted_proxy: [10.0.0.0/8]\n"),  # an unknown setting
        ("yaml", "fragment", "a: [b\n"),
        ("bash", None, "authmw no-such-command\n"),
        ("bash", "not-run: x", "if then\n"),
        ("python", None, "raise SystemExit(3)\n"),
        ("python", "not-run: x", "from authmw.signing import no_such_name\n"),
        ("json", None, "{'single': 'quotes'}\n"),
        ("sh", None, "true\n"),
        ("python", "fragment", "pass\n"),
    ],
)
def test_the_harness_refuses_a_broken_block(language: str, marker: str | None, code: str, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"<!-- {marker} -->\n" * (marker is not None) + f"```{language}\n{code}```\n")
    # A failed run or a refused language/marker: AssertionError; a bad configuration: ConfigurationError (a
    # ValueError, as json's error is); unparsable YAML: YAMLError.
    with pytest.raises((AssertionError, ValueError, yaml.YAMLError)):
        _check_document(page, tmp_path)
