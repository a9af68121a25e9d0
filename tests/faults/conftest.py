"""Fault-injection fixtures: real inferq processes, real Redis, fake backends we can break."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import BackendThread, FakeBackend

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture
def backends() -> Iterator[Callable[[], FakeBackend]]:
    """A factory of fake backends, all stopped after the test."""
    threads: list[BackendThread] = []

    def make() -> FakeBackend:
        thread = BackendThread()
        threads.append(thread)
        return thread.start()

    yield make
    for thread in threads:
        thread.stop()


@pytest.fixture
def fabric_for(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Fabric]]:
    """Build a Fabric from a YAML body (`{prefix}` and `{key}` are filled in)."""
    made: list[Fabric] = []

    def make(yaml: str, redis: str | None = None) -> Fabric:
        config = tmp_path / f"config{len(made)}.yaml"
        config.write_text(yaml.replace("{prefix}", prefix).replace("{key}", MASTER_KEY))
        fabric = Fabric(config, redis or redis_url, tmp_path)
        made.append(fabric)
        return fabric

    yield make
    for fabric in made:
        fabric.stop()


def settings(
    aliases: dict[str, list[str]] | None = None, fabric: str = "", **router: object
) -> str:
    """The router, general and inferq sections shared by fault configs."""
    lines = ["router_settings:"]
    lines += [f"  {k}: {v}" for k, v in router.items()]
    if aliases:
        lines.append("  model_group_alias:")
        lines += [f"    {name}: [{', '.join(chain)}]" for name, chain in aliases.items()]
    lines += [
        "general_settings:",
        "  master_key: {key}",
        "inferq_settings:",
        "  key_prefix: {prefix}",
    ]
    return "\n".join(lines) + "\n" + fabric


def deployment(group: str, api_base: str, id: str | None = None, **params: object) -> str:
    """One model_list entry (the YAML list begins with the first) for a fake backend."""
    lines = [f"  - model_name: {group}", "    litellm_params:", "      model: openai/fake"]
    lines.append(f"      api_base: {api_base}")
    lines += [f"      {k}: {v}" for k, v in params.items()]
    if id:
        lines.append(f"    model_info: {{id: {id}}}")
    return "\n".join(lines) + "\n"


def models(*entries: str) -> str:
    """`model_list:` with the given entries."""
    return "model_list:\n" + "".join(entries)
