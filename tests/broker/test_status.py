"""The fabric's status from Redis: rates and latency from the last minute's usage records."""

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from inferq.broker.connection import Redis, connect
from inferq.broker.jobs.consumer import GroupConsumer
from inferq.broker.jobs.queue import enqueue, ensure_group
from inferq.broker.keys import Keys
from inferq.broker.messages import Job
from inferq.broker.ops.status import read_status

GROUPS = {"busy": ["busy.0"], "quiet": ["quiet.0"]}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


async def record_minute(redis: Redis, keys: Keys) -> None:
    """120 requests to `busy` over the last minute, one every half second, every tenth a cache
    hit, latencies 1..120 ms."""
    now_ms = int(time.time() * 1000)
    for i in range(120):
        at = now_ms - 59_750 + i * 500
        record = {"group": "busy", "latency_ms": float(i + 1), "cache_hit": i % 10 == 0}
        await redis.xadd(keys.usage_log(), {b"r": orjson.dumps(record)}, id=f"{at}-0")


async def test_rates_count_the_last_minute(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await record_minute(redis, keys)
    status = await read_status(redis, keys, GROUPS)
    assert not status.sampled
    busy, quiet = status.groups["busy"], status.groups["quiet"]
    assert (busy.requests_per_min, busy.cache_hits_per_min, busy.p50_ms) == (120, 12, 60.5)
    assert (quiet.requests_per_min, quiet.p50_ms, quiet.workers) == (0, None, 0)
    assert status.requests_per_min == 120
    assert status.as_dict({"quiet": "no key"})["groups"]["quiet"]["unavailable"] == "no key"


async def test_a_busy_minute_is_estimated_from_its_latest_requests(
    redis: Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    await record_minute(redis, keys)
    status = await read_status(redis, keys, GROUPS, limit=30)
    assert status.sampled
    assert 110 <= status.requests_per_min <= 130  # the 30 latest cover about 15 s
    assert status.groups["busy"].p50_ms == 105.5  # the latest 30: latencies 91..120


async def test_lag_is_how_long_the_oldest_waiting_job_has_waited(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    assert (await read_status(redis, keys, GROUPS)).groups["quiet"].lag_s is None
    now = time.time()
    for n in range(2):
        job = Job(id=f"j{n}", model="quiet", group="quiet", body={}, created=now,
                  deadline=now + 60)  # fmt: skip
        await enqueue(redis, keys, job)
        await asyncio.sleep(0.3)
    lag = (await read_status(redis, keys, GROUPS)).groups["quiet"].lag_s
    assert lag is not None and 0.55 <= lag < 5  # the first job's wait, not the second's
    await ensure_group(redis, keys, "quiet")
    taken = await GroupConsumer(redis, keys, "quiet", "w").read(1, None)  # a worker takes one
    assert [d.job.id for d in taken if d.job] == ["j0"]
    lag = (await read_status(redis, keys, GROUPS)).groups["quiet"].lag_s
    assert lag is not None and 0.25 <= lag < 0.55  # now the second one's
