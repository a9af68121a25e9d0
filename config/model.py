"""The parsed configuration: frozen objects handed to the API, workers and broker."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse

from inferq.config.errors import NoUsableGroup, UnknownModel


class Provider(StrEnum):
    """Wire protocol a deployment speaks."""

    OPENAI = "openai"  # OpenAI itself and every OpenAI-compatible server (llama.cpp, vLLM)
    ANTHROPIC = "anthropic"


# Providers the workers can call today; others are parsed (the config stays valid) but their
# deployments are reported unavailable instead of crashing a worker.
SUPPORTED_PROVIDERS = frozenset({Provider.OPENAI, Provider.ANTHROPIC})

DEFAULT_API_BASE = {
    Provider.OPENAI: "https://api.openai.com/v1",
    Provider.ANTHROPIC: "https://api.anthropic.com",
}

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class Deployment:
    """One `model_list` entry: a backend serving a model group."""

    id: str
    group: str
    provider: Provider
    upstream_model: str
    api_base: str
    api_key: str | None = field(repr=False)
    organization: str | None
    timeout: float | None
    stream_timeout: float | None
    max_parallel_requests: int
    rpm: int | None
    tpm: int | None
    order: int | None
    weight: float | None
    defaults: Mapping[str, Any]
    extra_headers: Mapping[str, str] = field(repr=False)
    model_info: Mapping[str, Any]
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None

    @property
    def is_cloud(self) -> bool:
        """True when the deployment talks to a provider's public API (it needs a key)."""
        return self.api_base.rstrip("/") == DEFAULT_API_BASE[self.provider]

    @property
    def unavailable_reason(self) -> str | None:
        """Why no worker can serve this deployment now, or None when it can."""
        if self.provider not in SUPPORTED_PROVIDERS:
            return f"the {self.provider.value} provider is not supported yet"
        if self.is_cloud and not self.api_key:
            env = "OPENAI_API_KEY" if self.provider is Provider.OPENAI else "ANTHROPIC_API_KEY"
            return f"no API key configured (set {env})"
        return None

    @property
    def is_local(self) -> bool:
        """True when the backend runs on this machine."""
        return (urlparse(self.api_base).hostname or "") in _LOOPBACK


@dataclass(frozen=True)
class Alias:
    """A public model name that routes to a chain of groups: first serves, rest fall back."""

    name: str
    chain: tuple[str, ...]
    hidden: bool


@dataclass(frozen=True)
class Route:
    """Where a request for `requested` goes: `chain[0]` first, then the fallbacks in order."""

    requested: str
    chain: tuple[str, ...]


@dataclass(frozen=True)
class RouterConfig:
    """Retry, timeout and cooldown policy (`router_settings`)."""

    num_retries: int
    timeout: float | None
    allowed_fails: int
    cooldown_time: float


@dataclass(frozen=True)
class CacheConfig:
    """Response cache settings; `enabled` False means no lookups and no stores."""

    enabled: bool
    host: str | None
    port: int | None
    password: str | None = field(repr=False)
    ttl: float
    namespace: str | None


@dataclass(frozen=True)
class Budget:
    """A spend limit in USD for a model group or a provider, per UTC day or month."""

    scope: str  # "group" or "provider"
    name: str
    period: str  # "day" or "month"
    limit: float
    warn_at: float  # fraction of `limit` at which to warn


@dataclass(frozen=True)
class FabricConfig:
    """The queue's own settings (`inferq_settings`)."""

    key_prefix: str
    queue_limit: int
    default_max_parallel_requests: int
    default_timeout: float
    max_deliveries: int
    max_request_bytes: int
    batch_queue_limit: int
    batch_max_slots: float
    batch_min_share: float
    batch_timeout: float
    result_ttl: float
    watch_config: bool = True
    max_file_bytes: int = 200 * 1024 * 1024
    batch_api_window: int = 256
    replica_acks: int = 0  # replicas that must have a job (enqueue, end) before it counts
    replica_ack_timeout_ms: int = 100
    usage_log_length: int = 10_000  # request records kept in the usage log

    def batch_slots(self, slots: int) -> int:
        """How many of a deployment's `slots` batch jobs may hold at once: `batch_max_slots`
        of them, at least one (a one-slot llama.cpp still serves batch), and with more than
        one slot, never all (one stays free for interactive requests)."""
        if slots <= 1:
            return 1
        return max(1, min(slots - 1, math.floor(slots * self.batch_max_slots)))


@dataclass(frozen=True)
class GatewayConfig:
    """Everything a process needs to know about models, routing and settings."""

    source: str
    groups: Mapping[str, tuple[Deployment, ...]]
    aliases: Mapping[str, Alias]
    fallbacks: Mapping[str, tuple[str, ...]]
    router: RouterConfig
    master_key: str | None = field(repr=False)
    cache: CacheConfig
    fabric: FabricConfig
    budgets: tuple[Budget, ...] = ()
    budget_webhook: str | None = None

    def route(self, model: str) -> Route | None:
        """Resolve a requested model name (group or alias) to its chain of groups."""
        if model in self.groups:
            return Route(model, (model, *self.fallbacks.get(model, ())))
        alias = self.aliases.get(model)
        if alias is None:
            return None
        head = alias.chain[0]
        tail = alias.chain[1:] or self.fallbacks.get(head, ())
        return Route(model, (head, *tail))

    def resolve(
        self, model: str, fallbacks: list[str] | None = None, disable_fallbacks: bool = False
    ) -> tuple[str, ...]:
        """The groups a request for `model` may use, in order: the first serves, the rest are
        its fallbacks (its route's, or the request's own `fallbacks`), minus groups that cannot
        be served now. Raises UnknownModel or NoUsableGroup."""
        route = self.route(model)
        if route is None:
            raise UnknownModel(model, "model", self.public_models())
        tail: list[str] = list(route.chain[1:])
        if disable_fallbacks:
            tail = []
        elif fallbacks is not None:
            tail = []
            for name in fallbacks:
                fallback = self.route(name)
                if fallback is None:
                    raise UnknownModel(name, "fallbacks", self.public_models())
                tail += [g for g in fallback.chain if g not in tail]
        ordered = dict.fromkeys([route.chain[0], *tail])
        chain = tuple(g for g in ordered if self.unavailable_reason(g) is None)
        if not chain:
            reasons = "; ".join(f"{g}: {self.unavailable_reason(g)}" for g in route.chain)
            raise NoUsableGroup(f"Model {model} cannot be served right now ({reasons}).")
        return chain

    def unavailable_reason(self, group: str) -> str | None:
        """Why no deployment of `group` can be served (e.g. no API key), or None if one can."""
        reasons = [d.unavailable_reason for d in self.groups.get(group, ())]
        if reasons and all(reasons):
            return reasons[0]
        return None

    def public_models(self) -> list[str]:
        """Names a client may ask for: every group and every alias not marked hidden."""
        names = list(self.groups)
        names += [a.name for a in self.aliases.values() if not a.hidden]
        return names

    def deployment_keys(self) -> list[tuple[str, str]]:
        """`(group, deployment id)` for every deployment."""
        return [(d.group, d.id) for deps in self.groups.values() for d in deps]

    def deployment(self, deployment_id: str) -> Deployment | None:
        """Find a deployment by id across all groups."""
        for deployments in self.groups.values():
            for d in deployments:
                if d.id == deployment_id:
                    return d
        return None
