"""Lanes on a real Redis: a batch job stays in the batch lane through retries, fallbacks,
reclaiming and dead letters, and its result is stored with its acknowledgement."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from inferq.broker.connection import Redis, connect
from inferq.broker.errors import QueueFull
from inferq.broker.jobs.consumer import GroupConsumer
from inferq.broker.jobs.queue import depth, enqueue, ensure_group
from inferq.broker.jobs.results import Outcome, finished, progress
from inferq.broker.keys import CONSUMER_GROUP, Keys
from inferq.broker.messages import ErrorInfo, Job, Lane, Reply, ReplyKind
from inferq.broker.ops.registry import WorkerInfo, heartbeat


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


def batch_job(**kw: object) -> Job:
    now = time.time()
    fields: dict[str, object] = {
        "id": f"b{time.monotonic_ns()}",
        "model": "g",
        "group": "g",
        "body": {"messages": [{"role": "user", "content": "hi"}]},
        "created": now,
        "deadline": now + 60,
        "lane": Lane.BATCH,
        "submission": "s1",
        "custom_id": "c1",
        "result_ttl": 60,
    }
    fields.update(kw)
    return Job.model_validate(fields)


async def alive(redis: Redis, keys: Keys, worker: str) -> None:
    info = WorkerInfo(worker, "g", "g.0", "h", 1, 1, time.time())
    await heartbeat(redis, keys, info, 30)


async def test_lanes_are_separate_queues_with_their_own_limits(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await ensure_group(redis, keys, "g")
    await enqueue(redis, keys, batch_job(), limit=2)
    await enqueue(redis, keys, batch_job(), limit=2)
    with pytest.raises(QueueFull):
        await enqueue(redis, keys, batch_job(), limit=2)
    # The interactive lane is not full because the batch lane is.
    await enqueue(redis, keys, batch_job(lane=Lane.INTERACTIVE), limit=2)
    queue = await depth(redis, keys, "g")
    assert (queue.waiting, queue.batch_waiting) == (1, 2)
    reader = GroupConsumer(redis, keys, "g", "w1")
    taken = await reader.read(5, None, [Lane.INTERACTIVE])
    assert [d.lane for d in taken] == [Lane.INTERACTIVE]
    taken = await reader.read(5, None, [Lane.INTERACTIVE, Lane.BATCH])
    assert [d.lane for d in taken] == [Lane.BATCH, Lane.BATCH]
    queue = await depth(redis, keys, "g")
    assert (queue.running, queue.batch_running, queue.batch_waiting) == (1, 2, 0)


async def test_retry_comes_back_to_the_batch_lane(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await ensure_group(redis, keys, "g")
    await enqueue(redis, keys, batch_job())
    consumer = GroupConsumer(redis, keys, "g", "w1")
    [delivery] = await consumer.read(1, None, [Lane.BATCH])
    assert delivery.job is not None
    await consumer.retry_later(delivery, delivery.job, time.time() - 1)
    assert await consumer.promote_due() == 1
    assert await redis.xlen(keys.jobs("g")) == 0
    [again] = await consumer.read(1, None, [Lane.INTERACTIVE, Lane.BATCH])
    assert again.lane is Lane.BATCH and again.job is not None and again.job.id == delivery.job.id


async def test_fallback_moves_to_the_next_groups_batch_lane(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await ensure_group(redis, keys, "g")
    await enqueue(redis, keys, batch_job(fallbacks=["h"]))
    consumer = GroupConsumer(redis, keys, "g", "w1")
    [delivery] = await consumer.read(1, None, [Lane.BATCH])
    assert delivery.job is not None
    await consumer.move_to(delivery, delivery.job.model_copy(update={"group": "h"}))
    assert await redis.xlen(keys.batch("h")) == 1
    assert await redis.xlen(keys.jobs("h")) == 0
    assert await redis.xlen(keys.batch("g")) == 0


async def test_dead_workers_batch_jobs_are_reclaimed_in_their_lane(
    redis: Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    await ensure_group(redis, keys, "g")
    job = batch_job()
    await enqueue(redis, keys, job)
    await enqueue(redis, keys, batch_job(lane=Lane.INTERACTIVE))
    dead = GroupConsumer(redis, keys, "g", "dead")
    assert len(await dead.read(5, None, [Lane.INTERACTIVE, Lane.BATCH])) == 2
    await asyncio.sleep(1.1)  # XCLAIM's min idle time
    live = GroupConsumer(redis, keys, "g", "live")
    await alive(redis, keys, "live")
    claimed = await live.reclaim(5)
    assert sorted(d.lane for d in claimed) == [Lane.BATCH, Lane.INTERACTIVE]
    [batch] = [d for d in claimed if d.lane is Lane.BATCH]
    assert batch.times_delivered == 2
    reply = Reply(job=job.id, seq=0, kind=ReplyKind.DONE, response={"choices": []})
    await live.complete(batch, batch.job, reply)
    pending = await redis.xpending(keys.batch("g"), CONSUMER_GROUP)
    assert pending["pending"] == 0 and await redis.xlen(keys.batch("g")) == 0
    stored = Outcome.model_validate_json(await redis.get(keys.result(job.id)))
    assert stored.ok and stored.custom_id == "c1"


async def test_own_orphans_are_taken_back_per_lane(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await ensure_group(redis, keys, "g")
    await enqueue(redis, keys, batch_job())
    await enqueue(redis, keys, batch_job(lane=Lane.INTERACTIVE))
    me = GroupConsumer(redis, keys, "g", "me")
    taken = await me.read(5, None, [Lane.INTERACTIVE, Lane.BATCH])
    # The two lanes may hold the same entry id: "still serving" names lane and id.
    serving = {d.key for d in taken if d.lane is Lane.INTERACTIVE}
    orphans = await me.reclaim_own(5, serving)
    assert [d.lane for d in orphans] == [Lane.BATCH]


async def test_dead_letter_of_a_batch_job_leaves_an_error_result(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await ensure_group(redis, keys, "g")
    job = batch_job()
    await enqueue(redis, keys, job)
    consumer = GroupConsumer(redis, keys, "g", "w1")
    [delivery] = await consumer.read(1, None, [Lane.BATCH])
    error = ErrorInfo(status=502, type="api_error", code="max_deliveries", message="gave up")
    reply = Reply(job=job.id, seq=0, kind=ReplyKind.ERROR, error=error)
    await consumer.dead_letter(delivery, "max_deliveries", reply)
    [(_id, fields)] = await redis.xrange(keys.dead("g"))
    assert fields[b"lane"] == b"batch"
    [entry] = await finished(redis, keys, "s1", "0-0", count=10, block_ms=None)
    assert (entry.job, entry.custom_id, entry.ok) == (job.id, "c1", False)
    stored = Outcome.model_validate_json(await redis.get(keys.result(job.id)))
    assert stored.status == 502
    assert (await progress(redis, keys, "s1")).failed == 1
    assert await redis.xlen(keys.batch("g")) == 0
