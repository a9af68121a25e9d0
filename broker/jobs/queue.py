"""The API's side of the streams: make sure groups exist, enqueue jobs, read queue depth.

Each model group has two streams, its lanes: `jobs` (interactive) and `batch`, read by one
consumer group; workers take interactive jobs first.
"""

import time
from dataclasses import dataclass

from redis.exceptions import ResponseError

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.errors import BrokerRefused, QueueFull
from inferq.broker.jobs.admission import Admission
from inferq.broker.keys import CONSUMER_GROUP, JOB_FIELD, Keys
from inferq.broker.messages import Job, Lane
from inferq.broker.replicas import NO_ACKS, ReplicaAcks, confirm
from inferq.broker.scripts import LuaScript


@dataclass(frozen=True)
class QueueDepth:
    """A group's backlog: `waiting` not yet taken by any worker, `running` taken, not acked
    (interactive lane), and the same for its batch lane."""

    waiting: int
    running: int
    batch_waiting: int = 0
    batch_running: int = 0


async def ensure_group(redis: Redis, keys: Keys, group: str) -> None:
    """Create the group's streams (both lanes) and their consumer group if missing
    (idempotent).

    The consumer group starts at id 0, so jobs added before any worker ever ran are served.
    """
    async with translate_errors():
        for lane in Lane:
            try:
                await redis.xgroup_create(
                    keys.stream(group, lane), CONSUMER_GROUP, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise


# Admission and append in one round trip: the stream holds waiting + running jobs (workers
# delete what they acknowledge), so its length is the group's queue depth.
_ADMIT = LuaScript("""
local depth = redis.call('XLEN', KEYS[1])
if depth >= tonumber(ARGV[2]) then return {0, depth} end
return {1, redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[1]), depth}
""")


async def enqueue(
    redis: Redis,
    keys: Keys,
    job: Job,
    limit: int | None = None,
    acks: ReplicaAcks = NO_ACKS,
    *,
    admission: Admission | None = None,
) -> str:
    """Append a job to its group's stream for its lane; returns the entry id.

    With `limit`, refuses (QueueFull) when that lane already holds that many jobs, instead of
    growing without bound or trimming work nobody has done; with `admission` too, the depth is
    read only where the queue may be near its limit (see `broker.jobs.admission`). With
    `acks`, returns once that many replicas have the job (or the wait timed out).
    """
    stream = keys.stream(job.group, job.lane)
    async with translate_errors():
        if limit is None or (admission and not admission.must_check(stream, limit)):
            entry = await redis.xadd(stream, {JOB_FIELD: job.encode()})
            if admission and limit is not None:
                admission.added(stream)
        else:
            admitted, entry, *depth = await _ADMIT(
                redis, [stream], [job.encode(), limit, JOB_FIELD]
            )
            if not admitted:
                raise QueueFull(job.group, int(entry), limit)
            if admission and depth:
                admission.checked(stream, int(depth[0]))
    await confirm(redis, keys, acks)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def depth(redis: Redis, keys: Keys, group: str) -> QueueDepth:
    """Waiting and running counts for one group."""
    return (await depths(redis, keys, [group]))[group]


async def lags(redis: Redis, keys: Keys, groups: list[str]) -> dict[str, float | None]:
    """Per group, how long its oldest waiting interactive job has waited (seconds; None when
    none waits), from the id of the first entry no worker has been given: stream ids are
    their enqueue times in milliseconds."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for group in groups:
            pipe.xinfo_groups(keys.jobs(group))
        infos = await pipe.execute(raise_on_error=False)
        pipe = redis.pipeline(transaction=False)
        for group, info in zip(groups, infos, strict=True):
            names = (CONSUMER_GROUP, CONSUMER_GROUP.encode())
            ours = [g for g in info if g.get("name") in names] if isinstance(info, list) else []
            delivered = ours[0]["last-delivered-id"] if ours else None
            start = f"({delivered.decode()}" if isinstance(delivered, bytes) else "-"
            pipe.xrange(keys.jobs(group), min=start, max="+", count=1)
        firsts = await pipe.execute(raise_on_error=False)
    now_ms = time.time() * 1000
    out: dict[str, float | None] = {}
    for group, first in zip(groups, firsts, strict=True):
        if isinstance(first, list) and first:
            enqueued_ms = int(first[0][0].split(b"-")[0])
            out[group] = round(max(now_ms - enqueued_ms, 0.0) / 1000, 3)
        else:
            out[group] = None
    return out


async def depths(redis: Redis, keys: Keys, groups: list[str]) -> dict[str, QueueDepth]:
    """Waiting and running counts for several groups (both lanes), in one round trip.

    Workers delete entries once acknowledged, so the stream's length is waiting + running and
    the consumer group's pending count is running.
    """
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for group in groups:
            for lane in Lane:
                pipe.xlen(keys.stream(group, lane))
                pipe.xpending(keys.stream(group, lane), CONSUMER_GROUP)
        results = iter(await pipe.execute(raise_on_error=False))
    out: dict[str, QueueDepth] = {}
    for group in groups:
        counts: list[int] = []
        for _lane in Lane:
            length, pending = next(results), next(results)
            if isinstance(length, Exception):
                raise BrokerRefused(f"cannot read queue of {group}: {length}")
            # No consumer group yet (no worker ever ran): everything in the stream is waiting.
            running = int(pending.get("pending", 0)) if isinstance(pending, dict) else 0
            counts += [max(int(length) - running, 0), running]
        out[group] = QueueDepth(*counts)
    return out
