"""Read a LiteLLM-format YAML file into a GatewayConfig, or fail with every problem's YAML path."""

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from inferq.config.envsubst import substitute
from inferq.config.errors import ConfigError, error_path
from inferq.config.model import (
    DEFAULT_API_BASE,
    Alias,
    Budget,
    CacheConfig,
    Deployment,
    FabricConfig,
    GatewayConfig,
    Provider,
    RouterConfig,
)
from inferq.config.schema import ConfigFile, ModelEntry, SettingsSection

log = logging.getLogger("inferq.config")

_OPENAI_BARE = ("gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-", "davinci", "babbage")
_PREFIXES = {
    "openai": Provider.OPENAI,
    "text-completion-openai": Provider.OPENAI,
    "anthropic": Provider.ANTHROPIC,
}


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load and validate a config file. Raises ConfigError naming each bad YAML path."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read file: {exc.strerror or exc}")]) from None
    return parse_config(text, source, env)


def parse_config(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate YAML text; `env` defaults to the process environment."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [("", f"YAML syntax error: {where}{problem}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, [("", "the file must be a YAML mapping with a model_list")])
    problems: list[tuple[str, str]] = []
    raw = substitute(raw, os.environ if env is None else env, "", problems)
    if problems:
        raise ConfigError(source, problems)
    try:
        doc = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [_pydantic_problem(e) for e in exc.errors()]) from None
    return _build(doc, source)


def _pydantic_problem(err: Any) -> tuple[str, str]:
    message = "required field is missing" if err["type"] == "missing" else err["msg"]
    return error_path(err["loc"]), message


def split_model(model: str) -> tuple[Provider, str] | None:
    """`openai//models/x.gguf` → (OPENAI, "/models/x.gguf"); bare names by family; else None."""
    prefix, sep, rest = model.partition("/")
    if sep:
        provider = _PREFIXES.get(prefix)
        return (provider, rest) if provider and rest else None
    if model.startswith("claude"):
        return Provider.ANTHROPIC, model
    if model.startswith(_OPENAI_BARE):
        return Provider.OPENAI, model
    return None


def _build(doc: ConfigFile, source: str) -> GatewayConfig:
    problems: list[tuple[str, str]] = []
    fabric = doc.inferq_settings
    groups: dict[str, list[Deployment]] = {}
    seen_ids: set[str] = set()
    for i, entry in enumerate(doc.model_list):
        dep = _deployment(entry, i, len(groups.get(entry.model_name, [])), fabric, problems)
        if dep is None:
            continue
        if dep.id in seen_ids:
            problems.append((f"model_list[{i}].model_info.id", f"duplicate deployment id {dep.id}"))
        seen_ids.add(dep.id)
        groups.setdefault(entry.model_name, []).append(dep)

    aliases = _aliases(doc, groups, problems)
    fallbacks = _fallbacks(doc, groups, problems)
    budgets = _budgets(doc, groups, problems)
    if problems:
        raise ConfigError(source, problems)

    general, litellm = doc.general_settings, doc.litellm_settings
    master_key = general.master_key or litellm.master_key or None
    router = doc.router_settings
    return GatewayConfig(
        source=source,
        groups={name: tuple(deps) for name, deps in groups.items()},
        aliases=aliases,
        fallbacks=fallbacks,
        router=RouterConfig(
            num_retries=router.num_retries,
            timeout=router.timeout,
            allowed_fails=router.allowed_fails,
            cooldown_time=router.cooldown_time,
        ),
        master_key=master_key,
        cache=_cache(general, litellm),
        fabric=FabricConfig(
            key_prefix=fabric.key_prefix,
            queue_limit=fabric.queue_limit,
            default_max_parallel_requests=fabric.default_max_parallel_requests,
            default_timeout=fabric.default_timeout,
            max_deliveries=fabric.max_deliveries,
            max_request_bytes=fabric.max_request_bytes,
            watch_config=fabric.watch_config,
            max_file_bytes=fabric.max_file_bytes,
            batch_api_window=fabric.batch_api_window,
            replica_acks=fabric.replica_acks,
            replica_ack_timeout_ms=fabric.replica_ack_timeout_ms,
            usage_log_length=fabric.usage_log_length,
            batch_queue_limit=fabric.batch_queue_limit,
            batch_max_slots=fabric.batch_max_slots,
            batch_min_share=fabric.batch_min_share,
            batch_timeout=fabric.batch_timeout,
            result_ttl=fabric.result_ttl,
        ),
        budgets=budgets,
        budget_webhook=fabric.budget_webhook,
    )


# litellm_params keys that become request defaults: OpenAI's chat parameters plus the sampling
# extras OpenAI-compatible servers (llama.cpp, vLLM) accept. Anything else in litellm_params is
# LiteLLM's own (drop_params, tags, aws_*, ...) and must not reach a backend as a request field.
REQUEST_DEFAULTS = frozenset(
    {
        "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
        "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
        "seed", "response_format", "tools", "tool_choice", "parallel_tool_calls", "user",
        "reasoning_effort", "service_tier", "top_k", "min_p", "repeat_penalty",
        "typical_p", "mirostat_mode", "mirostat_tau", "mirostat_eta", "grammar",
    }
)  # fmt: skip


