"""The API's reply path: one pub/sub subscription per process, routed to waiting requests.

The process subscribes once, at start, to its own channel; every job it enqueues carries that
channel's name, so no token can be published before someone listens and no request needs a
Redis connection of its own. Replies carry their job id and a sequence number: the dispatcher
hands each to its request's `ReplyStream`, which refuses to skip a gap.

On a Redis Cluster the channel is a sharded one (SSUBSCRIBE; workers SPUBLISH): it lives on
the node that owns its slot, so replies are not broadcast to every node. When that slot moves,
the node drops the subscription (a `sunsubscribe` the process did not ask for): what was
published meanwhile may be lost, so the waiting requests fail (ReplyLost) and the process
subscribes again on the slot's new owner.
"""

import asyncio
import logging
from contextlib import suppress

from pydantic import ValidationError

from inferq.broker.connection import UNAVAILABLE, PubSub, Redis, is_cluster
from inferq.broker.errors import ReplyAborted, ReplyLost
from inferq.broker.messages import Reply

log = logging.getLogger("inferq.broker")

# Past this many bytes queued for one job, its reader is too slow: the stream is failed rather
# than letting a slow client grow the API's memory without bound.
MAX_BUFFERED_BYTES = 4 * 1024 * 1024
# Seconds of silence on the reply channel before it is PINGed (and, unanswered, reconnected).
PING_INTERVAL = 5.0


class _Marker:
    def __init__(self, error: type[Exception], message: str) -> None:
        self.error = error
        self.message = message


_LOST = _Marker(ReplyLost, "the reply channel was interrupted; the answer would be incomplete")
_OVERFLOW = _Marker(ReplyLost, "the client reads too slowly; the stream was stopped")


class ReplyStream:
    """The replies of one job, in order: duplicates are skipped, a gap raises ReplyLost."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._queue: asyncio.Queue[tuple[Reply | _Marker, int]] = asyncio.Queue()
        self._next_seq = 0
        self._buffered = 0
        self._failed = False

    def _put(self, item: Reply | _Marker, size: int = 0) -> None:
        if self._failed:
            return
        self._buffered += size
        if self._buffered > MAX_BUFFERED_BYTES:
            item, self._failed = _OVERFLOW, True
        elif isinstance(item, _Marker):
            self._failed = True
        self._queue.put_nowait((item, size))

    def abort(self, message: str) -> None:
        """Make the reader's pending or next `next()` raise ReplyAborted."""
        self._put(_Marker(ReplyAborted, message))

    async def next(self) -> Reply:
        """The next reply message; wrap in `asyncio.timeout` to bound the wait."""
        while True:
            item, size = await self._queue.get()
            self._buffered -= size
            if isinstance(item, _Marker):
                raise item.error(item.message)
            if item.seq < self._next_seq:
                continue  # a duplicate (a job served twice after a reconnect): already delivered
            if item.seq != self._next_seq:
                raise ReplyLost(f"reply message {self._next_seq} never arrived (got {item.seq})")
            self._next_seq += 1
            return item


class ReplyDispatcher:
    """Owns this API process's reply subscription and routes messages by job id."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.channel = channel
        self._redis = redis
        self._cluster = is_cluster(redis)
        self._pubsub: PubSub | None = None
        self._streams: dict[str, ReplyStream] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def ready(self) -> bool:
        """True while the subscription is live: only then may jobs be enqueued."""
        return self._subscribed.is_set()

    async def start(self, wait: float = 2.0) -> None:
        """Start subscribing and routing; wait up to `wait` seconds for the subscription.

        If Redis is down, routing starts anyway and subscribes as soon as Redis answers.
        """
        self._task = asyncio.create_task(self._run(), name="reply-dispatcher")
        with suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=wait)

    async def stop(self) -> None:
        """Stop routing and close the subscription."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._pubsub is not None:
            with suppress(*UNAVAILABLE):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    def open(self, job_id: str) -> ReplyStream:
        """Start collecting replies for a job; call before the job is enqueued."""
        stream = ReplyStream(job_id)
        self._streams[job_id] = stream
        return stream

    def close(self, job_id: str) -> None:
        """Stop collecting replies for a job (late messages are dropped)."""
        self._streams.pop(job_id, None)

    @property
    def in_flight(self) -> int:
        """Jobs this process is waiting on."""
        return len(self._streams)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                if self._pubsub is None:
                    self._pubsub = await self._subscribe()
                    self._subscribed.set()
                    log.info("listening for replies on %s", self.channel)
                backoff = 0.05
                await self._listen(self._pubsub)
            except UNAVAILABLE as exc:
                if self._subscribed.is_set():
                    log.warning(
                        "reply channel lost (%s); failing %d waiting requests",
                        exc,
                        len(self._streams),
                    )
                self._subscribed.clear()
                self._fail_all()
                if self._pubsub is not None:
                    with suppress(*UNAVAILABLE):
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                    self._pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.25)

    async def _subscribe(self) -> PubSub:
        if not self._cluster:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self.channel)
            return pubsub
        # A keyed command first: a MOVED reply teaches the client where the slot is now.
        await self._redis.exists(self.channel)
        pubsub = self._redis.pubsub()
        await pubsub.ssubscribe(self.channel)
        return pubsub

    async def _next(self, pubsub: PubSub, wait: float) -> dict[str, object] | None:
        """The next message of the subscription (None after `wait` seconds of silence)."""
        if not self._cluster:
            message: dict[str, object] | None = await pubsub.get_message(timeout=wait)
            return message
        message = await pubsub.get_sharded_message(timeout=wait)  # type: ignore[attr-defined]
        if message is not None and message.get("type") in ("sunsubscribe", b"sunsubscribe"):
            raise ConnectionError("the reply channel's slot moved to another node")
        return message

    async def _ping(self, pubsub: PubSub) -> None:
        if not self._cluster:
            await pubsub.ping()
            return
        for node_pubsub in list(getattr(pubsub, "node_pubsub_mapping", {}).values()):
            await node_pubsub.ping()

    async def _listen(self, pubsub: PubSub) -> None:
        """Route messages; when the channel is quiet, PING it, so a connection that died
        silently (an idle timeout on the path) is noticed instead of trusted forever."""
        loop = asyncio.get_running_loop()
        ping_sent: float | None = None
        while True:
            message = await self._next(pubsub, PING_INTERVAL)
            if message is None:
                if ping_sent is not None and loop.time() - ping_sent > PING_INTERVAL:
                    raise ConnectionError("the reply subscription did not answer PING")
                if ping_sent is None:
                    await self._ping(pubsub)
                    ping_sent = loop.time()
                continue
            ping_sent = None  # anything received proves the connection lives
            if message.get("type") in ("message", "smessage"):
                data = message["data"]
                assert isinstance(data, bytes)
                self._route(data)

    def _route(self, data: bytes) -> None:
        try:
            reply = Reply.model_validate_json(data)
        except ValidationError:
            log.error("dropping malformed reply message on %s", self.channel)
            return
        stream = self._streams.get(reply.job)
        if stream is not None:
            stream._put(reply, len(data))

    def _fail_all(self) -> None:
        for stream in self._streams.values():
            stream._put(_LOST)
