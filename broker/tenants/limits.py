"""Per-key limits shared by every API process: requests and tokens per minute, requests in
flight, and spend per budget period.

Failed authentications per client address are counted here too, on the failure path only.

Only keys that have a limit pay for this: admission is one script call (one round trip) for
them, and nothing for a key without limits. Spend is added in batches (once a second by each
API process, and by workers for batch jobs) and read in the background, never per request.
"""

import math
from collections.abc import Mapping
from typing import Any

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys
from inferq.broker.scripts import LuaScript
from inferq.broker.tenants.vkeys import KeyRecord

# KEYS: the minute's window hash, the running set. ARGV: now, rpm, tpm, parallel (-1: none),
# job id, job deadline. Returns "ok", or the name of the limit that refused.
_ADMIT = LuaScript("""
local now = tonumber(ARGV[1])
local parallel = tonumber(ARGV[4])
if parallel >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= parallel then return 'max_parallel_requests' end
end
local rpm = tonumber(ARGV[2])
if rpm >= 0 and tonumber(redis.call('HGET', KEYS[1], 'requests') or '0') >= rpm then
  return 'rpm_limit'
end
local tpm = tonumber(ARGV[3])
if tpm >= 0 and tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0') >= tpm then
  return 'tpm_limit'
end
redis.call('HINCRBY', KEYS[1], 'requests', 1)
redis.call('EXPIRE', KEYS[1], 120)
if parallel >= 0 then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
  redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[6]) - now) + 60)
end
return 'ok'
""")


def _limit(value: int | None) -> int:
    return -1 if value is None else value


async def admit(
    redis: Redis,
    keys: Keys,
    key_id: str,
    *,
    now: float,
    job_id: str,
    deadline: float,
    rpm: int | None,
    tpm: int | None,
    parallel: int | None,
) -> str | None:
    """Count a request against a key's limits; None when admitted, else the limit's name."""
    minute = int(now // 60)
    async with translate_errors():
        answer: Any = await _ADMIT(
            redis,
            [keys.key_window(key_id, minute), keys.key_running(key_id)],
            [now, _limit(rpm), _limit(tpm), _limit(parallel), job_id, math.ceil(deadline)],
        )
    text = answer.decode() if isinstance(answer, bytes) else str(answer)
    return None if text == "ok" else text


async def release(redis: Redis, keys: Keys, finished: list[tuple[str, str, int, float]]) -> None:
    """For each `(key id, job id, tokens, now)`: the request is no longer in flight, and its
    tokens count in the minute it ended. One round trip for all of them."""
    if not finished:
        return
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for key_id, job_id, tokens, now in finished:
            pipe.zrem(keys.key_running(key_id), job_id)
            if tokens:
                window = keys.key_window(key_id, int(now // 60))
                pipe.hincrby(window, "tokens", tokens)
                pipe.expire(window, 120)
        await pipe.execute()


async def add_spend(redis: Redis, keys: Keys, spent: Mapping[tuple[str, str], float]) -> None:
    """Add USD to `(key id, period)` counters, in one round trip."""
    if not spent:
        return
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for (key_id, period), amount in spent.items():
            pipe.incrbyfloat(keys.key_spend(key_id, period), amount)
            pipe.expire(keys.key_spend(key_id, period), 400 * 86400)  # as usage totals
        await pipe.execute()


async def read_spend(
    redis: Redis, keys: Keys, wanted: list[tuple[str, str]]
) -> dict[tuple[str, str], float]:
    """USD spent for each `(key id, period)`."""
    if not wanted:
        return {}
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)  # GETs, not MGET: a cluster splits these
        for key_id, period in wanted:
            pipe.get(keys.key_spend(key_id, period))
        raws: Any = await pipe.execute()
    return {w: float(r or 0) for w, r in zip(wanted, raws, strict=True)}


async def over_budget(
    redis: Redis, keys: Keys, record: KeyRecord, now: float
) -> tuple[float, float | None] | None:
    """`(spent, resets)` when the key has spent its budget for the period at `now` (resets:
    when the period ends, None: never), else None."""
    if record.max_budget is None:
        return None
    period, resets = record.period(now)
    spent = (await read_spend(redis, keys, [(record.key_id, period)]))[(record.key_id, period)]
    return (spent, resets) if spent >= record.max_budget else None


def budget_message(record: KeyRecord, spent: float, resets: float | None, *, now: float) -> str:
    """What a client is told when the key's budget is spent (no key, no hash in it)."""
    when = f"; it resets in {math.ceil(resets - now)} s" if resets else ""
    return f"This key has spent ${spent:.6f} of its ${record.max_budget:g} budget{when}."


async def count_auth_failure(redis: Redis, keys: Keys, address: str, window: float) -> int:
    """Count one failed authentication from `address`, shared by every API process, in a
    window of `window` seconds from its first failure; returns the count so far (one round
    trip, paid only by failures)."""
    name = keys.auth_failures(address)
    async with translate_errors():
        pipe = redis.pipeline(transaction=True)
        pipe.incr(name)
        pipe.expire(name, math.ceil(window), nx=True)
        count, _ = await pipe.execute()
    return int(count)
