"""The API's side of the streams: make sure groups exist, enqueue jobs, read queue depth."""

from dataclasses import dataclass

from redis.exceptions import ResponseError

from broker.connection import Redis, translate_errors
from broker.errors import BrokerRefused, QueueFull
from broker.keys import CONSUMER_GROUP, JOB_FIELD, Keys
from broker.messages import Job
from broker.scripts import LuaScript


@dataclass(frozen=True)
class QueueDepth:
    """A group's backlog: `waiting` not yet taken by any worker, `running` taken, not acked."""

    waiting: int
    running: int


async def ensure_group(redis: Redis, keys: Keys, group: str) -> None:
    """Create the group's stream and consumer group if missing (idempotent).

    The consumer group starts at id 0, so jobs added before any worker ever ran are served.
    """
    async with translate_errors():
        try:
            await redis.xgroup_create(keys.jobs(group), CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


# Admission and append in one round trip: the stream holds waiting + running jobs (workers
# delete what they acknowledge), so its length is the group's queue depth.
_ADMIT = LuaScript("""
local depth = redis.call('XLEN', KEYS[1])
if depth >= tonumber(ARGV[2]) then return {0, depth} end
return {1, redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[1])}
""")


async def enqueue(redis: Redis, keys: Keys, job: Job, limit: int | None = None) -> str:
    """Append a job to its group's stream; returns the entry id.

    With `limit`, refuses (QueueFull) when the group's queue already holds that many jobs,
    instead of growing without bound or trimming work nobody has done.
    """
    stream = keys.jobs(job.group)
    async with translate_errors():
        if limit is None:
            entry = await redis.xadd(stream, {JOB_FIELD: job.encode()})
        else:
            admitted, entry = await _ADMIT(redis, [stream], [job.encode(), limit, JOB_FIELD])
            if not admitted:
                raise QueueFull(job.group, int(entry), limit)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def depth(redis: Redis, keys: Keys, group: str) -> QueueDepth:
    """Waiting and running counts for one group."""
    return (await depths(redis, keys, [group]))[group]


async def depths(redis: Redis, keys: Keys, groups: list[str]) -> dict[str, QueueDepth]:
    """Waiting and running counts for several groups, in one round trip.

    Workers delete entries once acknowledged, so the stream's length is waiting + running and
    the consumer group's pending count is running.
    """
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for group in groups:
            pipe.xlen(keys.jobs(group))
            pipe.xpending(keys.jobs(group), CONSUMER_GROUP)
        results = await pipe.execute(raise_on_error=False)
    out: dict[str, QueueDepth] = {}
    for i, group in enumerate(groups):
        length, pending = results[2 * i], results[2 * i + 1]
        if isinstance(length, Exception):
            raise BrokerRefused(f"cannot read queue of {group}: {length}")
        # No consumer group yet (no worker ever ran): everything in the stream is waiting.
        running = int(pending.get("pending", 0)) if isinstance(pending, dict) else 0
        out[group] = QueueDepth(max(int(length) - running, 0), running)
    return out
