"""The workers' side of the streams: pull jobs, publish replies, acknowledge after the terminal.

A job stays in the consumer group's pending list until `complete` has published its terminal
reply, so a worker that dies mid-job leaves it there for another worker to reclaim.
"""

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ResponseError

from broker.connection import Redis, translate_errors
from broker.keys import CONSUMER_GROUP, JOB_FIELD, Keys
from broker.messages import Job, Reply
from broker.queue import ensure_group

log = logging.getLogger("inferq.broker")


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker: a valid job, or the reason it is not one."""

    entry_id: bytes
    job: Job | None
    raw: bytes
    problem: str | None = None


class GroupConsumer:
    """One consumer (a worker's deployment slot pool) in a model group's consumer group."""

    def __init__(self, redis: Redis, keys: Keys, group: str, consumer: str) -> None:
        self._redis = redis
        self._keys = keys
        self.group = group
        self.consumer = consumer
        self._stream = keys.jobs(group)

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Take up to `count` new jobs, waiting at most `block_ms` for the first one."""
        async with translate_errors():
            try:
                reply: Any = await self._redis.xreadgroup(
                    CONSUMER_GROUP, self.consumer, {self._stream: ">"}, count=count, block=block_ms
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis restarted empty (or was flushed): recreate the group and read again.
                await ensure_group(self._redis, self._keys, self.group)
                return []
        deliveries: list[Delivery] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                deliveries.append(_decode(entry_id, fields))
        return deliveries

    async def publish(self, channel: str, reply: Reply) -> None:
        """Send one non-terminal reply message."""
        async with translate_errors():
            await self._redis.publish(channel, reply.encode())

    async def complete(self, delivery: Delivery, channel: str | None, reply: Reply) -> None:
        """Publish the terminal reply, then acknowledge and delete the entry, in one round trip.

        The pipeline keeps the order: the acknowledgement never precedes the terminal message.
        """
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=False)
            if channel:
                pipe.publish(channel, reply.encode())
            pipe.xack(self._stream, CONSUMER_GROUP, delivery.entry_id)
            pipe.xdel(self._stream, delivery.entry_id)
            await pipe.execute()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move an entry that cannot be served to the group's dead-letter stream."""
        fields: dict[Any, Any] = {JOB_FIELD: delivery.raw, b"reason": reason.encode()}
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.xadd(self._keys.dead(self.group), fields, maxlen=10_000, approximate=True)
            pipe.xack(self._stream, CONSUMER_GROUP, delivery.entry_id)
            pipe.xdel(self._stream, delivery.entry_id)
            await pipe.execute()


def _decode(entry_id: bytes, fields: dict[bytes, bytes]) -> Delivery:
    raw = fields.get(JOB_FIELD, b"")
    if not raw:
        return Delivery(entry_id, None, b"", f"entry has no {JOB_FIELD.decode()!r} field")
    try:
        return Delivery(entry_id, Job.model_validate_json(raw), raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        return Delivery(entry_id, None, raw, f"invalid job: {where}: {first['msg']}")
