"""The path every inference route shares: answer from the cache, or listen, enqueue and await
the first reply. Reading the request is `requests`; relaying a stream is `relay`."""

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.requests import Request

from inferq.api.accounting.usage import Tracker
from inferq.api.errors import GatewayError, GatewayTimeout, Unavailable, UpstreamError
from inferq.api.inference.cache import CachePlan, entry, replay
from inferq.api.inference.replies import route_headers
from inferq.api.state import Gateway
from inferq.api.tenants.fairshare import Ticket
from inferq.api.tenants.guard import permit
from inferq.api.tenants.principal import principal_of
from inferq.broker.errors import BrokerError, BrokerUnavailable, QueueFull, ReplyAborted, ReplyLost
from inferq.broker.jobs.queue import enqueue
from inferq.broker.jobs.replies import ReplyStream
from inferq.broker.messages import Job, Reply, ReplyKind
from inferq.broker.replicas import ReplicaAcks
from inferq.broker.tenants.vkeys import KeyRecord

log = logging.getLogger("inferq.api")

# Extra wait past a job's deadline, so the worker's own timeout error arrives first.
_GRACE = 1.0
# Seconds a client refused with 429 is told to wait.
RETRY_AFTER = 1


class ClientGone(Exception):
    """The client disconnected before its answer began; the job was cancelled."""


@dataclass
class Started:
    """An answer that has begun: its first reply, the rest to come, and the cache's part."""

    job: Job
    first: Reply
    replies: ReplyStream
    cache: CachePlan | None = None
    hit: bool = False
    tracker: Tracker | None = None
    ticket: Ticket | None = None  # the job's place in its key's fair share of the group

    def headers(self) -> dict[str, str]:
        """Routing headers, plus `x-inferq-cache` when the cache was consulted."""
        headers = route_headers(self.job, self.first)
        if self.cache is not None:
            headers["x-inferq-cache"] = "hit" if self.hit else "miss"
        return headers


async def begin(request: Request, gw: Gateway, job: Job, cache: CachePlan | None) -> Started | None:
    """`start`, with the request's usage tracked whichever way it ends; None when the client
    left before its answer began (reply 499)."""
    record = principal_of(request.scope).record
    if record is not None:
        job = permit(record, gw.config, job)  # before the tracker: a 403 used nothing
    tracker = gw.usage.track(request, job)
    try:
        if record is not None:
            await _admit(gw, record, job, tracker)
        started = await start(request, gw, job, cache)
    except ClientGone:
        tracker.failed(499, "client_disconnected")
        return None
    except GatewayError as exc:
        tracker.failed(exc.status, exc.type, exc.reply if isinstance(exc, UpstreamError) else None)
        raise
    if started.ticket is not None:
        ticket = started.ticket
        tracker.on_end.append(lambda _rec: gw.fair.leave(ticket))
    if job.stream:
        tracker.streaming = True
        started.tracker = tracker  # the stream records its end itself
    else:
        tracker.done(started.first, started.hit)
    return started


async def _admit(gw: Gateway, record: KeyRecord, job: Job, tracker: Tracker) -> None:
    """Hold the request to its key's budget and limits; what it used is counted when it ends."""
    gw.guard.check_budget(record)
    admitted = record.limited
    if admitted:
        await gw.guard.admit(record, job)
    tracker.on_end.append(lambda rec: gw.guard.finished(record, job, rec, admitted))


async def start(request: Request, gw: Gateway, job: Job, cache: CachePlan | None = None) -> Started:
    """Answer from the cache, or enqueue `job` and wait for its first reply (the whole answer,
    when not streaming).

    Raises the job's error as a GatewayError, ClientGone if the client left while waiting.
    The reply stream stays open only for a stream whose answer has begun.
    """
    if not gw.dispatcher.ready:
        raise Unavailable("The queue is unreachable (Redis is down); retry shortly.")
    if cache is not None:
        hit = await _from_cache(gw, job, cache)
        if hit is not None:
            return hit
    try:
        started = await _start_live(request, gw, job, cache)
    except BaseException:
        if cache is not None and cache.store:
            gw.background(gw.cache.end_flight(cache.digest, job.id, cache.namespace))
        raise
    if cache is not None and cache.store and not job.stream:
        store_answer(gw, job, cache, [], started.first)
    return started


async def _from_cache(gw: Gateway, job: Job, cache: CachePlan) -> Started | None:
    """A stored answer, or one an identical request in flight is producing (single flight)."""
    try:
        if cache.lookup:
            hit = await _hit(gw, job, cache)
            if hit is not None:
                return hit
        if cache.store and not await gw.cache.claim_flight(
            cache.digest, job.id, job.deadline - time.time(), cache.namespace
        ):
            return await _await_flight(gw, job, cache)
    except BrokerError as exc:
        log.warning("cache unavailable for job %s req %s: %s", job.id, job.request_id, exc)
    return None


async def _hit(gw: Gateway, job: Job, cache: CachePlan) -> Started | None:
    raw = await gw.cache.get(cache.digest, cache.namespace)
    replies = replay(job, raw, cache.max_age) if raw else None
    if not replies:
        return None
    stream = ReplyStream(job.id)
    for reply in replies:
        stream._put(reply)
    return Started(job, await stream.next(), stream, cache, hit=True)


