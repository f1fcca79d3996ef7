"""``--config FILE``: the YAML settings model, refused loudly when wrong."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from authmw.cli import main
from authmw.errors import ConfigurationError
from authmw.settings import Settings, load_settings


def test_defaults_without_a_file() -> None:
    assert load_settings(None) == Settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("store: sqlite:///x.db\nstroe: typo\n", "unknown setting(s) stroe"),
        ("- a list\n", "expected a mapping"),
        ("whitelist_limit: 0\n", "whitelist_limit"),
        ("whitelist_limit: yes\n", "whitelist_limit"),
        ("store: 5\n", "store must be a store URL"),
        ("mode: off\n", "mode must be enforce or dry-run"),
        ("trusted_proxies: 10.0.0.1\n", "trusted_proxies must be a list"),
        ("forwarded_header: x-real-ip\n", "forwarded_header must be x-forwarded-for or forwarded"),
        ("routes: [GET /x]\n", "routes must be a list of routes"),
        ("store: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "authmw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(str(path))


def test_the_config_file_names_the_store_key_file_and_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUTHMW_STORE", raising=False)
    monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)
    monkeypatch.delenv("AUTHMW_MASTER_KEY_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "authmw.yaml"
    config.write_text(
        f"store: sqlite:///{tmp_path}/conf.db\nmaster_key_file: {tmp_path}/conf.key\nwhitelist_limit: 2\n"
    )
    assert main(["--config", str(config), "init"], stdout=io.StringIO()) == 0
    assert (tmp_path / "conf.db").exists() and (tmp_path / "conf.key").exists()
    assert not (tmp_path / "authmw.db").exists()
    assert main(["user", "create", "alice", "--config", str(config)], stdout=io.StringIO()) == 0
    argv = ["whitelist", "set", "--user", "alice", "10.0.0.1", "10.0.0.2", "10.0.0.3", "--config", str(config)]
    assert main(argv, stdout=io.StringIO()) == 2
    assert "at most 2 entries" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("nope: 1\n")
    assert main(["user", "list", "--config", str(tmp_path / "bad.yaml")], stdout=io.StringIO()) == 2


def test_a_route_whitelist_names_a_route_or_action_of_the_deployments_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUTHMW_STORE", raising=False)
    monkeypatch.delenv("AUTHMW_MASTER_KEY", raising=False)
    monkeypatch.delenv("AUTHMW_MASTER_KEY_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "authmw.yaml"
    config.write_text(
        f"store: sqlite:///{tmp_path}/conf.db\nmaster_key_file: {tmp_path}/conf.key\n"
        "routes:\n  - {method: PUT, path: '/jobs/{id}', action: 'svc:job:update',\n"
        "     body_actions: {status: 'svc:job:action'}}\n"
    )
    assert main(["--config", str(config), "init"], stdout=io.StringIO()) == 0

    def whitelist(*argv: str) -> int:
        return main(["whitelist", "set", *argv, "10.0.0.0/8", "--config", str(config)], stdout=io.StringIO())

    assert whitelist("--route", "PUT /jobs/{id}") == 0
    assert whitelist("--route", "svc:job:update") == 0
    assert whitelist("--route", "svc:job:action") == 0  # a body action is looked up too
    capsys.readouterr()
    # The configured routes replace the preset: its actions restrict nothing here.
    assert whitelist("--route", "modelarts:notebook:list") == 2
    assert "neither an action" in capsys.readouterr().err
    assert whitelist("--route", "svc:job:delete") == 2
    assert whitelist("--route", "svc:job:delete", "--unchecked-route") == 0  # declared in code, say
    assert main(["whitelist", "set", "--route", "anything", "--config", str(config)], stdout=io.StringIO()) == 0
    # Without a config file, the modelarts preset is the catalog.
    monkeypatch.setenv("AUTHMW_STORE", f"sqlite:///{tmp_path}/conf.db")
    monkeypatch.setenv("AUTHMW_MASTER_KEY_FILE", str(tmp_path / "conf.key"))
    plain = ["whitelist", "set", "--route"]
    assert main([*plain, "modelarts:notebook:list", "10.0.0.1"], stdout=io.StringIO()) == 0
    assert main([*plain, "modelarts:service:action", "10.0.0.1"], stdout=io.StringIO()) == 0
    assert main([*plain, "GET /v1/{project_id}/notebooks", "10.0.0.1"], stdout=io.StringIO()) == 0
    assert main([*plain, "svc:job:update", "10.0.0.1"], stdout=io.StringIO()) == 2
