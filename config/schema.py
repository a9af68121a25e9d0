"""The YAML as LiteLLM writes it: pydantic models for the trust boundary of the config file.

Unknown keys are kept (a LiteLLM config carries many settings inferq does not use); the loader
warns about the sections it ignores.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class LiteLLMParams(_Open):
    """`litellm_params` of one deployment; extra keys are request defaults (temperature...)."""

    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key: str | None = None
    organization: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_parallel_requests: int | None = Field(default=None, gt=0)
    order: int | None = None
    weight: float | None = Field(default=None, ge=0)
    extra_headers: dict[str, str] | None = None
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)


class ModelEntry(_Open):
    """One `model_list[]` entry: a deployment of the model group `model_name`."""

    model_name: str = Field(min_length=1)
    litellm_params: LiteLLMParams
    model_info: dict[str, Any] = Field(default_factory=dict)


class AliasSpec(BaseModel):
    """`model_group_alias: {name: {model: group, hidden: true}}`."""

    model_config = ConfigDict(extra="forbid")
    model: str
    hidden: bool = False


class RouterSettings(_Open):
    """`router_settings`: aliases, fallbacks and retry policy."""

    model_group_alias: dict[str, str | AliasSpec | list[str]] = Field(default_factory=dict)
    fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)
    num_retries: int = Field(default=2, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    allowed_fails: int = Field(default=3, ge=0)
    cooldown_time: float = Field(default=5.0, ge=0)
    provider_budget_config: dict[str, "ProviderBudget"] = Field(default_factory=dict)


class ProviderBudget(BaseModel):
    """LiteLLM's `provider_budget_config` entry: spend limit for a provider per period."""

    model_config = ConfigDict(extra="forbid")
    budget_limit: float = Field(gt=0)
    time_period: str = "1d"


class BudgetSpec(BaseModel):
    """`inferq_settings.budgets[]`: a spend limit for one model group or provider."""

    model_config = ConfigDict(extra="forbid")
    group: str | None = None
    provider: str | None = None
    period: Literal["day", "month"] = "day"
    limit: float = Field(gt=0)
    warn_at: float = Field(default=0.8, gt=0, le=1)


class CacheParams(_Open):
    """`cache_params`: where the response cache lives and how long entries stay."""

    type: str = "redis"
    host: str | None = None
    port: int | None = None
    password: str | None = None
    ttl: float = Field(default=600, gt=0)
    namespace: str | None = None


class SettingsSection(_Open):
    """`general_settings` / `litellm_settings`: both may carry the master key and cache."""

    master_key: str | None = None
    cache: bool | None = None
    cache_params: CacheParams | None = None


class InferqSettings(BaseModel):
    """`inferq_settings`: the fabric's own knobs (not in LiteLLM's format)."""

    model_config = ConfigDict(extra="forbid")
    key_prefix: str = Field(default="inferq", pattern=r"^[A-Za-z0-9_.-]+$")
    queue_limit: int = Field(default=1000, gt=0)
    default_max_parallel_requests: int = Field(default=8, gt=0)
    default_timeout: float = Field(default=600, gt=0)
    max_deliveries: int = Field(default=3, gt=0)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Request records kept in the usage log (`inferq status` reads its last minute): a count,
    # not an age, so Redis holds a few MB whatever the traffic (issue 15).
    usage_log_length: int = Field(default=10_000, gt=0)
    budgets: list[BudgetSpec] = Field(default_factory=list)
    budget_webhook: str | None = None  # POSTed a JSON alert when spend crosses a warning
    watch_config: bool = True  # reload when the config file changes (SIGHUP and reload always)
    max_file_bytes: int = Field(default=200 * 1024 * 1024, gt=0)  # POST /v1/files
    batch_api_window: int = Field(default=256, gt=0)  # jobs of one /v1/batches batch in flight
    # With replicas (Sentinel): a job counts as accepted, and as ended, once this many replicas
    # have it (WAIT), so a failover right after cannot lose it; waits at most the timeout (kept
    # under the connections' 5 s socket timeout), then goes on with a warning.
    replica_acks: int = Field(default=0, ge=0, le=16)
    replica_ack_timeout_ms: int = Field(default=100, gt=0, le=4000)
    # Batch lane (issue 7): its own admission limit, the share of a deployment's slots it may
    # hold, the share of pulls it gets when both lanes have work, how long its jobs may take.
    batch_queue_limit: int = Field(default=100_000, gt=0)
    batch_max_slots: float = Field(default=0.75, gt=0, le=1)
    batch_min_share: float = Field(default=0.1, ge=0, lt=1)
    batch_timeout: float = Field(default=86_400, gt=0)
    result_ttl: float = Field(default=86_400, gt=0)


class ConfigFile(_Open):
    """The whole YAML document."""

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `router_settings:` with nothing under it is YAML null: treat it as an empty section.
        if isinstance(data, dict):
            return {k: ({} if v is None and k != "model_list" else v) for k, v in data.items()}
        return data

    model_list: list[ModelEntry] = Field(min_length=1)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    general_settings: SettingsSection = Field(default_factory=SettingsSection)
    litellm_settings: SettingsSection = Field(default_factory=SettingsSection)
    inferq_settings: InferqSettings = Field(default_factory=InferqSettings)
