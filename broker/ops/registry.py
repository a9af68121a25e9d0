"""Worker registry: each worker's heartbeat hash with a TTL, indexed by expiry time.

A worker that stops heartbeating (killed, partitioned) drops out of `live_workers` once its TTL
passes, with no one having to clean up after it.
"""

import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself on each heartbeat."""

    id: str
    group: str
    deployment: str
    host: str
    pid: int
    slots: int
    started: float
    in_flight: int = 0
    done: int = 0
    failed: int = 0


async def heartbeat(redis: Redis, keys: Keys, info: WorkerInfo, ttl: float) -> None:
    """Record that `info.id` is alive for the next `ttl` seconds."""
    key = keys.worker(info.id)
    mapping: dict[Any, Any] = {k: str(v) for k, v in asdict(info).items()}
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        pipe.hset(key, mapping=mapping)
        pipe.pexpire(key, int(ttl * 1000))
        pipe.zadd(keys.workers(), {info.id: time.time() + ttl})
        await pipe.execute()


async def deregister(redis: Redis, keys: Keys, worker_id: str) -> None:
    """Remove a worker that is shutting down cleanly."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        pipe.delete(keys.worker(worker_id))
        pipe.zrem(keys.workers(), worker_id)
        await pipe.execute()


async def live_workers(redis: Redis, keys: Keys) -> list[WorkerInfo]:
    """Every worker whose heartbeat has not expired; expired index entries are pruned."""
    now = time.time()
    async with translate_errors():
        await redis.zremrangebyscore(keys.workers(), "-inf", now)
        ids: list[Any] = await redis.zrangebyscore(keys.workers(), now, "+inf")
        if not ids:
            return []
        pipe = redis.pipeline(transaction=False)
        for worker_id in ids:
            pipe.hgetall(keys.worker(worker_id.decode()))
        rows = await pipe.execute()
    names = {f.name: f.type for f in fields(WorkerInfo)}
    result = []
    for row in rows:
        if not row:
            continue
        data = {k.decode(): v.decode() for k, v in row.items() if k.decode() in names}
        try:
            result.append(
                WorkerInfo(
                    id=data["id"],
                    group=data["group"],
                    deployment=data["deployment"],
                    host=data["host"],
                    pid=int(data["pid"]),
                    slots=int(data["slots"]),
                    started=float(data["started"]),
                    in_flight=int(data.get("in_flight", 0)),
                    done=int(data.get("done", 0)),
                    failed=int(data.get("failed", 0)),
                )
            )
        except (KeyError, ValueError):
            continue  # a half-written or foreign hash is not a live worker
    return result


async def served_from(redis: Redis, keys: Keys, groups: list[str]) -> list[str]:
    """`groups` from the first one a live worker serves (a fallback nobody serves would only
    make a job wait for its deadline); empty when none is served."""
    alive = {w.group for w in await live_workers(redis, keys)}
    for i, group in enumerate(groups):
        if group in alive:
            return groups[i:]
    return []
