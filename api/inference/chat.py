"""The OpenAI inference routes: chat completions, text completions, embeddings."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferq.api.inference.cache import plan
from inferq.api.inference.flow import begin
from inferq.api.inference.relay import sse
from inferq.api.inference.replies import OpenAIStream, response_body
from inferq.api.inference.requests import make_job, parse_body, validate
from inferq.api.middleware.access import request_id
from inferq.api.state import gateway
from inferq.api.tenants.principal import principal_of
from inferq.broker.bodies import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    GatewayOptions,
)
from inferq.broker.messages import JobKind


async def chat_completions(request: Request) -> Response:
    """`POST /v1/chat/completions`."""
    data = parse_body(await request.body())
    req = validate(ChatCompletionRequest, data)
    usage = bool(req.stream_options and req.stream_options.include_usage)
    return await _serve(request, JobKind.CHAT, req, data, usage)


async def completions(request: Request) -> Response:
    """`POST /v1/completions`."""
    data = parse_body(await request.body())
    req = validate(CompletionRequest, data)
    usage = bool(req.stream_options and req.stream_options.include_usage)
    return await _serve(request, JobKind.COMPLETION, req, data, usage)


async def embeddings(request: Request) -> Response:
    """`POST /v1/embeddings`."""
    data = parse_body(await request.body())
    req = validate(EmbeddingRequest, data)
    return await _serve(request, JobKind.EMBEDDING, req, data, False)


async def _serve(
    request: Request, kind: JobKind, req: GatewayOptions, data: dict[str, Any], usage: bool
) -> Response:
    gw = gateway(request)
    key = principal_of(request.scope).key_id
    rid = request_id(request.scope)
    job = make_job(gw, kind, req, data, request_id=rid, include_usage=usage, key=key)
    cache = plan(gw.config, kind, req.model, data, request.headers)
    started = await begin(request, gw, job, cache)
    if started is None:
        return Response(status_code=499)
    if not job.stream:
        body = response_body(job, started.first)
        return Response(body, media_type="application/json", headers=started.headers())
    return sse(gw, started, OpenAIStream(job))
