"""The path every inference route shares: build the job, listen, enqueue, await, relay.

Routes (chat, completions, embeddings, Anthropic messages) differ only in how they read the
request and how they write the answer; everything between is here.
"""

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import orjson
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse
from starlette.requests import Request

from api.cache import CachePlan, entry, replay
from api.errors import GatewayError, GatewayTimeout, InvalidRequest, Unavailable, UpstreamError
from api.replies import route_headers
from api.schemas import GatewayOptions
from api.state import Gateway
from api.usage import Tracker
from broker.errors import BrokerError, BrokerUnavailable, QueueFull, ReplyAborted, ReplyLost
from broker.messages import Job, JobKind, Reply, ReplyKind
from broker.queue import enqueue
from broker.replies import ReplyStream
from config.errors import error_path

log = logging.getLogger("inferq.api")

# Request fields that steer the gateway (LiteLLM's, mostly) and never reach a backend.
# `api_base`/`api_key`/`base_url` in particular must not let a client redirect a deployment.
GATEWAY_FIELDS = frozenset(
    {
        "model", "stream", "timeout", "stream_timeout", "num_retries", "fallbacks",
        "disable_fallbacks", "context_window_fallback_dict", "cache", "caching", "metadata",
        "mock_response", "api_key", "api_base", "base_url", "api_version",
    }
)  # fmt: skip

# Extra wait past a job's deadline, so the worker's own timeout error arrives first.
_GRACE = 1.0
# Seconds a client refused with 429 is told to wait.
RETRY_AFTER = 1
# Seconds streams in flight may run on after SIGTERM (uvicorn's own limit is 30).
SHUTDOWN_GRACE = 25.0


class ClientGone(Exception):
    """The client disconnected before its answer began; the job was cancelled."""


class StreamWriter(Protocol):
    """How a route writes a streamed answer as SSE events."""

    def deltas(self, reply: Reply) -> Iterable[bytes]:
        """Events for one DELTA reply."""
        ...

    def done(self, reply: Reply) -> Iterable[bytes]:
        """Events that end a successful stream."""
        ...

    def error(self, error: GatewayError) -> bytes:
        """The event that ends a failed stream."""
        ...


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: dict[str, Any]) -> M:
    """`data` as `model`, or a 400 naming the first bad field OpenAI-style (`messages.0.role`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = error_path(err["loc"]).replace("[", ".").replace("]", "")
        message = "missing required field" if err["type"] == "missing" else err["msg"]
        raise InvalidRequest(f"Invalid request: {param}: {message}", param=param or None) from None


def make_job(
    gw: Gateway,
    kind: JobKind,
    options: GatewayOptions,
    body: dict[str, Any],
    *,
    include_usage: bool = False,
) -> Job:
    """The job for a validated request: its chain of groups, deadline and reply address."""
    config = gw.config
    route = config.route(options.model)
    if route is None:
        raise unknown_model(gw, options.model)
    tail: list[str] = list(route.chain[1:])
    if options.disable_fallbacks:
        tail = []
    elif options.fallbacks is not None:
        tail = []
        for name in options.fallbacks:
            fallback = config.route(name)
            if fallback is None:
                raise unknown_model(gw, name, param="fallbacks")
            tail += [g for g in fallback.chain if g not in tail]
    ordered = dict.fromkeys([route.chain[0], *tail])
    chain = [g for g in ordered if config.unavailable_reason(g) is None]
    if not chain:
        reasons = "; ".join(f"{g}: {config.unavailable_reason(g)}" for g in route.chain)
        raise Unavailable(f"Model {options.model} cannot be served right now ({reasons}).")
    within = [g for g in chain if g not in gw.budgets.blocked]
    if not within:
        reasons = "; ".join(gw.budgets.blocked[g] for g in chain)
        raise GatewayError(
            f"Model {options.model} is over budget ({reasons}).",
            status=429,
            type="budget_exceeded",
            code="budget_exceeded",
        )
    now = time.time()
    timeout = options.timeout or config.router.timeout or config.fabric.default_timeout
    return Job(
        id=secrets.token_hex(12),
        kind=kind,
        model=options.model,
        group=within[0],
        fallbacks=within[1:],
        body={k: v for k, v in body.items() if k not in GATEWAY_FIELDS},
        stream=options.stream,
        include_usage=include_usage,
        reply_to=gw.dispatcher.channel,
        created=now,
        deadline=now + timeout,
        num_retries=options.num_retries,
        stream_timeout=options.stream_timeout,
    )


def unknown_model(gw: Gateway, name: str, param: str = "model") -> InvalidRequest:
    """The 400 for a model name no group or alias answers to."""
    available = ", ".join(gw.config.public_models())
    return InvalidRequest(
        f"Invalid model name passed in {param}={name}. Available models: {available}",
        param=param,
        code="model_not_found",
    )


@dataclass
class Started:
    """An answer that has begun: its first reply, the rest to come, and the cache's part."""

    job: Job
    first: Reply
    replies: ReplyStream
    cache: CachePlan | None = None
    hit: bool = False
    tracker: Tracker | None = None

    def headers(self) -> dict[str, str]:
        """Routing headers, plus `x-inferq-cache` when the cache was consulted."""
        headers = route_headers(self.job, self.first)
        if self.cache is not None:
            headers["x-inferq-cache"] = "hit" if self.hit else "miss"
        return headers