async def _await_flight(gw: Gateway, job: Job, cache: CachePlan) -> Started | None:
    """Wait for the identical request in flight to store its answer; None if it gave up."""
    polls = 0
    while time.time() < job.deadline:
        await asyncio.sleep(0.02)
        polls += 1
        hit = await _hit(gw, job, cache)
        if hit is not None:
            return hit
        if polls % 10 == 0 and not await gw.cache.in_flight(cache.digest, cache.namespace):
            return None  # the leader failed or was cancelled: answer this one ourselves
    return None


def store_answer(gw: Gateway, job: Job, cache: CachePlan, deltas: list[Reply], done: Reply) -> None:
    """Keep a complete, successful answer (in the background: the client does not wait)."""
    data = entry(job.kind, deltas, done)
    gw.background(gw.cache.put(cache.digest, data, cache.ttl, cache.namespace))


async def _start_live(request: Request, gw: Gateway, job: Job, cache: CachePlan | None) -> Started:
    job = await _with_live_worker(gw, job)
    principal = principal_of(request.scope)
    if principal.record is None:
        return await _run_live(request, gw, job, cache)  # the operator is not held back
    ticket = await gw.fair.enter(
        job.group, principal.record.key_id, slots=gw.live.slots.get(job.group, 1),
        weight=principal.weight, wait_s=job.deadline - time.time(),
        limit=gw.config.fabric.queue_limit,
    )  # fmt: skip
    try:
        started = await _run_live(request, gw, job, cache)
    except BaseException:
        gw.fair.leave(ticket)
        raise
    started.ticket = ticket
    return started


async def _run_live(request: Request, gw: Gateway, job: Job, cache: CachePlan | None) -> Started:
    replies = await _submit(gw, job)
    watcher = asyncio.ensure_future(_client_gone(request, replies))
    try:
        first = await next_reply(replies, job)
    except ReplyAborted:
        gw.abandon(job.id)
        # The access line says so (outcome=client_disconnected); this is for debugging.
        log.debug("job %s req %s: client disconnected while waiting", job.id, job.request_id)
        raise ClientGone from None
    except GatewayError:
        gw.abandon(job.id)  # deadline passed or replies lost: stop the work nobody awaits
        raise
    except BaseException:
        gw.dispatcher.close(job.id)
        raise
    finally:
        watcher.cancel()
    if first.kind is ReplyKind.ERROR or not job.stream:
        gw.dispatcher.close(job.id)
    if first.kind is ReplyKind.ERROR:
        assert first.error is not None
        e = first.error
        error = UpstreamError(e.message, status=e.status, type=e.type, code=e.code, param=e.param)
        error.reply = first
        raise error
    return Started(job, first, replies, cache)


async def _client_gone(request: Request, replies: ReplyStream) -> None:
    """Wake the waiting request if its client disconnects before the answer starts."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    replies.abort("client disconnected")


async def _with_live_worker(gw: Gateway, job: Job) -> Job:
    """Skip leading groups of the chain that no live worker serves; refuse when none does."""
    chain = [job.group, *job.fallbacks]
    live = gw.live.groups
    if job.group not in live:
        try:
            live = await gw.live.refresh()  # the view may be a second old: look again
        except BrokerUnavailable:
            raise Unavailable("The queue is unreachable (Redis is down); retry shortly.") from None
    # Prefer a group that is served and not cooling down; a cooling one still beats none.
    usable = [g for g in chain if g in live and g not in gw.live.cooling] or [
        g for g in chain if g in live
    ]
    for i, group in enumerate(chain):
        if usable and group == usable[0]:
            if i == 0:
                return job
            return job.model_copy(update={"group": group, "fallbacks": chain[i + 1 :]})
    raise Unavailable(
        f"No worker is serving model group {', '.join(chain)} right now "
        f"(start one with: inferq worker --group {chain[0]}).",
        code="no_worker",
    )


async def _submit(gw: Gateway, job: Job) -> ReplyStream:
    """Listen for the job's replies, then enqueue it (never the other way round)."""
    replies = gw.dispatcher.open(job.id)
    try:
        fabric = gw.config.fabric
        acks = ReplicaAcks.of(fabric)
        await enqueue(gw.redis, gw.keys, job, fabric.queue_limit, acks, admission=gw.admission)
    except QueueFull as exc:
        gw.dispatcher.close(job.id)
        raise GatewayError(
            f"Model group {exc.group} is at capacity ({exc.depth} requests queued); retry shortly.",
            status=429,
            type="rate_limit_error",
            code="queue_full",
            headers={"retry-after": str(RETRY_AFTER)},
        ) from None
    except BrokerError:
        gw.dispatcher.close(job.id)
        raise Unavailable("The queue is unreachable or refused the job; retry shortly.") from None
    return replies


async def next_reply(replies: ReplyStream, job: Job) -> Reply:
    """The job's next reply, or GatewayTimeout / UpstreamError (502) when none can come."""
    try:
        async with asyncio.timeout(job.deadline + _GRACE - time.time()):
            return await replies.next()
    except TimeoutError:
        raise GatewayTimeout(
            f"No answer for model {job.model} before the request's deadline.", code="timeout"
        ) from None
    except ReplyLost as exc:
        raise UpstreamError(f"The answer was interrupted: {exc}", status=502) from None
