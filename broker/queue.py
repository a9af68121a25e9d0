"""The API's side of the streams: make sure groups exist, enqueue jobs, read queue depth."""

from dataclasses import dataclass

from redis.exceptions import ResponseError

from broker.connection import Redis, translate_errors
from broker.keys import CONSUMER_GROUP, JOB_FIELD, Keys
from broker.messages import Job


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


async def enqueue(redis: Redis, keys: Keys, job: Job) -> str:
    """Append a job to its group's stream; returns the stream entry id."""
    async with translate_errors():
        entry = await redis.xadd(keys.jobs(job.group), {JOB_FIELD: job.encode()})
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def depth(redis: Redis, keys: Keys, group: str) -> QueueDepth:
    """Waiting and running counts for one group.

    Workers delete entries once acknowledged, so the stream's length is waiting + running and
    the consumer group's pending count is running.
    """
    stream = keys.jobs(group)
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        pipe.xlen(stream)
        pipe.xpending(stream, CONSUMER_GROUP)
        try:
            length, pending = await pipe.execute()
        except ResponseError:
            return QueueDepth(0, 0)  # no stream or group yet: nothing queued
    running = int(pending.get("pending", 0)) if isinstance(pending, dict) else 0
    return QueueDepth(max(int(length) - running, 0), running)