async def begin(request: Request, gw: Gateway, job: Job, cache: CachePlan | None) -> Started | None:
    """`start`, with the request's usage tracked whichever way it ends; None when the client
    left before its answer began (reply 499)."""
    tracker = gw.usage.track(request, job)
    try:
        started = await start(request, gw, job, cache)
    except ClientGone:
        tracker.failed(499, "client_disconnected")
        return None
    except GatewayError as exc:
        tracker.failed(exc.status, exc.type)
        raise
    if job.stream:
        started.tracker = tracker  # the stream records its end itself
    else:
        tracker.done(started.first, started.hit)
    return started


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
        _store(gw, job, cache, [], started.first)
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
        log.warning("cache unavailable for job %s: %s", job.id, exc)
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


def _store(gw: Gateway, job: Job, cache: CachePlan, deltas: list[Reply], done: Reply) -> None:
    """Keep a complete, successful answer (in the background: the client does not wait)."""
    data = entry(job.kind, deltas, done)
    gw.background(gw.cache.put(cache.digest, data, cache.ttl, cache.namespace))


async def _start_live(request: Request, gw: Gateway, job: Job, cache: CachePlan | None) -> Started:
    job = await _with_live_worker(gw, job)
    replies = await _submit(gw, job)
    watcher = asyncio.ensure_future(_client_gone(request, replies))
    try:
        first = await next_reply(replies, job)
    except ReplyAborted:
        gw.abandon(job.id)
        log.info("job %s: client disconnected while waiting; cancelled", job.id)
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
        raise UpstreamError(e.message, status=e.status, type=e.type, code=e.code, param=e.param)
    return Started(job, first, replies, cache)


def sse(gw: Gateway, started: Started, writer: StreamWriter) -> EventSourceResponse:
    """The streamed answer as an SSE response."""
    return EventSourceResponse(
        _events(gw, started, writer),
        headers=started.headers(),
        ping=15,
        sep="\n",
        # On SIGTERM, streams in flight get this long to finish before they are cut.
        shutdown_event=anyio.Event(),
        shutdown_grace_period=SHUTDOWN_GRACE,
    )


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
        await enqueue(gw.redis, gw.keys, job, limit=gw.config.fabric.queue_limit)
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


class _Outcome:
    """What a live stream's end means for the cache (store the answer or release the flight)
    and for usage (record how it ended), whichever way it ends."""

    def __init__(self, gw: Gateway, started: Started) -> None:
        self._gw = gw
        self._started = started
        cache = started.cache
        self._cache = cache if cache and cache.store and not started.hit else None
        self._deltas: list[Reply] = []
        self.ended = False

    def delta(self, reply: Reply) -> None:
        if self._started.tracker:
            self._started.tracker.first_output()
        if self._cache:
            self._deltas.append(reply)

    def done(self, reply: Reply) -> None:
        self.ended = True
        if self._cache:
            _store(self._gw, self._started.job, self._cache, self._deltas, reply)
        if self._started.tracker:
            self._started.tracker.done(reply, self._started.hit)

    def error(self, status: int, kind: str, reply: Reply | None = None) -> None:
        self.ended = True
        self._release()
        if self._started.tracker:
            self._started.tracker.failed(status, kind, reply)

    def abandoned(self) -> None:
        if not self.ended:
            self.error(499, "client_disconnected")

    def _release(self) -> None:
        if self._cache:
            job = self._started.job
            self._gw.background(
                self._gw.cache.end_flight(self._cache.digest, job.id, self._cache.namespace)
            )


async def _events(gw: Gateway, started: Started, writer: StreamWriter) -> AsyncIterator[bytes]:
    """SSE events until the terminal reply; a stream always ends in its end or an error."""
    job, replies, reply = started.job, started.replies, started.first
    outcome = _Outcome(gw, started)
    try:
        while True:
            if reply.kind is ReplyKind.DELTA:
                outcome.delta(reply)
                for event in writer.deltas(reply):
                    yield event
            elif reply.kind is ReplyKind.DONE:
                outcome.done(reply)
                for event in writer.done(reply):
                    yield event
                return
            else:
                assert reply.error is not None
                e = reply.error
                outcome.error(e.status, e.type, reply)
                yield writer.error(
                    UpstreamError(e.message, status=e.status, type=e.type, code=e.code)
                )
                return
            try:
                reply = await next_reply(replies, job)
            except GatewayError as exc:
                outcome.error(exc.status, exc.type)
                yield writer.error(exc)
                return
    finally:
        outcome.abandoned()
        if reply.kind is not ReplyKind.DELTA:
            gw.dispatcher.close(job.id)
        elif not started.hit:
            gw.abandon(job.id)  # client gone, deadline passed or reply lost: free the worker
