"""The reply path: one subscription routes many jobs; a gap is an error, never silence.

On a cluster the reply channel is a sharded one (SSUBSCRIBE/SPUBLISH)."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from inferq.broker.channels import publish_reply
from inferq.broker.connection import Redis, connect
from inferq.broker.errors import ReplyLost
from inferq.broker.jobs.replies import ReplyDispatcher
from inferq.broker.keys import Keys
from inferq.broker.messages import Reply, ReplyKind

pytestmark = pytest.mark.topologies("single", "cluster")


@pytest.fixture
async def wired(redis_url: str, prefix: str) -> AsyncIterator[tuple[Redis, ReplyDispatcher]]:
    redis = connect(redis_url)
    listener = connect(redis_url, blocking_reads=True)
    dispatcher = ReplyDispatcher(listener, Keys(prefix).reply("api1"))
    await dispatcher.start()
    assert dispatcher.ready
    yield redis, dispatcher
    await dispatcher.stop()
    await listener.aclose()
    await redis.aclose()


async def publish(redis: Redis, channel: str, job: str, seq: int, kind: ReplyKind) -> None:
    await publish_reply(redis, channel, Reply(job=job, seq=seq, kind=kind).encode())


async def test_messages_reach_their_own_job(wired: tuple[Redis, ReplyDispatcher]) -> None:
    redis, dispatcher = wired
    a, b = dispatcher.open("a"), dispatcher.open("b")
    await publish(redis, dispatcher.channel, "b", 0, ReplyKind.DELTA)
    await publish(redis, dispatcher.channel, "a", 0, ReplyKind.DONE)
    await publish(redis, dispatcher.channel, "b", 1, ReplyKind.DONE)
    assert (await asyncio.wait_for(a.next(), 2)).kind is ReplyKind.DONE
    assert [(await asyncio.wait_for(b.next(), 2)).seq for _ in range(2)] == [0, 1]
    assert dispatcher.in_flight == 2
    dispatcher.close("a")
    assert dispatcher.in_flight == 1


async def test_a_gap_raises_reply_lost(wired: tuple[Redis, ReplyDispatcher]) -> None:
    redis, dispatcher = wired
    stream = dispatcher.open("g")
    await publish(redis, dispatcher.channel, "g", 0, ReplyKind.DELTA)
    await publish(redis, dispatcher.channel, "g", 2, ReplyKind.DONE)
    assert (await asyncio.wait_for(stream.next(), 2)).seq == 0
    with pytest.raises(ReplyLost, match="reply message 1 never arrived"):
        await asyncio.wait_for(stream.next(), 2)


async def test_malformed_messages_are_dropped(wired: tuple[Redis, ReplyDispatcher]) -> None:
    redis, dispatcher = wired
    stream = dispatcher.open("m")
    await publish_reply(redis, dispatcher.channel, b"garbage")
    await publish(redis, dispatcher.channel, "m", 0, ReplyKind.DONE)
    assert (await asyncio.wait_for(stream.next(), 2)).kind is ReplyKind.DONE
