"""The workers' side of the streams: pull jobs, publish replies, then acknowledge or move them.

A job stays in the consumer group's pending list until one of `complete`, `retry_later`,
`move_to` or `dead_letter` has put its outcome somewhere durable (a published terminal reply, a
result record, the delayed set, another group's stream, the dead-letter stream) in the same MULTI
that acknowledges it. A worker that dies mid-job leaves it pending; `reclaim` hands it to a live
worker. Every move keeps the job in its lane (interactive or batch).

On a Redis Cluster a MULTI covers one slot: the group's own keys (its streams, delayed sets,
dead letters, progress lists) share it, but a reply channel, a result record or another group's
stream do not. There the outcome is made durable first, in steps that a repetition does not
double (a result's effects are guarded, a move is recorded in `moving` and deduplicated by a
marker in the target group), and the acknowledgement comes last: a worker that dies between
steps leaves the job pending, and whoever takes it over repeats the steps.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ResponseError

from inferq.broker.channels import publish_reply
from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.jobs.queue import ensure_group
from inferq.broker.jobs.results import store, store_apart
from inferq.broker.keys import CONSUMER_GROUP, JOB_FIELD, Keys
from inferq.broker.messages import Job, Lane, Reply
from inferq.broker.replicas import NO_ACKS, ReplicaAcks, confirm
from inferq.broker.scripts import LuaScript

log = logging.getLogger("inferq.broker")

# Move jobs whose backoff has passed from each delayed set (odd KEYS) back onto the stream of
# its lane (the KEY after it).
_PROMOTE = LuaScript("""
local moved = 0
for i = 1, #KEYS, 2 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  for _, job in ipairs(due) do
    redis.call('XADD', KEYS[i + 1], '*', ARGV[3], job)
    redis.call('ZREM', KEYS[i], job)
  end
  moved = moved + #due
end
return moved
""")

# Append a moved job to the target group's stream unless this move already did (KEYS: stream,
# marker; both in the target group's slot).
_APPEND_ONCE = LuaScript("""
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) == false then return 0 end
redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
return 1
""")
_MOVED_TTL = 7 * 86400

# Entry ids are per stream: the two lanes may hold the same id, so entries are named with both.
EntryKey = tuple[Lane, bytes]


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker: a valid job, or the reason it is not one."""

    entry_id: bytes
    job: Job | None
    raw: bytes
    problem: str | None = None
    times_delivered: int = 1
    lane: Lane = Lane.INTERACTIVE  # the stream it came from

    @property
    def key(self) -> EntryKey:
        """Names the entry among both lanes' streams."""
        return (self.lane, self.entry_id)


