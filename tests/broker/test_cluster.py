"""Redis Cluster: the URL, keys that must change together in one slot, and the steps that
replace a MULTI across slots, interrupted where a crash could stop them."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from inferq.broker.channels import publish_reply
from inferq.broker.connection import ClusterURL, Redis, connect, is_cluster
from inferq.broker.jobs.consumer import _APPEND_ONCE, GroupConsumer
from inferq.broker.jobs.queue import enqueue, ensure_group
from inferq.broker.jobs.replies import ReplyDispatcher
from inferq.broker.jobs.results import _record_once, outcome_of, progress, records, store_apart
from inferq.broker.keys import CONSUMER_GROUP, JOB_FIELD, Keys, beside
from inferq.broker.messages import Attempt, Job, Lane, Reply, ReplyKind
from inferq.broker.ops.control import broadcast_reload
from inferq.broker.ops.usage import read_days
from inferq.broker.subscriber import Subscriber
from inferq.broker.tenants.limits import read_spend
from tests.support.topology import ClusterSet


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_a_cluster_url_names_its_nodes() -> None:
    assert ClusterURL.parse("redis://127.0.0.1:6379/0") is None
    assert ClusterURL.parse("redis+sentinel://h:1/svc") is None
    parsed = ClusterURL.parse("rediss+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001/0")
    assert parsed == ClusterURL((("10.0.0.1", 7000), ("10.0.0.2", 7001)), "u", "p@ss", True)
    assert "p@ss" not in repr(parsed)
    for bad in ("redis+cluster://", "redis+cluster://h:1/3", "redis+cluster://h"):
        with pytest.raises(ValueError):
            ClusterURL.parse(bad)


def test_keys_that_change_together_share_a_slot() -> None:
    keys = Keys("inferq")
    group = [keys.jobs("g"), keys.batch("g"), keys.dead("g"), keys.delayed("g"),
             keys.delayed("g", Lane.BATCH), keys.progress("g", "j1"), keys.moving("g"),
             keys.failures("g", "d"), keys.cooldown("g", "d")]  # fmt: skip
    assert {slot(k) for k in group} == {slot(keys.jobs("g"))}
    submission = [keys.submission("s"), keys.submission_jobs("s"),
                  keys.submission_results("s"), keys.submission_counted("s")]  # fmt: skip
    assert len({slot(k) for k in submission}) == 1
    assert slot(keys.key_window("k1", 5)) == slot(keys.key_running("k1"))
    # A marker beside any key lands in that key's slot, tagged or not.
    for key in (keys.usage("2026-01-01", "group", "g"), keys.jobs("g"), keys.cache("n", "d")):
        assert slot(beside(key, "counted:j1")) == slot(key)


@pytest.fixture
async def cluster(cluster_set: ClusterSet) -> AsyncIterator[Redis]:
    client = connect(cluster_set.url, blocking_reads=True)
    assert is_cluster(client)
    yield client
    await client.aclose()


def job_for(group: str, **fields: object) -> Job:
    now = time.time()
    base: dict[str, object] = {
        "id": f"j{time.monotonic_ns()}",
        "model": group,
        "group": group,
        "body": {"messages": []},
        "created": now,
        "deadline": now + 60,
    }
    return Job.model_validate({**base, **fields})


async def test_a_fallback_move_cut_short_by_a_crash_is_finished_once(
    cluster: Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    # Groups whose keys are on different nodes: a move cannot be one MULTI.
    assert slot(keys.jobs("a")) != slot(keys.jobs("b"))
    for group in ("a", "b"):
        await ensure_group(cluster, keys, group)
    await enqueue(cluster, keys, job_for("a"))
    dead = GroupConsumer(cluster, keys, "a", "dead")
    (delivery,) = await dead.read(1, None)
    assert delivery.job is not None
    tried = Attempt(group="a", deployment="a.0", error="500", at=time.time())
    moved = delivery.job.model_copy(update={"group": "b", "attempts": [tried]})
    # The dead worker recorded the move and appended the job to b, then died before its ack.
    field = f"{delivery.lane.value}:{delivery.entry_id.decode()}"
    await cluster.hset(keys.moving("a"), field, moved.encode())
    marker = keys.moved("b", moved.id, len(moved.attempts))
    await _APPEND_ONCE(cluster, [keys.jobs("b"), marker], [JOB_FIELD, moved.encode(), 60])
    await asyncio.sleep(1.1)  # idle past the reclaim threshold; "dead" has no heartbeat
    survivor = GroupConsumer(cluster, keys, "a", "survivor")
    assert await survivor.reclaim(10) == []  # finished the move instead of serving the job
    assert await cluster.xlen(keys.jobs("b")) == 1  # once, not twice
    assert await cluster.xlen(keys.jobs("a")) == 0
    assert (await cluster.xpending(keys.jobs("a"), CONSUMER_GROUP))["pending"] == 0
    assert await cluster.hlen(keys.moving("a")) == 0
    # A whole move repeated by a worker that did not die appends nothing more either.
    await enqueue(cluster, keys, job_for("a", id=moved.id))
    (again,) = await survivor.read(1, None)
    await survivor.move_to(again, moved)
    assert await cluster.xlen(keys.jobs("b")) == 1


async def test_a_result_stored_in_steps_counts_once_however_often_repeated(
    cluster: Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    job = job_for("g", lane="batch", submission="s1", custom_id="q1", result_ttl=60,
                  key="k1", budget_period="2026-12")  # fmt: skip
    usage = {"prompt_tokens": 7, "completion_tokens": 3}
    first = Reply(job=job.id, seq=0, kind=ReplyKind.DONE, response={"id": "first"},
                  group="g", deployment="g.0", usage=usage, cost=0.25)  # fmt: skip
    # A worker died after writing the record, before counting it anywhere.
    await _record_once(cluster, keys.result(job.id), outcome_of(job, first), 60)
    again = first.model_copy(update={"response": {"id": "second"}})
    for reply in (again, again):  # its successor ran the job again, and repeated the steps
        await store_apart(cluster, keys, job, reply, provider="openai")
    stored = (await records(cluster, keys, [job.id]))[job.id]
    assert stored is not None and stored.response == {"id": "first"}
    assert (await progress(cluster, keys, "s1")).succeeded == 1
    assert await cluster.xlen(keys.submission_results("s1")) == 1
    day = time.strftime("%Y-%m-%d", time.gmtime())
    totals = (await read_days(cluster, keys, [day]))[day]
    expected = {"requests": 1.0, "errors": 0.0, "prompt_tokens": 7.0,
                "completion_tokens": 3.0, "cost": 0.25}  # fmt: skip
    for dimension, value in (("group", "g"), ("deployment", "g.0"), ("key", "k1")):
        assert totals[dimension][value] == expected
    assert await read_spend(cluster, keys, [("k1", "2026-12")]) == {("k1", "2026-12"): 0.25}


async def test_replies_go_by_sharded_pubsub_to_one_node(
    cluster: Redis, cluster_set: ClusterSet, prefix: str
) -> None:
    channel = Keys(prefix).reply("api-1")
    dispatcher = ReplyDispatcher(cluster, channel)
    await dispatcher.start()
    try:
        assert dispatcher.ready
        stream = dispatcher.open("j")
        await publish_reply(cluster, channel, Reply(job="j", seq=0, kind=ReplyKind.DONE).encode())
        assert (await asyncio.wait_for(stream.next(), 5)).kind is ReplyKind.DONE
        owner = cluster_set.owner(slot(channel))
        for port in cluster_set.ports:
            node = cluster_set.node(port)
            listeners = int(node.execute_command("PUBSUB SHARDNUMSUB", channel)[0][1])
            assert listeners == (1 if port == owner else 0), port
            assert int(node.execute_command("PUBSUB NUMSUB", channel)[0][1]) == 0  # not broadcast
    finally:
        await dispatcher.stop()


async def test_a_reply_subscription_follows_its_slot_to_another_node(
    cluster: Redis, cluster_set: ClusterSet, prefix: str
) -> None:
    channel = Keys(prefix).reply("api-2")
    dispatcher = ReplyDispatcher(cluster, channel)
    await dispatcher.start()
    try:
        waiting = dispatcher.open("before")
        owner = cluster_set.owner(slot(channel))
        target = next(p for p in cluster_set.ports if p != owner)
        await asyncio.to_thread(cluster_set.move_slot, slot(channel), target)
        # The request waiting while the slot moved fails clearly (replies may have been lost).
        with pytest.raises(Exception, match="interrupted"):
            await asyncio.wait_for(waiting.next(), 10)
        for _ in range(100):  # subscribed again, on the slot's new owner
            if (
                dispatcher.ready
                and cluster_set.node(target).execute_command("PUBSUB SHARDNUMSUB", channel)[0][1]
            ):
                break
            await asyncio.sleep(0.05)
        stream = dispatcher.open("after")
        await publish_reply(
            cluster, channel, Reply(job="after", seq=0, kind=ReplyKind.DONE).encode()
        )
        assert (await asyncio.wait_for(stream.next(), 5)).kind is ReplyKind.DONE
    finally:
        await dispatcher.stop()


async def test_broadcast_channels_reach_every_process_on_any_node(
    cluster_set: ClusterSet, prefix: str
) -> None:
    keys = Keys(prefix)
    heard: list[bytes] = []
    # Fresh clients, as each worker and API process has: they subscribe wherever they land.
    clients = [connect(cluster_set.url, blocking_reads=True) for _ in range(4)]
    listeners = [Subscriber(c, {keys.cancel(): heard.append}) for c in clients[:3]]
    for listener in listeners:
        listener.start()
    try:
        for listener in listeners:
            await asyncio.wait_for(listener.subscribed.wait(), 5)
        await clients[3].publish(keys.cancel(), b"job-1")
        for _ in range(100):
            if len(heard) == 3:
                break
            await asyncio.sleep(0.02)
        assert heard == [b"job-1"] * 3
        # `inferq reload` counts the listeners of every node, not of the one it published to.
        control = [Subscriber(c, {keys.control(): heard.append}) for c in clients[:3]]
        for listener in control:
            listener.start()
        for listener in control:
            await asyncio.wait_for(listener.subscribed.wait(), 5)
        listened, _ = await broadcast_reload(clients[3], keys, wait_seconds=0.1)
        assert listened == 3
        for listener in control:
            await listener.stop()
    finally:
        for listener in listeners:
            await listener.stop()
        for client in clients:
            await client.aclose()
