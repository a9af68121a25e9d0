"""Each API process's view of the keys sharing each group (jobs in flight, requests waiting),
written once a second for `inferq status` and the dashboard."""

import time
from typing import Any

import orjson

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys

STALE_AFTER = 5.0  # seconds: a process that stopped writing is gone


async def write_shares(
    redis: Redis, keys: Keys, process: str, groups: dict[str, dict[str, list[int]]]
) -> None:
    """Record `groups` ({group: {key id: [in flight, waiting]}}) as this process's view."""
    async with translate_errors():
        if groups:
            data = orjson.dumps({"at": time.time(), "groups": groups})
            await redis.hset(keys.shares(), process, data)
        else:
            await redis.hdel(keys.shares(), process)


async def read_shares(redis: Redis, keys: Keys) -> dict[str, dict[str, list[int]]]:
    """The views of every live API process, summed: {group: {key id: [in flight, waiting]}}."""
    async with translate_errors():
        raw: Any = await redis.hgetall(keys.shares())
    total: dict[str, dict[str, list[int]]] = {}
    now = time.time()
    for value in raw.values():
        view = orjson.loads(value)
        if now - float(view.get("at", 0)) > STALE_AFTER:
            continue
        for group, per_key in view.get("groups", {}).items():
            into = total.setdefault(group, {})
            for key_id, (flight, waiting) in per_key.items():
                have = into.setdefault(key_id, [0, 0])
                have[0] += int(flight)
                have[1] += int(waiting)
    return total