class GroupConsumer:
    """One consumer (a worker's deployment) in a model group's consumer group."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        group: str,
        consumer: str,
        provider: str = "",
        *,
        acks: ReplicaAcks = NO_ACKS,
    ) -> None:
        self._redis = redis
        self.acks = acks  # replicas that must have a job's end before the next step
        self._keys = keys
        self.group = group
        self.consumer = consumer
        self.provider = provider  # for the usage of results stored here (batch jobs)
        self._cluster = is_cluster(redis)
        self._streams = {lane: keys.stream(group, lane) for lane in Lane}
        self._lanes = {stream.encode(): lane for lane, stream in self._streams.items()}

    async def read(
        self, count: int, block_ms: int | None, lanes: Sequence[Lane] = (Lane.INTERACTIVE,)
    ) -> list[Delivery]:
        """Take up to `count` new jobs from each of `lanes`, waiting at most `block_ms` for the
        first one (None: not at all)."""
        streams: dict[Any, Any] = {self._streams[lane]: ">" for lane in lanes}
        async with translate_errors():
            try:
                reply: Any = await self._redis.xreadgroup(
                    CONSUMER_GROUP, self.consumer, streams, count=count, block=block_ms
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis restarted empty (or was flushed): recreate the group and read again.
                await ensure_group(self._redis, self._keys, self.group)
                return []
        deliveries: list[Delivery] = []
        for stream, entries in reply or []:
            lane = self._lanes[stream if isinstance(stream, bytes) else stream.encode()]
            for entry_id, fields in entries:
                deliveries.append(_decode(entry_id, fields, lane))
        return deliveries

    async def publish(self, job: Job, reply: Reply) -> None:
        """Send one non-terminal reply; a stream job's progress is recorded with it, atomically,
        so a worker that takes over after a crash continues where the client is."""
        assert job.reply_to is not None
        data = reply.encode()
        async with translate_errors():
            if not job.stream:
                await publish_reply(self._redis, job.reply_to, data)
                return
            progress = self._keys.progress(self.group, job.id)
            pipe = self._redis.pipeline(transaction=True)
            if not self._cluster:
                pipe.publish(job.reply_to, data)
            pipe.rpush(progress, data)
            if reply.seq == job.seq:  # the first message of this holder sets the expiry
                pipe.expireat(progress, int(job.deadline) + 60)
            await pipe.execute()
            if self._cluster:
                # Recorded first: a holder that dies before publishing leaves the message in
                # the record, and its successor sends it again (`republish`); the client drops
                # what it already has by sequence number.
                await publish_reply(self._redis, job.reply_to, data)

    async def republish(self, job: Job, sent: list[Reply]) -> None:
        """Send again the last of a stream job's recorded messages, which its previous holder
        may have recorded but not published (on a cluster they are two steps)."""
        if self._cluster and job.reply_to and sent:
            async with translate_errors():
                await publish_reply(self._redis, job.reply_to, sent[-1].encode())

    async def complete(self, delivery: Delivery, job: Job | None, reply: Reply | None) -> None:
        """Publish the terminal reply (if anyone listens) and store it as the job's result (if it
        asked for one), then acknowledge and delete the entry.

        With a result to store, one MULTI: the acknowledgement never happens without the
        terminal message and result. Without one (an interactive job), the same commands in
        one write, ordered so that whatever prefix of them runs is safe: PUBLISH, then XDEL,
        then XACK. Stopped after PUBLISH, the job is served again and its duplicate reply
        dropped by sequence number; after XDEL, the entry is gone and a reclaim's XCLAIM
        clears it from the pending list. None of them is refused when Redis is out of memory.
        """
        if self._cluster:
            await self._end_apart(delivery, job, reply)
            return
        if job is None or job.result_ttl is None:
            await self._finish(delivery, job, reply)
            return
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            if job is not None and job.reply_to and reply is not None:
                pipe.publish(job.reply_to, reply.encode())
            if job is not None and reply is not None:
                store(pipe, self._keys, job, reply, provider=self.provider)
            self._ack(pipe, delivery, job)
            await pipe.execute()
        await confirm(self._redis, self._keys, self.acks)

    async def _end_apart(
        self,
        delivery: Delivery,
        job: Job | None,
        reply: Reply | None,
        dead: dict[Any, Any] | None = None,
    ) -> None:
        """`complete` (or, with `dead` fields, `dead_letter`) on a cluster: the result, then
        the terminal message, then the acknowledgement (with the dead letter: same slot)."""
        async with translate_errors():
            if job is not None and reply is not None:
                await store_apart(self._redis, self._keys, job, reply, provider=self.provider)
                if job.reply_to:
                    await publish_reply(self._redis, job.reply_to, reply.encode())
            pipe = self._redis.pipeline(transaction=True)
            if dead is not None:
                pipe.xadd(self._keys.dead(self.group), dead, maxlen=10_000, approximate=True)
            self._ack(pipe, delivery, job)
            await pipe.execute()
        await confirm(self._redis, self._keys, self.acks)

    async def _finish(self, delivery: Delivery, job: Job | None, reply: Reply | None) -> None:
        """`complete` for a job with no result record: three commands, no MULTI."""
        stream = self._streams[delivery.lane]
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=False)
            if job is not None and job.reply_to and reply is not None:
                pipe.publish(job.reply_to, reply.encode())
            pipe.xdel(stream, delivery.entry_id)
            pipe.xack(stream, CONSUMER_GROUP, delivery.entry_id)
            if job is not None and job.stream:
                pipe.delete(self._keys.progress(self.group, job.id))
            await pipe.execute()
        await confirm(self._redis, self._keys, self.acks)

    async def retry_later(self, delivery: Delivery, job: Job, ready_at: float) -> None:
        """Acknowledge this delivery and park the job until `ready_at`; any deployment of the
        group may then take it."""
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.zadd(self._keys.delayed(self.group, job.lane), {job.encode(): ready_at})
            self._ack(pipe, delivery, job)
            await pipe.execute()

    async def move_to(self, delivery: Delivery, job: Job) -> None:
        """Acknowledge this delivery and append the job to another group's stream of its lane
        (fallback)."""
        await ensure_group(self._redis, self._keys, job.group)
        if self._cluster:
            await self._move_apart(delivery, job)
            return
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.xadd(self._keys.stream(job.group, job.lane), {JOB_FIELD: job.encode()})
            self._ack(pipe, delivery, job)
            await pipe.execute()

    async def _move_apart(self, delivery: Delivery, job: Job, recorded: bool = False) -> None:
        """`move_to` on a cluster, where the two groups' streams are in different slots: record
        the move in this group, append the job to the other group's stream once (a marker
        there deduplicates a repeated append), then acknowledge and forget the record. A
        reclaimer that finds the record finishes the move (`_finish_moves`)."""
        moving = self._keys.moving(self.group)
        field = _moving_field(delivery)
        async with translate_errors():
            if not recorded:
                await self._redis.hset(moving, field, job.encode())
            await _APPEND_ONCE(
                self._redis,
                [
                    self._keys.stream(job.group, job.lane),
                    self._keys.moved(job.group, job.id, len(job.attempts)),
                ],
                [JOB_FIELD, job.encode(), _MOVED_TTL],
            )
            pipe = self._redis.pipeline(transaction=True)
            self._ack(pipe, delivery, job)
            pipe.hdel(moving, field)
            await pipe.execute()

    async def _finish_moves(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Of reclaimed `deliveries`, finish those a dead holder was moving to another group;
        return the rest (to be served)."""
        if not self._cluster or not deliveries:
            return deliveries
        async with translate_errors():
            fields = [_moving_field(d) for d in deliveries]
            moves: Any = await self._redis.hmget(self._keys.moving(self.group), fields)
        rest = []
        for delivery, raw in zip(deliveries, moves, strict=True):
            if raw is None:
                rest.append(delivery)
                continue
            log.warning("finishing the move of a reclaimed job to another group")
            await ensure_group(self._redis, self._keys, Job.model_validate_json(raw).group)
            await self._move_apart(delivery, Job.model_validate_json(raw), recorded=True)
        return rest

    async def dead_letter(
        self, delivery: Delivery, reason: str, reply: Reply | None = None
    ) -> None:
        """Move an entry that cannot be served to the group's dead-letter stream, telling its
        client with `reply` (on its channel, or as its result record)."""
        fields: dict[Any, Any] = {
            JOB_FIELD: delivery.raw,
            b"reason": reason.encode(),
            b"lane": delivery.lane.value,
        }
        job = delivery.job
        if self._cluster:
            await self._end_apart(delivery, job, reply, dead=fields)
            return
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.xadd(self._keys.dead(self.group), fields, maxlen=10_000, approximate=True)
            if job is not None and job.reply_to and reply is not None:
                pipe.publish(job.reply_to, reply.encode())
            if job is not None and reply is not None:
                store(pipe, self._keys, job, reply)
            self._ack(pipe, delivery, job)
            await pipe.execute()
        await confirm(self._redis, self._keys, self.acks)

    def _ack(self, pipe: Any, delivery: Delivery, job: Job | None) -> None:
        stream = self._streams[delivery.lane]
        pipe.xack(stream, CONSUMER_GROUP, delivery.entry_id)
        pipe.xdel(stream, delivery.entry_id)
        if job is not None and job.stream:
            pipe.delete(self._keys.progress(self.group, job.id))

    async def progress(self, job: Job) -> list[Reply]:
        """The reply messages a previous holder of this stream job already published."""
        async with translate_errors():
            raw = await self._redis.lrange(self._keys.progress(self.group, job.id), 0, -1)
        return [Reply.model_validate_json(r) for r in raw]

    async def promote_due(self, limit: int = 100) -> int:
        """Put jobs whose retry backoff has passed back on the stream of their lane; returns
        how many."""
        keys: list[str] = []
        for lane, stream in self._streams.items():
            keys += [self._keys.delayed(self.group, lane), stream]
        async with translate_errors():
            moved = await _PROMOTE(self._redis, keys, [time.time(), limit, JOB_FIELD])
        return int(moved)

    async def reclaim(self, count: int) -> list[Delivery]:
        """Claim up to `count` pending jobs (of both lanes) of consumers whose worker heartbeat
        has expired.

        Liveness comes from heartbeats, not from idle time: a long generation on a live worker
        is never stolen, and a dead worker's jobs move within one heartbeat TTL.
        """
        claimed: list[Delivery] = []
        async with translate_errors():
            for lane in Lane:
                claimed += await self._reclaim_lane(lane, count - len(claimed))
        return await self._finish_moves(claimed)

    async def _reclaim_lane(self, lane: Lane, count: int) -> list[Delivery]:
        stream = self._streams[lane]
        try:
            consumers: Any = await self._redis.xinfo_consumers(stream, CONSUMER_GROUP)
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
                await self._redis.xgroup_delconsumer(stream, CONSUMER_GROUP, _name(c))
                continue
            if len(claimed) < count:
                claimed += await self._claim_from(lane, _name(c), count - len(claimed))
        return claimed

    async def reclaim_own(self, count: int, in_flight: set[EntryKey]) -> list[Delivery]:
        """Take back our own pending entries (of both lanes) that no task of ours serves any
        more (a Redis error interrupted them); `in_flight` are the entries still ours to serve."""
        claimed: list[Delivery] = []
        async with translate_errors():
            for lane in Lane:
                skip = {entry for entry_lane, entry in in_flight if entry_lane is lane}
                # min_idle 0: these are ours, and nobody else may take them while we live.
                claimed += await self._claim_from(
                    lane, self.consumer, count - len(claimed), skip=skip, min_idle=0
                )
        return await self._finish_moves(claimed)

    async def _claim_from(
        self,
        lane: Lane,
        owner: str,
        count: int,
        skip: set[bytes] | frozenset[bytes] = frozenset(),
        min_idle: int = 1000,
    ) -> list[Delivery]:
        if count <= 0:
            return []
        stream = self._streams[lane]
        try:
            pending: Any = await self._redis.xpending_range(
                stream,
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
            stream,
            CONSUMER_GROUP,
            self.consumer,
            min_idle_time=min_idle,
            message_ids=list(times)[:count],
        )
        result = []
        for entry_id, fields in entries:
            delivery = _decode(entry_id, fields or {}, lane)
            result.append(replace(delivery, times_delivered=times.get(entry_id, 1) + 1))
        if result:
            log.warning(
                "reclaimed %d jobs from %s worker %s (%s lane)",
                len(result),
                "this" if owner == self.consumer else "dead",
                owner,
                lane.value,
            )
        return result


def _moving_field(delivery: Delivery) -> str:
    return f"{delivery.lane.value}:{delivery.entry_id.decode()}"


def _name(consumer: Any) -> str:
    name = consumer.get("name")
    return name.decode() if isinstance(name, bytes) else str(name)


def _decode(entry_id: bytes, fields: dict[bytes, bytes], lane: Lane) -> Delivery:
    raw = fields.get(JOB_FIELD, b"")
    if not raw:
        return Delivery(
            entry_id, None, b"", f"entry has no {JOB_FIELD.decode()!r} field", lane=lane
        )
    try:
        return Delivery(entry_id, Job.model_validate_json(raw), raw, lane=lane)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        return Delivery(entry_id, None, raw, f"invalid job: {where}: {first['msg']}", lane=lane)