def _deployment(
    entry: ModelEntry, index: int, ordinal: int, fabric: Any, problems: list[tuple[str, str]]
) -> Deployment | None:
    p = entry.litellm_params
    where = f"model_list[{index}].litellm_params"
    parsed = split_model(p.model)
    if parsed is None:
        problems.append(
            (
                f"{where}.model",
                f"unknown provider in {p.model!r}: use openai/<model> (any OpenAI-compatible "
                "server), anthropic/<model>, or a known bare name (gpt-*, claude-*)",
            )
        )
        return None
    provider, upstream = parsed
    api_base = (p.api_base or DEFAULT_API_BASE[provider]).rstrip("/")
    if not api_base.startswith(("http://", "https://")):
        problems.append((f"{where}.api_base", f"must be an http(s) URL, got {api_base!r}"))
        return None
    explicit_id = entry.model_info.get("id")
    dep_id = str(explicit_id) if explicit_id else f"{entry.model_name}.{ordinal}"
    extra = p.model_extra or {}
    defaults = {k: v for k, v in extra.items() if k in REQUEST_DEFAULTS}
    ignored = sorted(set(extra) - REQUEST_DEFAULTS)
    if ignored:
        log.info("%s: ignoring litellm_params %s (not request fields)", where, ", ".join(ignored))
    return Deployment(
        id=dep_id,
        group=entry.model_name,
        provider=provider,
        upstream_model=upstream,
        api_base=api_base,
        api_key=p.api_key or None,
        organization=p.organization,
        timeout=p.timeout,
        stream_timeout=p.stream_timeout,
        max_parallel_requests=p.max_parallel_requests or fabric.default_max_parallel_requests,
        rpm=p.rpm,
        tpm=p.tpm,
        order=p.order,
        weight=p.weight,
        defaults=defaults,
        extra_headers=dict(p.extra_headers or {}),
        model_info=dict(entry.model_info),
        input_cost_per_token=p.input_cost_per_token,
        output_cost_per_token=p.output_cost_per_token,
    )


def _aliases(
    doc: ConfigFile, groups: Mapping[str, Any], problems: list[tuple[str, str]]
) -> dict[str, Alias]:
    aliases: dict[str, Alias] = {}
    for name, spec in doc.router_settings.model_group_alias.items():
        where = f"router_settings.model_group_alias.{name}"
        if isinstance(spec, str):
            chain, hidden = [spec], False
        elif isinstance(spec, list):
            chain, hidden = spec, False
        else:
            chain, hidden = [spec.model], spec.hidden
        if not chain:
            problems.append((where, "an alias needs at least one model group"))
            continue
        if name in groups:
            problems.append((where, f"alias {name!r} has the name of a model group"))
        for i, group in enumerate(chain):
            if group not in groups:
                known = ", ".join(sorted(groups))
                problems.append(
                    (
                        f"{where}[{i}]" if isinstance(spec, list) else where,
                        f"model group {group!r} does not exist (known: {known})",
                    )
                )
        aliases[name] = Alias(name=name, chain=tuple(chain), hidden=hidden)
    return aliases


def _fallbacks(
    doc: ConfigFile, groups: Mapping[str, Any], problems: list[tuple[str, str]]
) -> dict[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(doc.router_settings.fallbacks):
        for group, chain in item.items():
            where = f"router_settings.fallbacks[{i}].{group}"
            for name in (group, *chain):
                if name not in groups:
                    problems.append((where, f"model group {name!r} does not exist"))
            result[group] = tuple(chain)
    return result


_PERIODS = {
    "1d": "day",
    "24h": "day",
    "day": "day",
    "30d": "month",
    "1mo": "month",
    "month": "month",
}


def _budgets(
    doc: ConfigFile, groups: Mapping[str, Any], problems: list[tuple[str, str]]
) -> tuple[Budget, ...]:
    budgets: list[Budget] = []
    providers = {p.value for p in Provider}
    for name, spec in doc.router_settings.provider_budget_config.items():
        where = f"router_settings.provider_budget_config.{name}"
        period = _PERIODS.get(spec.time_period)
        if name not in providers:
            problems.append(
                (where, f"unknown provider {name!r} (known: {', '.join(sorted(providers))})")
            )
        elif period is None:
            problems.append((f"{where}.time_period", "use 1d (a UTC day) or 30d/1mo (a UTC month)"))
        else:
            budgets.append(Budget("provider", name, period, spec.budget_limit, 0.8))
    for i, b in enumerate(doc.inferq_settings.budgets):
        where = f"inferq_settings.budgets[{i}]"
        if bool(b.group) == bool(b.provider):
            problems.append((where, "give exactly one of group or provider"))
        elif b.group and b.group not in groups:
            problems.append((f"{where}.group", f"model group {b.group!r} does not exist"))
        elif b.provider and b.provider not in providers:
            problems.append((f"{where}.provider", f"unknown provider {b.provider!r}"))
        else:
            scope, target = ("group", b.group) if b.group else ("provider", b.provider)
            budgets.append(Budget(scope, str(target), b.period, b.limit, b.warn_at))
    return tuple(budgets)


def _cache(general: SettingsSection, litellm: SettingsSection) -> CacheConfig:
    enabled = bool(general.cache if general.cache is not None else litellm.cache)
    params = general.cache_params or litellm.cache_params
    return CacheConfig(
        enabled=enabled,
        host=params.host if params else None,
        port=params.port if params else None,
        password=params.password if params else None,
        ttl=params.ttl if params else 600.0,
        namespace=params.namespace if params else None,
    )
