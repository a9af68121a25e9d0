"""Usage in Redis: the request log keeps a bounded number of records, whatever the traffic."""

from collections.abc import AsyncIterator

import pytest

from inferq.broker.connection import Redis, connect
from inferq.broker.keys import Keys
from inferq.broker.ops.usage import flush, recent_records


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


async def test_the_log_keeps_about_its_length_of_the_latest_records(
    redis: Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    totals = {("2026-12-02", "group", "busy"): {"requests": 1.0}}
    for second in range(6):  # six flushes of 500 records into a log of 1,000
        records = [b'{"n": %d}' % (second * 500 + i) for i in range(500)]
        await flush(redis, keys, totals, records, log_length=1_000)
    # Trimming is approximate (whole stream nodes of 100 entries), never below the length.
    assert 1_000 <= await redis.xlen(keys.usage_log()) < 1_200
    latest, _ = await recent_records(redis, keys, 60.0)
    assert latest[0] == b'{"n": 2999}'
    assert await redis.hget(keys.usage("2026-12-02", "group", "busy"), "requests") == b"6"
