"""Automatic pipelining (broker/multiplex.py) against a real Redis: many callers, few
connections, every caller its own reply or error."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ResponseError

from inferq.broker.connection import Redis, connect
from inferq.cli.local import EmbeddedRedis


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url, max_connections=64)
    yield client
    await client.aclose()


async def test_a_thousand_concurrent_commands_share_a_few_connections(
    redis: Redis, prefix: str
) -> None:
    keys = [f"{prefix}:k{i}" for i in range(1000)]
    await asyncio.gather(*(redis.set(k, i) for i, k in enumerate(keys)))
    values = await asyncio.gather(*(redis.get(k) for k in keys))
    assert values == [str(i).encode() for i in range(1000)]
    in_use = redis.connection_pool._in_use_connections  # type: ignore[attr-defined]
    created = len(in_use) + len(redis.connection_pool._available_connections)  # type: ignore[attr-defined]
    assert created <= 4  # one per lane


async def test_each_caller_gets_its_own_error(redis: Redis, prefix: str) -> None:
    await redis.set(f"{prefix}:text", "x")

    async def wrong() -> object:
        return await redis.lpush(f"{prefix}:text", "y")  # WRONGTYPE

    results = await asyncio.gather(
        redis.incr(f"{prefix}:n"), wrong(), redis.incr(f"{prefix}:n"), return_exceptions=True
    )
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])


async def test_transactions_in_one_batch_stay_whole_and_parse_their_replies(
    redis: Redis, prefix: str
) -> None:
    async def transaction(i: int) -> list[object]:
        pipe = redis.pipeline(transaction=True)
        pipe.incr(f"{prefix}:t")
        pipe.hset(f"{prefix}:h{i}", mapping={"a": i})
        pipe.hgetall(f"{prefix}:h{i}")
        return await pipe.execute()

    results = await asyncio.gather(*(transaction(i) for i in range(50)))
    counts = sorted(r[0] for r in results)
    assert counts == list(range(1, 51))  # each INCR ran once, atomically with its HSET
    assert all(r[2] == {b"a": str(i).encode()} for i, r in enumerate(results))


async def test_a_failing_transaction_raises_for_its_caller_only(redis: Redis, prefix: str) -> None:
    await redis.set(f"{prefix}:text", "x")
    bad = redis.pipeline(transaction=True)
    bad.incr(f"{prefix}:ok")
    bad.lpush(f"{prefix}:text", "y")
    good = redis.pipeline(transaction=True)
    good.incr(f"{prefix}:other")
    outcomes = await asyncio.gather(bad.execute(), good.execute(), return_exceptions=True)
    assert isinstance(outcomes[0], ResponseError)
    assert outcomes[1] == [1]


async def test_a_blocking_read_does_not_hold_up_other_commands(redis: Redis, prefix: str) -> None:
    stream = f"{prefix}:s"
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    reader = asyncio.create_task(redis.xreadgroup("g", "c", {stream: ">"}, count=1, block=2000))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(0.5):  # far less than the read's 2 s block
        for i in range(20):
            await redis.set(f"{prefix}:k", i)
    await redis.xadd(stream, {"f": "v"})
    got = await asyncio.wait_for(reader, 2)
    assert got and got[0][1][0][1] == {b"f": b"v"}


async def test_a_restarted_redis_costs_no_command() -> None:
    server = EmbeddedRedis().start()
    client = connect(server.url)
    try:
        assert await client.set("k", 1)
        port = server.port
        server.stop()
        server = EmbeddedRedis(port=port).start()
        # The lane's connection died with the old server: the batch is sent again, once.
        assert await client.set("k", 2)
        assert await client.get("k") == b"2"
    finally:
        await client.aclose()
        server.stop()
