"""`inferq_settings.replica_acks`: a job counts as accepted, and as ended, only once a replica
has it, so a failover right after cannot lose it (Redis replicates asynchronously).

The replica is SIGSTOPped to hold replication at a chosen moment: the enqueue (or the end)
must then wait for it, and give up after its timeout rather than hang.
"""

import asyncio
import logging
import os
import signal
import statistics
import time
from collections.abc import Iterator

import pytest
import redis as sync_redis

from inferq.broker.connection import Redis, connect
from inferq.broker.jobs.consumer import GroupConsumer
from inferq.broker.jobs.queue import enqueue, ensure_group
from inferq.broker.keys import CONSUMER_GROUP, Keys
from inferq.broker.messages import Job, Reply, ReplyKind
from inferq.broker.replicas import NO_ACKS, ReplicaAcks
from tests.support.topology import SentinelSet

ONE = ReplicaAcks(replicas=1, timeout_ms=4000)


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    servers = SentinelSet().start()
    yield servers
    servers.stop()


def a_job(i: int) -> Job:
    now = time.time()
    body = {"messages": [{"role": "user", "content": f"q{i}"}]}
    return Job(id=f"job{i}", model="g", group="g", body=body, created=now, deadline=now + 60)


class Paused:
    """The replica SIGSTOPped (replication held) until the block ends."""

    def __init__(self, servers: SentinelSet) -> None:
        self._pid = servers.procs["replica"].pid

    def __enter__(self) -> None:
        os.kill(self._pid, signal.SIGSTOP)

    def __exit__(self, *_: object) -> None:
        os.kill(self._pid, signal.SIGCONT)


async def fabric(servers: SentinelSet, prefix: str) -> tuple[Redis, Keys, sync_redis.Redis]:
    redis, keys = connect(servers.url), Keys(prefix)
    await ensure_group(redis, keys, "g")
    return redis, keys, sync_redis.Redis(port=servers.replica_port)


async def test_enqueue_returns_only_once_the_replica_has_the_job(
    sentinels: SentinelSet, prefix: str
) -> None:
    redis, keys, replica = await fabric(sentinels, prefix)
    try:
        with Paused(sentinels):
            task = asyncio.create_task(enqueue(redis, keys, a_job(0), acks=ONE))
            await asyncio.sleep(0.5)
            assert not task.done()  # the primary has it, the held replica not yet
        await asyncio.wait_for(task, 5)
        assert replica.xlen(keys.jobs("g")) == 1  # on the replica the moment it is accepted
    finally:
        replica.close()
        await redis.aclose()


async def test_a_job_ends_only_once_the_replica_has_its_end(
    sentinels: SentinelSet, prefix: str
) -> None:
    redis, keys, replica = await fabric(sentinels, prefix)
    try:
        await enqueue(redis, keys, a_job(1))
        consumer = GroupConsumer(redis, keys, "g", "w1", acks=ONE)
        [delivery] = await consumer.read(1, None)
        assert delivery.job is not None
        done = Reply(job=delivery.job.id, seq=0, kind=ReplyKind.DONE)
        with Paused(sentinels):
            task = asyncio.create_task(consumer.complete(delivery, delivery.job, done))
            await asyncio.sleep(0.5)
            assert not task.done()
        await asyncio.wait_for(task, 5)
        # Acknowledged and deleted on the replica too: a failover now would not serve it again.
        assert replica.xlen(keys.jobs("g")) == 0
        assert replica.xpending(keys.jobs("g"), CONSUMER_GROUP)["pending"] == 0
    finally:
        replica.close()
        await redis.aclose()


async def test_a_replica_that_does_not_answer_costs_the_timeout_not_the_request(
    sentinels: SentinelSet, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis, keys, replica = await fabric(sentinels, prefix)
    try:
        with Paused(sentinels), caplog.at_level(logging.WARNING, "inferq.broker"):
            started = time.monotonic()
            await enqueue(redis, keys, a_job(2), acks=ReplicaAcks(1, 300))
            waited = time.monotonic() - started
        assert 0.3 <= waited < 2.0
        assert await redis.xlen(keys.jobs("g")) == 1  # accepted all the same
        assert "only 0 of 1 replicas acknowledged a write within 300 ms" in caplog.text
    finally:
        replica.close()
        await redis.aclose()


async def test_what_waiting_for_a_replica_costs(sentinels: SentinelSet, prefix: str) -> None:
    """Enqueue and end 200 jobs one at a time, with and without replica_acks: 1."""
    redis, keys, replica = await fabric(sentinels, prefix)
    figures = {}
    try:
        for acks in (NO_ACKS, ONE):
            consumer = GroupConsumer(redis, keys, "g", f"w{acks.replicas}", acks=acks)
            enqueues, ends = [], []
            for i in range(200):
                started = time.perf_counter()
                await enqueue(redis, keys, a_job(i), acks=acks)
                enqueues.append(time.perf_counter() - started)
                [delivery] = await consumer.read(1, None)
                assert delivery.job is not None
                done = Reply(job=delivery.job.id, seq=0, kind=ReplyKind.DONE)
                started = time.perf_counter()
                await consumer.complete(delivery, delivery.job, done)
                ends.append(time.perf_counter() - started)
            figures[acks.replicas] = (statistics.median(enqueues), statistics.median(ends))
    finally:
        replica.close()
        await redis.aclose()
    (enq0, end0), (enq1, end1) = figures[0], figures[1]
    print(
        f"\nreplica_acks 0: enqueue p50 {enq0 * 1000:.2f} ms, end p50 {end0 * 1000:.2f} ms; "
        f"replica_acks 1: enqueue p50 {enq1 * 1000:.2f} ms, end p50 {end1 * 1000:.2f} ms"
    )
    assert enq1 >= enq0 and end1 >= end0  # waiting costs something, and is measured
    assert enq1 < 0.1 and end1 < 0.1  # but a healthy replica answers well within the timeout
