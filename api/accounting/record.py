"""One finished request as usage tracking, metrics and the access line see it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class UsageRecord:
    """What one finished request used and how it went."""

    request_id: str
    day: str
    key: str
    model: str
    group: str
    deployment: str
    provider: str
    kind: str
    status: int
    error_type: str | None
    cache_hit: bool
    prompt_tokens: int
    completion_tokens: int
    cost: float
    queue_ms: float | None
    ttft_ms: float | None
    latency_ms: float
    attempts: int
