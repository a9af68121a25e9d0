"""Usage tracking and metrics: one record per finished request, aggregated per day by model
group, deployment and (hashed) API key, and counted for Prometheus.

Records are aggregated in memory and flushed to Redis once a second in one round trip, so
the request path pays a dictionary update, not a Redis call.
"""

import asyncio
import functools
import hashlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.types import Scope

from inferq.api.accounting.record import UsageRecord
from inferq.api.middleware.access import finished
from inferq.broker.connection import Redis
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.messages import Job, Reply
from inferq.broker.ops.usage import flush
from inferq.config import GatewayConfig

log = logging.getLogger("inferq.api")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def key_of(request: Request) -> str:
    """A stable, non-reversible name for the API key a request presented."""
    presented = request.headers.get("authorization", "") or request.headers.get("x-api-key", "")
    return _key_name(presented.removeprefix("Bearer ").strip())


@functools.lru_cache(maxsize=256)  # the same few keys on every request: hash each once
def _key_name(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12] if token else "anonymous"


class Metrics:
    """This API process's Prometheus metrics (its own registry: no module globals)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inferq_requests", "Requests by group and status", ["model_group", "status"], registry=r
        )
        self.errors = Counter(
            "inferq_errors", "Failed requests by error type", ["model_group", "type"], registry=r
        )
        self.latency = Histogram(
            "inferq_request_seconds",
            "Request latency",
            ["model_group"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "inferq_time_to_first_token_seconds",
            "Time to first token (streams)",
            ["model_group"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "inferq_tokens",
            "Tokens by group and direction",
            ["model_group", "direction"],
            registry=r,
        )
        self.cost = Counter("inferq_cost_usd", "Cost in USD", ["model_group"], registry=r)
        self.cache_hits = Counter(
            "inferq_cache_hits", "Answers served from the cache", ["model_group"], registry=r
        )
        self.retries = Counter(
            "inferq_attempts_beyond_first",
            "Retries and fallbacks it took",
            ["model_group"],
            registry=r,
        )
        self.fallbacks = Counter(
            "inferq_fallbacks",
            "Requests answered by a fallback group",
            ["requested_group"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "inferq_queue_depth", "Jobs waiting per group", ["model_group"], registry=r
        )
        self.queue_running = Gauge(
            "inferq_queue_running", "Jobs being served per group", ["model_group"], registry=r
        )
        self.batch_depth = Gauge(
            "inferq_batch_queue_depth", "Batch jobs waiting per group", ["model_group"], registry=r
        )
        self.batch_running = Gauge(
            "inferq_batch_running", "Batch jobs being served per group", ["model_group"], registry=r
        )
        self.workers = Gauge(
            "inferq_live_workers", "Live workers per deployment", ["deployment"], registry=r
        )
        self.cooldown = Gauge(
            "inferq_cooldown_seconds", "Cooldown left per deployment", ["deployment"], registry=r
        )
        # Each group's labelled series, looked up once (`labels()` takes a lock and builds
        # a key on every call): requests with status 200, latency, TTFT, tokens, cost.
        self._groups: dict[str, tuple[Any, ...]] = {}

    def _group(self, group: str) -> tuple[Any, ...]:
        self._groups[group] = per = (
            self.requests.labels(group, "200"),
            self.latency.labels(group),
            self.ttft.labels(group),
            self.tokens.labels(group, "prompt"),
            self.tokens.labels(group, "completion"),
            self.cost.labels(group),
        )
        return per

    def observe(self, rec: UsageRecord, first_group: str) -> None:
        """Count one finished request."""
        group = rec.group or first_group
        per = self._groups.get(group) or self._group(group)
        if rec.status == 200:
            per[0].inc()
        else:
            self.requests.labels(group, str(rec.status)).inc()
        if rec.error_type:
            self.errors.labels(group, rec.error_type).inc()
        per[1].observe(rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            per[2].observe(rec.ttft_ms / 1000)
        per[3].inc(rec.prompt_tokens)
        per[4].inc(rec.completion_tokens)
        per[5].inc(rec.cost)
        if rec.cache_hit:
            self.cache_hits.labels(group).inc()
        if rec.attempts > 1:
            self.retries.labels(group).inc(rec.attempts - 1)
        if rec.group and rec.group != first_group:
            self.fallbacks.labels(first_group).inc()


class UsageRecorder:
    """Buffers records and their per-day totals; flushes them to Redis every second."""

    def __init__(self, redis: Redis, keys: Keys, config: GatewayConfig, metrics: Metrics) -> None:
        self._redis = redis
        self._keys = keys
        self._config = config
        self.metrics = metrics
        self._totals: defaultdict[tuple[str, str, str], defaultdict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )
        # The records not yet written: no more than the log keeps (the latest), however long
        # Redis is away.
        self._records: deque[bytes] = deque(maxlen=config.fabric.usage_log_length)
        self._task: asyncio.Task[None] | None = None

    def reconfigure(self, config: GatewayConfig) -> None:
        """Follow a reloaded config (deployments' providers, for the usage records)."""
        self._config = config
        if self._records.maxlen != config.fabric.usage_log_length:
            self._records = deque(self._records, maxlen=config.fabric.usage_log_length)

    def track(self, request: Request, job: Job) -> "Tracker":
        """Start timing a request."""
        # A virtual key counts under its lasting id (the same as its budget's).
        return Tracker(self, job, job.key or key_of(request), request.scope)

    def add(self, rec: UsageRecord, first_group: str) -> None:
        """Count a finished request (no I/O here)."""
        self.metrics.observe(rec, first_group)
        amounts = {
            "requests": 1,
            "errors": 1 if rec.error_type else 0,
            "cache_hits": 1 if rec.cache_hit else 0,
            "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens,
            "cost": rec.cost,
        }
        dimensions = (
            ("group", rec.group or first_group),
            ("deployment", rec.deployment),
            ("key", rec.key),
            ("provider", rec.provider),
        )
        for dimension, value in dimensions:
            if value:
                totals = self._totals[(rec.day, dimension, value)]
                for name, amount in amounts.items():
                    totals[name] += amount
        self._records.append(orjson.dumps(rec))  # orjson serialises dataclasses natively

    def start(self) -> None:
        """Flush once a second in the background."""
        self._task = asyncio.create_task(self._run(), name="usage-flush")

    async def stop(self) -> None:
        """Stop, after a last flush."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        """Write what is buffered (kept for the next try if Redis is away)."""
        if not self._totals and not self._records:
            return
        totals, records = self._totals, list(self._records)
        self._totals = defaultdict(lambda: defaultdict(float))
        self._records.clear()
        try:
            log_length = self._config.fabric.usage_log_length
            await flush(self._redis, self._keys, totals, records, log_length)
        except Exception as exc:  # kept whatever failed: the flush task must not die of it
            if isinstance(exc, BrokerError):
                log.warning("usage not written yet (%s); will retry", exc)
            else:
                log.exception("usage not written (unexpected error); will retry")
            for k, fields in totals.items():
                for name, amount in fields.items():
                    self._totals[k][name] += amount
            self._records = deque([*records, *self._records], maxlen=self._records.maxlen)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.flush()

    def provider_of(self, deployment: str) -> str:
        dep = self._config.deployment(deployment) if deployment else None
        return dep.provider.value if dep else ""


class Tracker:
    """Times one request and records how it ended (usage, metrics and its access line)."""

    def __init__(self, recorder: UsageRecorder, job: Job, key: str, scope: Scope) -> None:
        self._recorder = recorder
        self._job = job
        self._key = key
        self._scope = scope
        self._start = time.monotonic()
        self._first: float | None = None
        # Set once a stream's 200 has gone out: an error after it is an event, not a status.
        self.streaming = False
        # Told how the request ended (a virtual key's limits and spend, its fair share).
        self.on_end: list[Callable[[UsageRecord], None]] = []

    def first_output(self) -> None:
        """The answer began (streams: the first chunk went out)."""
        if self._first is None:
            self._first = time.monotonic()

    def done(self, reply: Reply, cache_hit: bool) -> None:
        """The request succeeded with `reply` as its terminal message."""
        usage = reply.usage or {}
        self._record(200, None, reply, cache_hit, usage)

    def failed(self, status: int, error_type: str, reply: Reply | None = None) -> None:
        """The request ended in an error (or its client left: 499)."""
        self._record(status, error_type, reply, False, {})

    def _record(
        self,
        status: int,
        error: str | None,
        reply: Reply | None,
        hit: bool,
        usage: dict[str, object],
    ) -> None:
        now = time.monotonic()
        deployment = (reply.deployment if reply else None) or ""
        rec = UsageRecord(
            request_id=self._job.request_id or self._job.id,
            day=time.strftime("%Y-%m-%d", time.gmtime()),
            key=self._key,
            model=self._job.model,
            group=(reply.group if reply else None) or self._job.group,
            deployment=deployment,
            provider=self._recorder.provider_of(deployment),
            kind=self._job.kind.value,
            status=status,
            error_type=error,
            cache_hit=hit,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),  # type: ignore[call-overload]
            completion_tokens=int(usage.get("completion_tokens") or 0),  # type: ignore[call-overload]
            cost=0.0 if hit else float(reply.cost or 0.0) if reply else 0.0,
            queue_ms=reply.queue_ms if reply else None,
            ttft_ms=round((self._first - self._start) * 1000, 2) if self._first else None,
            latency_ms=round((now - self._start) * 1000, 2),
            attempts=reply.attempts if reply else 1,
        )
        self._recorder.add(rec, self._job.group)
        for call in self.on_end:
            call(rec)
        finished(self._scope, rec, 200 if self.streaming else status, self._job.group)
