"""Usage in Redis: per-day aggregates by model group, deployment and API key, and a capped log
of request records."""

import time
from collections.abc import Mapping
from typing import Any

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys

FIELDS = ("requests", "errors", "cache_hits", "prompt_tokens", "completion_tokens", "cost")
_KEEP_DAYS = 400


async def flush(
    redis: Redis,
    keys: Keys,
    totals: Mapping[tuple[str, str, str], Mapping[str, float]],
    records: list[bytes],
    log_length: int,
) -> None:
    """Add `totals[(day, dimension, value)][field]` to the aggregates and append the records
    to the log, which keeps about the last `log_length` of them, in one round trip."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for (day, dimension, value), fields in totals.items():
            key = keys.usage(day, dimension, value)
            for name, amount in fields.items():
                if name == "cost":
                    pipe.hincrbyfloat(key, name, amount)
                else:
                    pipe.hincrby(key, name, int(amount))
            pipe.expire(key, _KEEP_DAYS * 86400)
            pipe.sadd(keys.usage_index(day), f"{dimension}\t{value}")
            pipe.expire(keys.usage_index(day), _KEEP_DAYS * 86400)
        for record in records:
            pipe.xadd(keys.usage_log(), {b"r": record}, maxlen=log_length, approximate=True)
        await pipe.execute()


async def read_days(redis: Redis, keys: Keys, days: list[str]) -> dict[str, dict[str, Any]]:
    """`{day: {dimension: {value: {field: number}}}}` for the given days."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for day in days:
            pipe.smembers(keys.usage_index(day))
        indexes = await pipe.execute()
        wanted: list[tuple[str, str, str]] = []
        for day, members in zip(days, indexes, strict=True):
            for member in members:
                dimension, _, value = member.decode().partition("\t")
                wanted.append((day, dimension, value))
        pipe = redis.pipeline(transaction=False)
        for day, dimension, value in wanted:
            pipe.hgetall(keys.usage(day, dimension, value))
        rows = await pipe.execute()
    result: dict[str, dict[str, Any]] = {day: {} for day in days}
    for (day, dimension, value), row in zip(wanted, rows, strict=True):
        numbers = {k.decode(): float(v) for k, v in row.items()}
        result[day].setdefault(dimension, {})[value] = numbers
    return result


async def spend(redis: Redis, keys: Keys, dimension: str, value: str, days: list[str]) -> float:
    """USD spent by one group or provider over the given days."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for day in days:
            pipe.hget(keys.usage(day, dimension, value), "cost")
        values = await pipe.execute()
    return sum(float(v) for v in values if v)


async def first_warning(redis: Redis, keys: Keys, marker: str, ttl: float) -> bool:
    """True for the first caller (in any process) to warn about `marker` this period."""
    async with translate_errors():
        return bool(
            await redis.set(f"{keys.prefix}:budget:warned:{marker}", "1", nx=True, ex=int(ttl))
        )


async def recent_records(
    redis: Redis, keys: Keys, seconds: float, limit: int = 50_000
) -> tuple[list[bytes], float]:
    """The usage records of the last `seconds`, newest first, at most `limit` of them, and the
    seconds they cover: `seconds`, or less when `limit` left older ones out."""
    now = time.time()
    since = int((now - seconds) * 1000)
    async with translate_errors():
        entries: Any = await redis.xrevrange(
            keys.usage_log(), max="+", min=f"{since}-0", count=limit
        )
    records = [fields[b"r"] for _id, fields in entries if b"r" in fields]
    if len(entries) < limit:
        return records, seconds
    oldest_ms = int(entries[-1][0].split(b"-")[0])  # stream ids are timestamps
    return records, min(max(now - oldest_ms / 1000, 0.001), seconds)
