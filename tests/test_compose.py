"""compose/: no Docker engine runs here, so check what can be checked: the file parses, its
services run inferq commands the CLI accepts, for groups the shipped config has."""

from pathlib import Path

import pytest
import yaml

from inferq.cli.main import _parser
from inferq.config import load_config
from inferq.config.runtime import DEFAULT_CONFIG, runtime_env

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())


def test_services_and_ports() -> None:
    services = COMPOSE["services"]
    assert {"redis", "llamacpp", "api", "worker-local", "worker-openai", "worker-anthropic"} <= set(
        services
    )
    assert services["api"]["ports"] == ["8001:8001"]
    assert services["api"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_containers_log_json(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("api", "worker-local", "worker-openai", "worker-anthropic"):
        value = COMPOSE["services"][name]["environment"]["INFERQ_LOG_JSON"]
        monkeypatch.setenv("INFERQ_LOG_JSON", value)
        assert runtime_env(None).log_json, (name, value)


def test_every_inferq_command_is_one_the_cli_accepts_for_groups_that_exist() -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    parser = _parser()
    for name, service in COMPOSE["services"].items():
        if service.get("image") != "inferq:latest":
            continue
        commands = [service["command"], service["healthcheck"]["test"][2:]]
        for command in commands:
            args = parser.parse_args(command)  # exits (fails the test) on a bad flag
            for group in getattr(args, "group", None) or []:
                assert group in config.groups, (name, group)
        assert service["healthcheck"]["test"][1:3] == ["inferq", "check-health"]


def test_dockerfile_installs_every_package() -> None:
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    for package in ("api", "broker", "config", "workers", "inferq"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'ENTRYPOINT ["inferq"]' in dockerfile
