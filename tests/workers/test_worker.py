"""A worker on a real Redis and a fake backend: served, acked, dead-lettered, expired."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis as sync_redis

from inferq.broker.connection import Redis, connect
from inferq.broker.jobs.queue import QueueDepth, depth, enqueue, ensure_group
from inferq.broker.jobs.replies import ReplyDispatcher
from inferq.broker.keys import CONSUMER_GROUP, Keys
from inferq.broker.messages import Job, ReplyKind
from inferq.config import parse_config
from inferq.workers.providers import provider_for
from inferq.workers.transport import BackendHTTP
from inferq.workers.worker import DeploymentWorker
from tests.support.fake_backend import FakeBackend

CONFIG = """
model_list:
  - model_name: g
    litellm_params:
      model: openai/up
      api_base: {api_base}
      max_parallel_requests: 2
inferq_settings:
  key_prefix: {prefix}
"""


class Harness:
    def __init__(self, redis: Redis, keys: Keys, dispatcher: ReplyDispatcher) -> None:
        self.redis, self.keys, self.dispatcher = redis, keys, dispatcher

    def job(self, **kw: object) -> Job:
        now = time.time()
        fields: dict[str, object] = {
            "id": f"j{time.monotonic_ns()}",
            "model": "g",
            "group": "g",
            "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            "reply_to": self.dispatcher.channel,
            "created": now,
            "deadline": now + 10,
        }
        fields.update(kw)
        return Job.model_validate(fields)


@pytest.fixture
async def harness(redis_url: str, prefix: str, backend: FakeBackend) -> AsyncIterator[Harness]:
    config = parse_config(CONFIG.format(api_base=backend.api_base, prefix=prefix), env={})
    keys = Keys(prefix)
    redis = connect(redis_url, blocking_reads=True)
    listener = connect(redis_url, blocking_reads=True)
    dispatcher = ReplyDispatcher(listener, keys.reply("test"))
    await dispatcher.start()
    await ensure_group(redis, keys, "g")
    stop = asyncio.Event()
    async with BackendHTTP() as http:
        dep = config.groups["g"][0]
        worker = DeploymentWorker(dep, config, redis, provider_for(dep, http), block_ms=100)
        task = asyncio.create_task(worker.run(stop))
        yield Harness(redis, keys, dispatcher)
        stop.set()
        await task
    await dispatcher.stop()
    await listener.aclose()
    await redis.aclose()


async def test_job_is_served_then_acknowledged_and_removed(harness: Harness) -> None:
    job = harness.job()
    replies = harness.dispatcher.open(job.id)
    await enqueue(harness.redis, harness.keys, job)
    reply = await asyncio.wait_for(replies.next(), 5)
    assert reply.kind is ReplyKind.DONE
    assert reply.response is not None
    assert reply.response["choices"][0]["message"]["content"] == "w0 w1 w2 "
    assert reply.deployment == "g.0"
    await asyncio.sleep(0.05)  # XACK follows the PUBLISH in the same pipeline
    assert await depth(harness.redis, harness.keys, "g") == QueueDepth(waiting=0, running=0)


async def test_poison_entry_is_dead_lettered_and_worker_goes_on(
    harness: Harness, redis_url: str, backend: FakeBackend
) -> None:
    client = sync_redis.Redis.from_url(redis_url)
    client.xadd(harness.keys.jobs("g"), {"job": b"{not json"})
    client.xadd(harness.keys.jobs("g"), {"other": b"x"})
    job = harness.job()
    replies = harness.dispatcher.open(job.id)
    await enqueue(harness.redis, harness.keys, job)
    assert (await asyncio.wait_for(replies.next(), 5)).kind is ReplyKind.DONE
    dead = client.xrange(harness.keys.dead("g"))
    reasons = sorted(fields[b"reason"].decode() for _id, fields in dead)
    assert len(reasons) == 2
    assert reasons[0].startswith("entry has no 'job' field")
    assert reasons[1].startswith("invalid job")
    assert client.xpending(harness.keys.jobs("g"), CONSUMER_GROUP)["pending"] == 0
    assert len(backend.requests) == 1
    client.close()


async def test_expired_job_is_answered_504_without_calling_the_backend(
    harness: Harness, backend: FakeBackend
) -> None:
    job = harness.job(deadline=time.time() - 1)
    replies = harness.dispatcher.open(job.id)
    await enqueue(harness.redis, harness.keys, job)
    reply = await asyncio.wait_for(replies.next(), 5)
    assert reply.kind is ReplyKind.ERROR
    assert reply.error is not None and reply.error.status == 504
    assert backend.requests == []


async def test_stream_replies_are_numbered_and_end_with_usage(harness: Harness) -> None:
    job = harness.job(stream=True)
    replies = harness.dispatcher.open(job.id)
    await enqueue(harness.redis, harness.keys, job)
    seen = []
    while True:
        reply = await asyncio.wait_for(replies.next(), 5)
        seen.append(reply)
        if reply.terminal:
            break
    assert [r.seq for r in seen] == list(range(len(seen)))
    assert seen[-1].kind is ReplyKind.DONE
    assert seen[-1].usage == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    text = "".join((c[0]["delta"].get("content") or "") for r in seen[:-1] for c in r.chunks or [])
    assert text == "w0 w1 w2 "


async def test_slots_bound_concurrent_backend_calls(harness: Harness, backend: FakeBackend) -> None:
    backend.behaviour.first_token_delay = 0.2
    jobs = [harness.job(id=f"slot{i}") for i in range(6)]
    streams = [harness.dispatcher.open(j.id) for j in jobs]
    for j in jobs:
        await enqueue(harness.redis, harness.keys, j)
    results = await asyncio.wait_for(asyncio.gather(*(s.next() for s in streams)), 10)
    assert all(r.kind is ReplyKind.DONE for r in results)
    assert backend.max_active == 2  # max_parallel_requests
