"""deploy/ held to the code: no container registry is reachable here, so the compose file and the Kubernetes
manifest are checked instead. They parse, and every command, flag, port, path, setting and environment variable
they name exists in the CLI parser, the settings and the proxy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authmw.cli import build_parser
from authmw.proxy.app import _OWN_PATHS
from authmw.settings import ABOUT, Settings
from authmw.store import STORE_ENV
from authmw.store.secrets import MASTER_KEY_ENV, MASTER_KEY_FILE_ENV

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGE = "authmw:local"
#: The environment variables authmw reads.
KNOWN_ENV = {STORE_ENV, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV} | {about.env for about in ABOUT.values() if about.env}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def kubernetes() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if doc]


def authmw_services() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose()["services"].items():
        if service.get("image") == IMAGE:
            yield name, service


def authmw_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every authmw container of the manifest."""
    for doc in kubernetes():
        spec = doc.get("spec", {}).get("template", {}).get("spec")
        for container in (spec or {}).get("containers", []):
            if container["image"] == IMAGE:
                yield spec, container


def settings_of(text: str) -> Settings:
    return Settings.from_mapping(yaml.safe_load(text), origin="deploy")


def listen_port(settings: Settings) -> int:
    return int(settings.listen.rpartition(":")[2])


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_files_parse_and_name_authmw_services() -> None:
    assert len(dict(authmw_services())) >= 3  # N instances, and the init service
    assert len(list(authmw_containers())) == 2  # the init job and the sidecar
    kinds = {doc["kind"] for doc in kubernetes()}
    assert {"ConfigMap", "Deployment", "Job", "Service"} <= kinds


def test_every_command_and_flag_is_one_the_cli_accepts() -> None:
    commands = [service["command"] for _name, service in authmw_services()]
    commands += [container["args"] for _spec, container in authmw_containers()]
    assert {argv[0] for argv in commands} == {"init", "proxy"}
    for argv in commands:
        build_parser().parse_args(argv)  # raises UsageError on an unknown command or flag


def test_the_configuration_files_hold_only_known_settings() -> None:
    settings_of((DEPLOY / "authmw.yaml").read_text())
    config_map = next(doc for doc in kubernetes() if doc["kind"] == "ConfigMap")
    for text in config_map["data"].values():
        settings_of(text)


def test_compose_mounts_the_configuration_each_proxy_reads_and_checks_its_port() -> None:
    config = compose()["configs"]
    settings = settings_of((DEPLOY / "authmw.yaml").read_text())
    port = listen_port(settings)
    for _name, service in authmw_services():
        if service["command"][0] != "proxy":
            continue
        targets = {mount["target"]: config[mount["source"]]["file"] for mount in service["configs"]}
        assert targets[option(service["command"], "--config")] == "./authmw.yaml"
        assert all(published.endswith(f":{port}") for published in service["ports"])
        probe = " ".join(service["healthcheck"]["test"])
        found = re.search(r"http://127\.0\.0\.1:(\d+)(/\S+?)'", probe)
        assert found and int(found[1]) == port and found[2] in _OWN_PATHS


def test_the_sidecar_probes_ports_and_paths_exist() -> None:
    config_map = next(doc for doc in kubernetes() if doc["kind"] == "ConfigMap")
    for spec, container in authmw_containers():
        if container["args"][0] != "proxy":
            continue
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        config = option(container["args"], "--config")
        directory, _, file = config.rpartition("/")
        (volume,) = [name for name, path in mounts.items() if path == directory]
        assert volumes[volume]["configMap"]["name"] == config_map["metadata"]["name"]
        port = listen_port(settings_of(config_map["data"][file]))
        assert [p["containerPort"] for p in container["ports"]] == [port]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert {"/readyz", "/healthz"} <= set(_OWN_PATHS)


def test_every_environment_variable_is_one_authmw_reads_and_secrets_come_from_secrets() -> None:
    names: set[str] = set()
    for _spec, container in authmw_containers():
        for entry in container["env"]:
            names.add(entry["name"])
            if entry["name"] in (STORE_ENV, MASTER_KEY_ENV):  # a password or a key: never a literal
                assert "secretKeyRef" in entry["valueFrom"]
    for _name, service in authmw_services():
        assert not service.get("environment"), "secrets come from the env_file, never from compose.yaml"
        assert service["env_file"] == ["./secrets.env"]
    example = (DEPLOY / "secrets.env.example").read_text().splitlines()
    names |= {line.partition("=")[0] for line in example if line and not line.startswith("#")}
    assert names
    assert names <= KNOWN_ENV, names - KNOWN_ENV


@pytest.mark.parametrize("name", ["compose.yaml", "kubernetes.yaml", "authmw.yaml", "Dockerfile"])
def test_no_secret_is_written_into_the_manifests(name: str) -> None:
    text = (DEPLOY / name).read_text()
    assert not re.search(r"postgresql://[^:@\s/]+:(?!PASSWORD@)[^@\s]+@", text)  # only the placeholder
    assert not re.search(r"[A-Za-z0-9+/]{43}=", text)  # a base64 32-byte key
