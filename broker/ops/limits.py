"""Shared per-deployment limits: cooldown after repeated failures, rpm/tpm pacing.

State lives in Redis so every worker process of a deployment, on any host, sees the same.
"""

import time
from collections.abc import Iterable

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys
from inferq.broker.scripts import LuaScript

# Count a failure in the current minute; past `allowed` failures, start a cooldown.
_FAIL = LuaScript("""
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end
if n > tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
""")

# Grant up to ARGV[1] requests in this minute's window, within rpm ARGV[2] and tpm ARGV[3]
# (0 = unlimited). Returns the number granted.
_GRANT = LuaScript("""
local used = tonumber(redis.call('HGET', KEYS[1], 'requests') or '0')
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
local want = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
if tpm > 0 and tokens >= tpm then return 0 end
if rpm > 0 then want = math.min(want, rpm - used) end
if want <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'requests', want)
redis.call('EXPIRE', KEYS[1], 120)
return want
""")


def _window(now: float) -> tuple[int, float]:
    minute = int(now // 60)
    return minute, (minute + 1) * 60 - now


class DeploymentLimits:
    """Cooldown and rpm/tpm state of one deployment."""

    def __init__(self, redis: Redis, keys: Keys, group: str, deployment: str) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._deployment = deployment

    async def record_failure(self, allowed: int, cooldown: float) -> bool:
        """Count a failure; True when it put the deployment into cooldown."""
        if cooldown <= 0:
            return False
        keys = [
            self._keys.failures(self._group, self._deployment),
            self._keys.cooldown(self._group, self._deployment),
        ]
        async with translate_errors():
            started = await _FAIL(self._redis, keys, [allowed, int(cooldown * 1000)])
        return bool(started)

    async def cooldown_left(self) -> float:
        """Seconds of cooldown left (0 when the deployment may serve)."""
        async with translate_errors():
            ms = await self._redis.pttl(self._keys.cooldown(self._group, self._deployment))
        return max(ms, 0) / 1000

    def _window_key(self) -> tuple[str, float]:
        minute, left = _window(time.time())
        return self._keys.usage_window(self._group, self._deployment, minute), left

    async def grant(self, want: int, rpm: int | None, tpm: int | None) -> tuple[int, float]:
        """How many jobs may start now under rpm/tpm, and (when none) how long until the next
        one-minute window."""
        key, left = self._window_key()
        async with translate_errors():
            granted = await _GRANT(self._redis, [key], [want, rpm or 0, tpm or 0])
        return int(granted), (0.0 if granted else left)

    async def give_back(self, unused: int) -> None:
        """Return granted requests that found no job (negative: charge jobs taken beyond the
        grant, as a read of both lanes may bring)."""
        if unused:
            key, _ = self._window_key()
            async with translate_errors():
                await self._redis.hincrby(key, "requests", -unused)

    async def add_tokens(self, tokens: int) -> None:
        """Charge a finished job's tokens to this minute's window (tpm)."""
        if tokens > 0:
            key, _ = self._window_key()
            async with translate_errors():
                pipe = self._redis.pipeline(transaction=False)
                pipe.hincrby(key, "tokens", tokens)
                pipe.expire(key, 120)
                await pipe.execute()


async def cooldowns(
    redis: Redis, keys: Keys, deployments: Iterable[tuple[str, str]]
) -> dict[str, float]:
    """Seconds of cooldown left for each `(group, deployment)`, by deployment, in one round
    trip (0 for those that may serve)."""
    pairs = list(deployments)
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for group, deployment in pairs:
            pipe.pttl(keys.cooldown(group, deployment))
        values = await pipe.execute()
    return {dep: max(ms, 0) / 1000 for (_group, dep), ms in zip(pairs, values, strict=True)}
