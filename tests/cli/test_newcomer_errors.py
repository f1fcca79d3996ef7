"""Errors a newcomer meets at the command line (issue 14): each names what is wrong, where, and what to do, with
its own exit code; a mistyped store URL creates nothing."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authmw.assembly import open_guard, routes_of, trusted_issuers
from authmw.cli import main
from authmw.errors import ConfigurationError, StoreUnavailable
from authmw.settings import Settings, load_settings
from authmw.store import open_store
from tests.support.cli import fresh_store

ROOT = Path(__file__).resolve().parents[2]

# Every kind of command that opens the store (none of them may create it).
STORE_COMMANDS = [
    ["user", "list"],
    ["user", "create", "alice"],
    ["migrate"],
    ["export"],
    ["key", "create", "alice"],
    ["explain", "--user", "alice", "--action", "modelarts:notebook:get"],
    ["whitelist", "set", "--user", "alice", "10.0.0.1"],
    ["proxy", "--upstream", "http://127.0.0.1:9"],
]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv, stdout=io.StringIO())
    return code, capsys.readouterr().err


def left_behind(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, no store or master key in the environment."""
    for name in ("AUTHMW_STORE", "AUTHMW_MASTER_KEY", "AUTHMW_MASTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- 1. only init creates a store ----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [*STORE_COMMANDS, ["verify-request", "--file", "REQUEST"]], ids=" ".join)
def test_a_missing_store_is_exit_3_naming_the_path_and_nothing_is_created(
    isolated: Path, capsys: pytest.CaptureFixture[str], argv: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if "REQUEST" in argv:  # verify-request without --secret-key looks the key up in the store
        request = tmp_path_factory.mktemp("request") / "get.http"
        request.write_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        argv = [str(request) if arg == "REQUEST" else arg for arg in argv]
    absolute = isolated / "typo" / "dir" / "authmw.db"
    for url, shown in ((f"sqlite:///{absolute}", absolute), ("sqlite:///typo/authmw.db", isolated / "typo/authmw.db")):
        code, err = run([*argv, "--store", url], capsys)
        assert code == 3, err
        assert f"no store at {shown}" in err and f"sqlite:///{shown}" in err and "authmw init" in err
        assert err.count("\n") == 1
    code, err = run(argv, capsys)  # the default store, ./authmw.db
    assert code == 3 and f"no store at {isolated / 'authmw.db'}" in err
    assert left_behind(isolated) == []


def test_init_creates_the_store_at_an_absolute_url_and_then_commands_find_it(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = isolated / "new" / "dir" / "authmw.db"
    url = f"sqlite:///{store}"  # sqlite:////abs/path
    assert url.startswith("sqlite:////")
    os.environ["AUTHMW_MASTER_KEY_FILE"] = str(isolated / "authmw.key")
    try:
        assert run(["init", "--store", url], capsys)[0] == 0
        assert store.is_file() and (store.stat().st_mode & 0o777) == 0o600
        assert run(["user", "create", "alice", "--store", url], capsys)[0] == 0
    finally:
        del os.environ["AUTHMW_MASTER_KEY_FILE"]


def test_the_help_names_both_url_forms_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "sqlite:///relative/path.db" in text and "sqlite:////absolute/path.db" in text
    assert "only 'authmw init' creates a store" in text
    assert "3 the store is unavailable" in text and "5 the address to listen on is already in use" in text


def test_the_library_never_creates_a_store_either(isolated: Path) -> None:
    url = f"sqlite:///{isolated / 'nowhere' / 'authmw.db'}"
    with pytest.raises(StoreUnavailable, match="no store at"):
        open_guard(url)
    with pytest.raises(StoreUnavailable, match="no store at"):
        open_store(url, environ={"AUTHMW_MASTER_KEY": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="})
    assert left_behind(isolated) == []


def test_a_store_deleted_under_an_open_one_is_not_created_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection opened later (another thread; a reload) finds the store gone, and says so."""
    url = fresh_store(tmp_path, monkeypatch)
    store = open_store(url)
    try:
        assert store.schema_version() > 0
        for name in ("authmw.db", "authmw.db-wal", "authmw.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        failures: list[BaseException] = []

        def another_thread() -> None:
            try:
                store.schema_version()
            except BaseException as exc:  # the test reads it
                failures.append(exc)

        worker = threading.Thread(target=another_thread)
        worker.start()
        worker.join()
        assert len(failures) == 1 and isinstance(failures[0], StoreUnavailable), failures
        assert "no store at" in failures[0].detail
    finally:
        store.close()
    assert not any(p.name.startswith("authmw.db") for p in tmp_path.iterdir())


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT),
        "AUTHMW_STORE": f"sqlite:///{tmp_path / 'authmw.db'}",
        "AUTHMW_MASTER_KEY_FILE": str(tmp_path / "authmw.key"),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _proxy(tmp_path: Path, *argv: str) -> Iterator[subprocess.Popen[str]]:
    with _serving(tmp_path, "proxy", "--upstream", "http://127.0.0.1:9", *argv) as process:
        yield process


@contextlib.contextmanager
def _serving(tmp_path: Path, *argv: str) -> Iterator[subprocess.Popen[str]]:
    """``authmw ARGV`` as a process over the test's store, terminated after."""
    command = [sys.executable, "-m", "authmw", *argv]
    process = subprocess.Popen(
        command, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


@pytest.mark.slow
def test_a_sighup_reload_of_a_deleted_store_fails_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_store(tmp_path, monkeypatch)
    port = _free_port()
    with _proxy(tmp_path, "--listen", f"127.0.0.1:{port}") as process:
        deadline = time.monotonic() + 20
        while True:  # listening
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert process.poll() is None and time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)
        for name in ("authmw.db", "authmw.db-wal", "authmw.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        process.send_signal(signal.SIGHUP)
        time.sleep(2)  # the reload runs, and fails
        assert process.poll() is None  # still serving with the configuration it had
        process.terminate()
        _out, err = process.communicate(timeout=30)
    assert "reload failed" in err and "no store at" in err, err
    assert not any(p.name.startswith("authmw.db") for p in tmp_path.iterdir())


# -- 2. a missing extra names what to install ---------------------------------------------------------------


def _without(module: str, argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``authmw ARGV`` in a process where ``module`` cannot be imported (as if its extra were not installed)."""
    code = f"import sys; sys.modules[{module!r}] = None; from authmw.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("uvicorn", ["proxy", "--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0"], "proxy"),
        # the parser of the proxy's upstream client (httpx is needed only by the JWKS fetcher of external issuers)
        ("httptools", ["proxy", "--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0"], "proxy"),
        ("httptools", ["authz", "--listen", "127.0.0.1:0"], "envoy"),
        (
            "yaml",
            ["envoy-config", "--listen", "127.0.0.1:8080", "--upstream", "http://a", "--authz", "http://b"],
            "envoy",
        ),
        ("psycopg", ["user", "list", "--store", "postgresql://127.0.0.1:5432/test"], "postgres"),
        ("yaml", ["user", "list", "--config", "authmw.yaml"], "yaml"),
    ],
)
def test_a_missing_extra_is_exit_2_naming_the_pip_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, argv: list[str], extra: str
) -> None:
    fresh_store(tmp_path, monkeypatch)
    (tmp_path / "authmw.yaml").write_text("mode: enforce\n")
    done = _without(module, argv, tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"pip install 'authmw[{extra}]'" in done.stderr and "internal error" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_missing_module_that_no_extra_installs_is_still_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_store(tmp_path, monkeypatch)
    done = _without("authmw.proxy.server", ["proxy", "--upstream", "http://127.0.0.1:9"], tmp_path)
    assert done.returncode == 4 and "internal error (ModuleNotFoundError)" in done.stderr


def test_the_middleware_needs_httpx_only_for_external_issuers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_store(tmp_path, monkeypatch)
    issuer = {"issuer": "https://idp.example", "jwks_url": "https://idp.example/jwks", "domain": "default",
              "audience": "app"}  # fmt: skip
    script = (
        "import sys\n"
        "sys.modules['httpx'] = None\n"
        "from authmw.errors import ConfigurationError\n"
        "from authmw.assembly import open_guard\n"
        f"open_guard({url!r})\n"
        "try:\n"
        f"    open_guard({url!r}, token_issuers=[{issuer!r}])\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout == "token_issuers needs the client extra (httpx is not installed): pip install 'authmw[client]'\n"
    )


# -- 3. an address in use has its own message and exit code -------------------------------------------------


@pytest.mark.parametrize("command", [["proxy", "--upstream", "http://127.0.0.1:9"], ["authz"]], ids=lambda c: c[0])
def test_a_port_in_use_is_exit_5_with_its_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    fresh_store(tmp_path, monkeypatch)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with _serving(tmp_path, *command, "--listen", f"127.0.0.1:{port}") as process:
            _out, err = process.communicate(timeout=60)
    assert process.returncode == 5, err
    assert err.strip().splitlines()[-1] == f"authmw: address already in use: 127.0.0.1:{port}"
    assert "Traceback" not in err


# -- 4. YAML errors say file, line and column ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("mode: enforce\nstore: [unclosed\n", "3:1", "not valid YAML"),
        ("mode: enforce\n  bad: indent\n", "2:6", "not valid YAML"),
        ("mode: enforce\n\nstroe: typo\n", "3:1", "unknown setting(s) stroe"),
        ("mode: enforce\nmax_skew:   lots\n", "2:13", "max_skew must be seconds 0-86400"),
        ("routes: []\nmode: enforce\nmode: dry-run\n", "3:1", "mode is set twice"),
        ("- a list\n", "1:1", "expected a mapping of settings"),
        ("token_algorithms: [ES256]\n", "1:19", "token_algorithm EdDSA is not among token_algorithms"),
        ("1: one\n", "1:1", "unknown setting(s) 1"),
    ],
)
def test_yaml_errors_name_the_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str, message: str
) -> None:
    path = tmp_path / "authmw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as raised:
        load_settings(str(path))
    assert str(raised.value).startswith(f"{path}:{where}: "), str(raised.value)
    assert message in str(raised.value)
    code, err = run(["user", "list", "--config", str(path)], capsys)
    assert code == 2 and err == f"authmw: {raised.value}\n"


def test_route_and_issuer_entries_are_located_too(tmp_path: Path) -> None:
    path = tmp_path / "authmw.yaml"
    path.write_text(
        "mode: enforce\nroutes:\n  - {method: GET, path: /a, action: 'a:b:c'}\n  - method: GET\n    path: /x\n"
        "    actoin: a:b:c\ntoken_issuers:\n  - issuer: https://idp.example\n    bogus: 1\n"
    )
    settings = load_settings(str(path))
    with pytest.raises(ConfigurationError) as raised:
        routes_of(settings)
    assert str(raised.value).startswith(f"{path}:4:5: routes[1]: unknown route key(s) actoin")
    with pytest.raises(ConfigurationError) as raised:
        trusted_issuers(settings)
    assert str(raised.value).startswith(f"{path}:8:5: token_issuers[0]: unknown key(s) bogus")
    assert routes_of(load_settings(None)).routes  # without a file: the names alone (the preset here)
    assert Settings().where("routes[0]") == "routes[0]"


def test_where_a_setting_came_from_is_not_itself_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "authmw.yaml"
    path.write_text("sources: {}\n")
    with pytest.raises(ConfigurationError, match="unknown setting"):
        load_settings(str(path))
