"""The workers' side of the streams: pull jobs, publish replies, then acknowledge or move them.

A job stays in the consumer group's pending list until one of `complete`, `retry_later`,
`move_to` or `dead_letter` has put its outcome somewhere durable (a published terminal reply, the
delayed set, another group's stream, the dead-letter stream) in the same MULTI that acknowledges
it. A worker that dies mid-job leaves it pending; `reclaim` hands it to a live worker.
"""

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ResponseError

from broker.connection import Redis, translate_errors
from broker.keys import CONSUMER_GROUP, JOB_FIELD, Keys
from broker.messages import Job, Reply
from broker.queue import ensure_group
from broker.scripts import LuaScript

log = logging.getLogger("inferq.broker")

# Move jobs whose backoff has passed from the delayed set back onto the stream.
_PROMOTE = LuaScript("""
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', ARGV[3], job)
  redis.call('ZREM', KEYS[1], job)
end
return #due
""")


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker: a valid job, or the reason it is not one."""

    entry_id: bytes
    job: Job | None
    raw: bytes
    problem: str | None = None
    times_delivered: int = 1


class GroupConsumer:
    """One consumer (a worker's deployment) in a model group's consumer group."""

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

    async def publish(self, job: Job, reply: Reply) -> None:
        """Send one non-terminal reply; a stream job's progress is recorded with it, atomically,
        so a worker that takes over after a crash continues where the client is."""
        assert job.reply_to is not None
        data = reply.encode()
        async with translate_errors():
            if not job.stream:
                await self._redis.publish(job.reply_to, data)
                return
            progress = self._keys.progress(self.group, job.id)
            pipe = self._redis.pipeline(transaction=True)
            pipe.publish(job.reply_to, data)
            pipe.rpush(progress, data)
            if reply.seq == job.seq:  # the first message of this holder sets the expiry
                pipe.expireat(progress, int(job.deadline) + 60)
            await pipe.execute()

    async def complete(self, delivery: Delivery, job: Job | None, reply: Reply | None) -> None:
        """Publish the terminal reply (if anyone listens), then acknowledge and delete the entry.

        One MULTI: the acknowledgement never happens without the terminal message.
        """
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            if job is not None and job.reply_to and reply is not None:
                pipe.publish(job.reply_to, reply.encode())
            self._ack(pipe, delivery, job)
            await pipe.execute()

    async def retry_later(self, delivery: Delivery, job: Job, ready_at: float) -> None:
        """Acknowledge this delivery and park the job until `ready_at`; any deployment of the
        group may then take it."""
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.zadd(self._keys.delayed(self.group), {job.encode(): ready_at})
            self._ack(pipe, delivery, job)
            await pipe.execute()

    async def move_to(self, delivery: Delivery, job: Job) -> None:
        """Acknowledge this delivery and append the job to another group's stream (fallback)."""
        await ensure_group(self._redis, self._keys, job.group)
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.xadd(self._keys.jobs(job.group), {JOB_FIELD: job.encode()})
            self._ack(pipe, delivery, job)
            await pipe.execute()

    async def dead_letter(
        self, delivery: Delivery, reason: str, reply: Reply | None = None
    ) -> None:
        """Move an entry that cannot be served to the group's dead-letter stream, telling its
        client (when there is one) with `reply`."""
        fields: dict[Any, Any] = {JOB_FIELD: delivery.raw, b"reason": reason.encode()}
        job = delivery.job
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.xadd(self._keys.dead(self.group), fields, maxlen=10_000, approximate=True)
            if job is not None and job.reply_to and reply is not None:
                pipe.publish(job.reply_to, reply.encode())
            self._ack(pipe, delivery, job)
            await pipe.execute()

    def _ack(self, pipe: Any, delivery: Delivery, job: Job | None) -> None:
        pipe.xack(self._stream, CONSUMER_GROUP, delivery.entry_id)
        pipe.xdel(self._stream, delivery.entry_id)
        if job is not None and job.stream:
            pipe.delete(self._keys.progress(self.group, job.id))

    async def progress(self, job: Job) -> list[Reply]:
        """The reply messages a previous holder of this stream job already published."""
        async with translate_errors():
            raw = await self._redis.lrange(self._keys.progress(self.group, job.id), 0, -1)
        return [Reply.model_validate_json(r) for r in raw]

    async def promote_due(self, limit: int = 100) -> int:
        """Put jobs whose retry backoff has passed back on the stream; returns how many."""
        async with translate_errors():
            moved = await _PROMOTE(
                self._redis,
                [self._keys.delayed(self.group), self._stream],
                [time.time(), limit, JOB_FIELD],
            )
        return int(moved)

    async def reclaim(self, count: int) -> list[Delivery]:
        """Claim up to `count` pending jobs of consumers whose worker heartbeat has expired.

        Liveness comes from heartbeats, not from idle time: a long generation on a live worker
        is never stolen, and a dead worker's jobs move within one heartbeat TTL.
        """
        async with translate_errors():
            try:
                consumers: Any = await self._redis.xinfo_consumers(self._stream, CONSUMER_GROUP)
            except ResponseError:
                return []  # no stream or group yet
            others = [c for c in consumers if _name(c) != self.consumer]
            if not others:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for c in others:
                pipe.exists(self._keys.worker(_name(c)))
            alive = await pipe.execute()
            claimed: list[Delivery] = []
            for c, is_alive in zip(others, alive, strict=True):
                if is_alive:
                    continue
                if not int(c.get("pending", 0)):
                    await self._redis.xgroup_delconsumer(self._stream, CONSUMER_GROUP, _name(c))
                    continue
                if len(claimed) < count:
                    claimed += await self._claim_from(_name(c), count - len(claimed))
        return claimed

    async def reclaim_own(self, count: int, in_flight: set[bytes]) -> list[Delivery]:
        """Take back our own pending entries that no task of ours serves any more (a Redis
        error interrupted them); `in_flight` are the entries still being served."""
        async with translate_errors():
            # min_idle 0: these are ours, and nobody else may take them while we live.
            return await self._claim_from(self.consumer, count, skip=in_flight, min_idle=0)

    async def _claim_from(
        self,
        owner: str,
        count: int,
        skip: set[bytes] | frozenset[bytes] = frozenset(),
        min_idle: int = 1000,
    ) -> list[Delivery]:
        try:
            pending: Any = await self._redis.xpending_range(
                self._stream,
                CONSUMER_GROUP,
                min="-",
                max="+",
                count=count + len(skip),
                consumername=owner,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis came back empty: the pending entries are gone with it; start afresh.
            await ensure_group(self._redis, self._keys, self.group)
            return []
        times = {
            p["message_id"]: int(p["times_delivered"])
            for p in pending or []
            if p["message_id"] not in skip
        }
        if not times:
            return []
        # min_idle_time: of two live workers claiming at once, only the first gets each entry.
        entries: Any = await self._redis.xclaim(
            self._stream,
            CONSUMER_GROUP,
            self.consumer,
            min_idle_time=min_idle,
            message_ids=list(times),
        )
        result = []
        for entry_id, fields in entries:
            delivery = _decode(entry_id, fields or {})
            result.append(replace(delivery, times_delivered=times.get(entry_id, 1) + 1))
        if result:
            log.warning(
                "reclaimed %d jobs from %s worker %s",
                len(result),
                "this" if owner == self.consumer else "dead",
                owner,
            )
        return result


def _name(consumer: Any) -> str:
    name = consumer.get("name")
    return name.decode() if isinstance(name, bytes) else str(name)


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
