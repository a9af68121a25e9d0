"""The fabric as an operator sees it, read from Redis in one pass: queues, workers, cooldowns and
the last minute's requests, per group and per deployment (plain data for the CLI and the API)."""

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from inferq.broker.connection import Redis
from inferq.broker.jobs.queue import depths, lags
from inferq.broker.keys import Keys
from inferq.broker.ops.limits import cooldowns
from inferq.broker.ops.registry import WorkerInfo, live_workers
from inferq.broker.ops.usage import recent_records


@dataclass(frozen=True)
class GroupStatus:
    """One model group now: its queue, the workers serving it and its last `window` seconds."""

    waiting: int
    running: int
    lag_s: float | None  # how long the oldest waiting interactive job has waited
    batch_waiting: int
    batch_running: int
    workers: int
    slots: int
    in_flight: int
    requests_per_min: int
    p50_ms: float | None
    cache_hits_per_min: int
    cooldowns: dict[str, float]  # deployments cooling down: seconds left


@dataclass(frozen=True)
class DeploymentStatus:
    """One deployment now: its live workers, their slots and jobs in flight, its cooldown."""

    group: str
    workers: int
    slots: int
    in_flight: int
    cooldown_s: float


@dataclass(frozen=True)
class FabricStatus:
    """Every group and deployment of the config, the live workers, and the totals over them."""

    time: float
    groups: dict[str, GroupStatus]
    deployments: dict[str, DeploymentStatus]
    workers: list[WorkerInfo]
    requests_per_min: int
    p50_ms: float | None
    cache_hits_per_min: int
    sampled: bool  # rates and latency come from the latest requests only (`limit` was reached)

    def as_dict(self, unavailable: Mapping[str, str | None]) -> dict[str, Any]:
        """JSON-ready (`inferq status --json`, the dashboard), each group with the reason it
        cannot be served, if `unavailable` names one."""
        return {
            "time": self.time,
            "groups": {
                name: {**asdict(g), "unavailable": unavailable.get(name)}
                for name, g in self.groups.items()
            },
            "deployments": {name: asdict(d) for name, d in self.deployments.items()},
            "workers": [asdict(w) for w in self.workers],
            "requests_per_min": self.requests_per_min,
            "p50_ms": self.p50_ms,
            "cache_hits_per_min": self.cache_hits_per_min,
            "sampled": self.sampled,
        }


async def read_status(
    redis: Redis,
    keys: Keys,
    groups: Mapping[str, Sequence[str]],
    window: float = 60.0,
    limit: int = 50_000,
) -> FabricStatus:
    """The status of `groups` (group name → its deployment ids); throughput, latency and cache
    hits come from the requests recorded in the last `window` seconds, or from the latest
    `limit` of them when there are more (the rates are then scaled to the time those cover).
    Raises BrokerError when Redis is down."""
    workers = await live_workers(redis, keys)
    raw, covered = await recent_records(redis, keys, window, limit)
    records = [orjson.loads(r) for r in raw]
    per_min = 60.0 / covered
    queues = await depths(redis, keys, list(groups))
    waited = await lags(redis, keys, list(groups))
    pairs = [(group, dep) for group, deps in groups.items() for dep in deps]
    cooling = await cooldowns(redis, keys, pairs)
    deployments = {
        dep: _deployment(group, [w for w in workers if w.deployment == dep], cooling[dep])
        for group, dep in pairs
    }
    table: dict[str, GroupStatus] = {}
    for name, deps in groups.items():
        mine = [w for w in workers if w.group == name]
        here = [r for r in records if r.get("group") == name]
        table[name] = GroupStatus(
            waiting=queues[name].waiting,
            running=queues[name].running,
            lag_s=waited[name],
            batch_waiting=queues[name].batch_waiting,
            batch_running=queues[name].batch_running,
            workers=len(mine),
            slots=sum(w.slots for w in mine),
            in_flight=sum(w.in_flight for w in mine),
            requests_per_min=round(len(here) * per_min),
            p50_ms=_median(here),
            cache_hits_per_min=round(sum(1 for r in here if r.get("cache_hit")) * per_min),
            cooldowns={d: round(cooling[d], 1) for d in deps if cooling[d]},
        )
    return FabricStatus(
        time=time.time(),
        groups=table,
        deployments=deployments,
        workers=sorted(workers, key=lambda w: (w.deployment, w.started)),
        requests_per_min=round(len(records) * per_min),
        p50_ms=_median(records),
        cache_hits_per_min=round(sum(1 for r in records if r.get("cache_hit")) * per_min),
        sampled=covered < window,
    )


def _deployment(group: str, live: list[WorkerInfo], cooldown: float) -> DeploymentStatus:
    return DeploymentStatus(
        group=group,
        workers=len(live),
        slots=sum(w.slots for w in live),
        in_flight=sum(w.in_flight for w in live),
        cooldown_s=round(cooldown, 1),
    )


def _median(records: list[dict[str, Any]]) -> float | None:
    latencies = [float(r["latency_ms"]) for r in records if "latency_ms" in r]
    return round(statistics.median(latencies), 1) if latencies else None
