"""Config loading: the LiteLLM format as-is, environment references, and errors with YAML paths."""

import subprocess
import sys
from pathlib import Path

import pytest

from inferq.config import ConfigError, load_config, parse_config
from inferq.config.loader import split_model
from inferq.config.model import Provider
from inferq.config.runtime import DEFAULT_CONFIG

BASE = """
model_list:
  - model_name: local-model
    litellm_params:
      model: openai//models/x.gguf
      api_base: http://127.0.0.1:11434/v1
      api_key: dummy
      temperature: 0.7
      max_tokens: 512
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "test.yaml", env or {})
    return err.value.problems


def test_shipped_config_reproduces_the_seed() -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    assert list(config.groups) == [
        "local-model",
        "smollm2-1.7b",
        "local-fast",
        "gpt-4o-mini",
        "claude-3-5-sonnet",
    ]
    assert config.aliases["function-calling"].chain == ("local-model", "gpt-4o-mini")
    assert config.aliases["powerful"].chain == ("claude-3-5-sonnet", "gpt-4o-mini")
    assert config.aliases["fast-model"].chain[0] == "local-fast"
    local = config.groups["local-model"][0]
    assert local.provider is Provider.OPENAI
    assert local.upstream_model == "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert local.max_parallel_requests == 1
    assert local.defaults == {"temperature": 0.7, "max_tokens": 512}
    assert config.cache.enabled and config.cache.ttl == 600
    assert config.master_key == "sk-inferq-local-dev"
    # Without keys the cloud groups are unavailable, not errors.
    assert (
        config.groups["gpt-4o-mini"][0].unavailable_reason
        == "no API key configured (set OPENAI_API_KEY)"
    )
    assert config.groups["claude-3-5-sonnet"][0].provider is Provider.ANTHROPIC
    assert local.unavailable_reason is None


def test_keys_come_from_the_environment() -> None:
    config = load_config(
        DEFAULT_CONFIG, env={"OPENAI_API_KEY": "sk-o", "INFERQ_MASTER_KEY": "sk-m"}
    )
    assert config.groups["gpt-4o-mini"][0].api_key == "sk-o"
    assert config.groups["gpt-4o-mini"][0].unavailable_reason is None
    assert config.master_key == "sk-m"


def test_secrets_are_not_in_reprs() -> None:
    config = load_config(DEFAULT_CONFIG, env={"OPENAI_API_KEY": "sk-secret-o"})
    assert "sk-secret-o" not in repr(config)
    assert "sk-inferq-local-dev" not in repr(config)


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${HOST}", {"HOST": "h"}, "h"),
        ("${HOST:-fallback}", {}, "fallback"),
        ("http://${HOST:-127.0.0.1}:${PORT:-8080}/v1", {"PORT": "9"}, "http://127.0.0.1:9/v1"),
        ("os.environ/HOST", {"HOST": "from-litellm-style"}, "from-litellm-style"),
    ],
)
def test_environment_references(value: str, env: dict[str, str], expected: str) -> None:
    text = BASE.replace("api_key: dummy", f'api_key: "{value}"')
    config = parse_config(text, env=env)
    assert config.groups["local-model"][0].api_key == expected


def test_undefined_variable_names_the_path() -> None:
    text = BASE.replace("api_key: dummy", "api_key: ${NOPE}")
    assert problems(text) == [
        (
            "model_list[0].litellm_params.api_key",
            "environment variable NOPE is not set (no default given)",
        )
    ]


def test_yaml_syntax_error_gives_line() -> None:
    [(path, message)] = problems("model_list:\n  - model_name: [unclosed\n")
    assert path == ""
    assert message.startswith("YAML syntax error: line 3")


def test_unknown_provider_is_a_config_error() -> None:
    [(path, message)] = problems(BASE.replace("openai//models/x.gguf", "bedrock/claude"))
    assert path == "model_list[0].litellm_params.model"
    assert "unknown provider" in message


def test_missing_field_names_the_path() -> None:
    text = BASE.replace("      model: openai//models/x.gguf\n", "")
    assert ("model_list[0].litellm_params.model", "required field is missing") in problems(text)


def test_bad_type_names_the_path() -> None:
    text = BASE + "      max_parallel_requests: lots\n"
    [(path, _message)] = problems(text)
    assert path == "model_list[0].litellm_params.max_parallel_requests"


def test_alias_to_missing_group() -> None:
    text = BASE + "router_settings:\n  model_group_alias:\n    smart: [local-model, gpt-9]\n"
    [(path, message)] = problems(text)
    assert path == "router_settings.model_group_alias.smart[1]"
    assert "'gpt-9' does not exist" in message


def test_alias_forms() -> None:
    text = BASE + (
        "router_settings:\n  model_group_alias:\n"
        "    a: local-model\n    b: {model: local-model, hidden: true}\n    c: [local-model]\n"
    )
    config = parse_config(text, env={})
    assert config.route("a") is not None and config.route("a").chain == ("local-model",)  # type: ignore[union-attr]
    assert config.aliases["b"].hidden
    assert config.public_models() == ["local-model", "a", "c"]
    assert config.route("missing") is None


def test_several_entries_make_deployments_of_one_group() -> None:
    text = BASE + (
        "  - model_name: local-model\n    litellm_params:\n      model: openai/other\n"
        "      api_base: http://127.0.0.1:9/v1\n    model_info: {id: second}\n"
    )
    config = parse_config(text, env={})
    assert [d.id for d in config.groups["local-model"]] == ["local-model.0", "second"]


def test_master_key_and_cache_from_litellm_settings() -> None:
    text = (
        BASE + "litellm_settings:\n  master_key: sk-x\n  cache: true\n  cache_params: {ttl: 30}\n"
    )
    config = parse_config(text, env={})
    assert config.master_key == "sk-x"
    assert config.cache.enabled and config.cache.ttl == 30


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai//models/x.gguf", (Provider.OPENAI, "/models/x.gguf")),
        ("openai/gpt-4o", (Provider.OPENAI, "gpt-4o")),
        ("gpt-4o-mini", (Provider.OPENAI, "gpt-4o-mini")),
        (
            "anthropic/claude-3-5-sonnet-20241022",
            (Provider.ANTHROPIC, "claude-3-5-sonnet-20241022"),
        ),
        ("claude-opus-20250219", (Provider.ANTHROPIC, "claude-opus-20250219")),
        ("mystery-model", None),
        ("vertex_ai/gemini", None),
    ],
)
def test_provider_from_model_string(model: str, expected: object) -> None:
    assert split_model(model) == expected


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferq.cli", *args], capture_output=True, text=True, check=False
    )


def test_config_check_ok() -> None:
    result = run_cli("config", "check", str(DEFAULT_CONFIG))
    assert result.returncode == 0
    assert "5 model groups" in result.stdout


def test_config_check_reports_every_problem_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        BASE.replace("openai//models/x.gguf", "nonsense/x")
        + "router_settings:\n  model_group_alias:\n    x: ghost\n"
    )
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert "model_list[0].litellm_params.model: unknown provider" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_stops_api_start_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list: [")
    result = run_cli("api", "--config", str(bad))
    assert result.returncode == 2
    assert "YAML syntax error" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("worker", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read file" in result.stderr


def test_empty_sections_are_allowed() -> None:
    config = parse_config(BASE + "router_settings:\ngeneral_settings:\n", env={})
    assert config.router.num_retries == 2
    assert config.master_key is None


def test_budgets_in_both_formats() -> None:
    text = BASE + (
        "router_settings:\n  provider_budget_config:\n"
        "    openai: {budget_limit: 10, time_period: 30d}\n"
        "inferq_settings:\n  budgets: [{group: local-model, limit: 2, warn_at: 0.5}]\n"
    )
    budgets = parse_config(text, env={}).budgets
    assert [(b.scope, b.name, b.period, b.limit) for b in budgets] == [
        ("provider", "openai", "month", 10.0),
        ("group", "local-model", "day", 2.0),
    ]
    bad = BASE + "inferq_settings:\n  budgets: [{group: ghost, limit: 1}]\n"
    assert ("inferq_settings.budgets[0].group", "model group 'ghost' does not exist") in problems(
        bad
    )


def test_batch_settings_and_the_slots_batch_may_hold() -> None:
    fabric = parse_config(BASE, env={}).fabric
    assert (fabric.batch_max_slots, fabric.batch_min_share) == (0.75, 0.1)
    # At least one slot (a one-slot llama.cpp serves batch too); never all of several.
    assert [fabric.batch_slots(n) for n in (1, 2, 4, 8, 64)] == [1, 1, 3, 6, 48]
    everything = parse_config(BASE + "inferq_settings:\n  batch_max_slots: 1\n", env={})
    assert everything.fabric.batch_slots(8) == 7
    bad = BASE + "inferq_settings:\n  batch_max_slots: 0\n  batch_min_share: 1\n"
    assert sorted(path for path, _ in problems(bad)) == [
        "inferq_settings.batch_max_slots",
        "inferq_settings.batch_min_share",
    ]


def test_the_usage_log_length_is_a_setting() -> None:
    assert parse_config(BASE, env={}).fabric.usage_log_length == 10_000
    longer = parse_config(BASE + "inferq_settings:\n  usage_log_length: 200000\n", env={})
    assert longer.fabric.usage_log_length == 200_000
    assert [p for p, _ in problems(BASE + "inferq_settings:\n  usage_log_length: 0\n")] == [
        "inferq_settings.usage_log_length"
    ]
