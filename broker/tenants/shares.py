"""A fair share of each model group between keys: how many jobs a key may have queued or
running on a group (`fair_cap`), and each process's view of the keys sharing each group, written
once a second for `inferq status`, the dashboard, and the other processes.

API processes write `{group: {key id: [in flight, waiting]}}` under their name; batch
submitters write `{group: {key id: [in flight, 0]}}` (their jobs in the batch lane) under a name
starting with `batch:`. An API process learns from the others' views on how many processes a
key's interactive work is spread, and divides the key's share between them (`spread`).
"""

import math
import time
from typing import Any

import orjson

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys

STALE_AFTER = 5.0  # seconds: a process that stopped writing is gone
BATCH_VIEW = "batch:"  # prefix of a batch submitter's view

# Queued jobs a key may have beyond the group's slots, as a share of them: enough that a slot
# freed by one of its jobs finds the next waiting in the stream, so the backend never idles
# between them (measured: 0.5 left a 4-slot backend 82-96 % busy, 1.0 kept it 96 % busy while
# another key waited 2.4x its idle latency, bench/fairness.py).
EXTRA_SHARE = 1.0

View = dict[str, dict[str, list[int]]]  # group → key id → [in flight, waiting]


def fair_cap(slots: int, weight: int = 1, spread: int = 1) -> int:
    """Jobs a key of `weight` may have queued or running on a group of `slots` slots, in one of
    the `spread` processes that carry its work there."""
    slots = max(slots, 1)
    whole = (slots + max(1, math.ceil(slots * EXTRA_SHARE))) * max(weight, 1)
    return max(1, math.ceil(whole / max(spread, 1)))


async def write_shares(redis: Redis, keys: Keys, process: str, groups: View) -> None:
    """Record `groups` ({group: {key id: [in flight, waiting]}}) as this process's view."""
    async with translate_errors():
        if groups:
            data = orjson.dumps({"at": time.time(), "groups": groups})
            await redis.hset(keys.shares(), process, data)
        else:
            await redis.hdel(keys.shares(), process)


async def read_views(redis: Redis, keys: Keys) -> dict[str, View]:
    """The view of every live process, by process name."""
    async with translate_errors():
        raw: Any = await redis.hgetall(keys.shares())
    now = time.time()
    views: dict[str, View] = {}
    for name, value in raw.items():
        view = orjson.loads(value)
        if now - float(view.get("at", 0)) <= STALE_AFTER:
            views[name.decode()] = view.get("groups", {})
    return views


def spread(views: dict[str, View], process: str) -> dict[tuple[str, str], int]:
    """On how many API processes each (group, key id) has interactive work, counting `process`
    itself once for every pair any process has."""
    count: dict[tuple[str, str], int] = {}
    for name, view in views.items():
        if name == process or name.startswith(BATCH_VIEW):
            continue
        for group, per_key in view.items():
            for key_id, (flight, waiting) in per_key.items():
                if flight or waiting:
                    count[(group, key_id)] = count.get((group, key_id), 1) + 1
    return count


def summed(views: dict[str, View]) -> dict[str, dict[str, list[int]]]:
    """Every process's view added up: {group: {key id: [in flight, waiting, batch]}}, where
    `batch` counts the key's batch jobs queued or running."""
    total: dict[str, dict[str, list[int]]] = {}
    for name, view in views.items():
        batch = name.startswith(BATCH_VIEW)
        for group, per_key in view.items():
            into = total.setdefault(group, {})
            for key_id, (flight, waiting) in per_key.items():
                have = into.setdefault(key_id, [0, 0, 0])
                if batch:
                    have[2] += int(flight) + int(waiting)
                else:
                    have[0] += int(flight)
                    have[1] += int(waiting)
    return total


async def read_shares(redis: Redis, keys: Keys) -> dict[str, dict[str, list[int]]]:
    """The views of every live process, summed: {group: {key id: [in flight, waiting,
    batch]}}."""
    return summed(await read_views(redis, keys))
