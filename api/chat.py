"""`POST /v1/chat/completions`: validate, enqueue on the group's stream, relay the replies."""

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from api.errors import GatewayError, GatewayTimeout, InvalidRequest, Unavailable, UpstreamError
from api.replies import DONE_EVENT, ChunkEncoder, completion_body, error_body, route_headers
from api.schemas import ChatCompletionRequest
from api.state import Gateway, gateway
from broker.errors import BrokerError, BrokerUnavailable, QueueFull, ReplyAborted, ReplyLost
from broker.messages import Job, Reply, ReplyKind
from broker.queue import enqueue
from broker.replies import ReplyStream
from config.errors import error_path

log = logging.getLogger("inferq.api")

# Request fields that steer the gateway (LiteLLM's, mostly) and never reach a backend.
# `api_base`/`api_key`/`base_url` in particular must not let a client redirect a deployment.
GATEWAY_FIELDS = frozenset(
    {
        "model",
        "stream",
        "timeout",
        "stream_timeout",
        "num_retries",
        "fallbacks",
        "disable_fallbacks",
        "context_window_fallback_dict",
        "cache",
        "caching",
        "metadata",
        "mock_response",
        "api_key",
        "api_base",
        "base_url",
        "api_version",
    }
)

# Extra wait past a job's deadline, so the worker's own timeout error arrives first.
_GRACE = 1.0
# Seconds a client refused with 429 is told to wait.
RETRY_AFTER = 1
# Seconds streams in flight may run on after SIGTERM (uvicorn's own limit is 30).
SHUTDOWN_GRACE = 25.0


async def chat_completions(request: Request) -> Response:
    """Serve one chat completion through the queue."""
    gw = gateway(request)
    if not gw.dispatcher.ready:
        raise Unavailable("The queue is unreachable (Redis is down); retry shortly.")
    data = _parse_body(await request.body())
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None
    job = await _with_live_worker(gw, _make_job(gw, req, data))
    replies = await _submit(gw, job)
    watcher = asyncio.ensure_future(_client_gone(request, replies))
    try:
        first = await _next(replies, job)
    except ReplyAborted:
        gw.abandon(job.id)
        log.info("job %s: client disconnected while waiting; cancelled", job.id)
        return Response(status_code=499)
    except BaseException:
        gw.dispatcher.close(job.id)
        raise
    finally:
        watcher.cancel()
    if first.kind is ReplyKind.ERROR:
        gw.dispatcher.close(job.id)
        raise _upstream(first)
    headers = route_headers(job, first)
    if not job.stream:
        gw.dispatcher.close(job.id)
        return Response(completion_body(job, first), media_type="application/json", headers=headers)
    return EventSourceResponse(
        _events(gw, job, replies, first),
        headers=headers,
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


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


def _invalid(exc: ValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    # The OpenAI convention for a nested parameter: `messages.0.role` (dots, no brackets).
    param = error_path(err["loc"]).replace("[", ".").replace("]", "")
    message = "missing required field" if err["type"] == "missing" else err["msg"]
    return InvalidRequest(f"Invalid request: {param}: {message}", param=param or None)


def _make_job(gw: Gateway, req: ChatCompletionRequest, data: dict[str, Any]) -> Job:
    config = gw.config
    route = config.route(req.model)
    if route is None:
        raise _unknown_model(gw, req.model)
    tail: list[str] = list(route.chain[1:])
    if req.disable_fallbacks:
        tail = []
    elif req.fallbacks is not None:
        tail = []
        for name in req.fallbacks:
            fallback = config.route(name)
            if fallback is None:
                raise _unknown_model(gw, name, param="fallbacks")
            tail += [g for g in fallback.chain if g not in tail]
    chain = [
        g for g in dict.fromkeys([route.chain[0], *tail]) if config.unavailable_reason(g) is None
    ]
    if not chain:
        reasons = "; ".join(f"{g}: {config.unavailable_reason(g)}" for g in route.chain)
        raise Unavailable(f"Model {req.model} cannot be served right now ({reasons}).")
    now = time.time()
    timeout = req.timeout or config.router.timeout or config.fabric.default_timeout
    return Job(
        id=secrets.token_hex(12),
        model=req.model,
        group=chain[0],
        fallbacks=chain[1:],
        body={k: v for k, v in data.items() if k not in GATEWAY_FIELDS},
        stream=req.stream,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        reply_to=gw.dispatcher.channel,
        created=now,
        deadline=now + timeout,
        num_retries=req.num_retries,
        stream_timeout=req.stream_timeout,
    )


def _unknown_model(gw: Gateway, name: str, param: str = "model") -> InvalidRequest:
    available = ", ".join(gw.config.public_models())
    return InvalidRequest(
        f"Invalid model name passed in {param}={name}. Available models: {available}",
        param=param,
        code="model_not_found",
    )


async def _with_live_worker(gw: Gateway, job: Job) -> Job:
    """Skip leading groups of the chain that no live worker serves; refuse when none does."""
    chain = [job.group, *job.fallbacks]
    live = gw.live.groups
    if job.group not in live:
        try:
            live = await gw.live.refresh()  # the view may be a second old: look again
        except BrokerUnavailable:
            raise Unavailable("The queue is unreachable (Redis is down); retry shortly.") from None
    for i, group in enumerate(chain):
        if group in live:
            if i == 0:
                return job
            return job.model_copy(update={"group": group, "fallbacks": chain[i + 1 :]})
    names = ", ".join(chain)
    raise Unavailable(
        f"No worker is serving model group {names} right now "
        f"(start one with: inferq worker --group {chain[0]}).",
        code="no_worker",
    )


async def _submit(gw: Gateway, job: Job) -> ReplyStream:
    """Listen for the job's replies, then enqueue it (never the other way round)."""
    if not gw.dispatcher.ready:
        raise Unavailable("The queue is unreachable (Redis is down); retry shortly.")
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


async def _next(replies: ReplyStream, job: Job) -> Reply:
    try:
        async with asyncio.timeout(job.deadline + _GRACE - time.time()):
            return await replies.next()
    except TimeoutError:
        raise GatewayTimeout(
            f"No answer from model group {job.group} before the request's deadline.",
            code="timeout",
        ) from None
    except ReplyLost as exc:
        raise UpstreamError(f"The answer was interrupted: {exc}", status=502) from None


def _upstream(reply: Reply) -> UpstreamError:
    assert reply.error is not None
    e = reply.error
    return UpstreamError(e.message, status=e.status, type=e.type, code=e.code, param=e.param)


async def _events(
    gw: Gateway, job: Job, replies: ReplyStream, first: Reply
) -> AsyncIterator[bytes]:
    """SSE events until the terminal reply; a stream always ends in [DONE] or an error event."""
    encoder = ChunkEncoder(job)
    reply = first
    finished = False
    try:
        while True:
            if reply.kind is ReplyKind.DELTA:
                for choices in reply.chunks or ():
                    yield encoder.choices(choices)
            elif reply.kind is ReplyKind.DONE:
                if job.include_usage and reply.usage:
                    yield encoder.usage(reply.usage)
                finished = True
                yield DONE_EVENT
                return
            else:
                assert reply.error is not None
                finished = True
                yield encoder.error(error_body(reply.error))
                return
            try:
                reply = await _next(replies, job)
            except (GatewayTimeout, UpstreamError) as exc:
                yield encoder.error(exc.body())
                return
    finally:
        if finished:
            gw.dispatcher.close(job.id)
        else:
            gw.abandon(job.id)  # client gone, deadline passed or reply lost: free the worker
