"""The OpenAI inference routes: chat completions, text completions, embeddings."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.access import request_id
from api.cache import plan
from api.flow import begin
from api.relay import sse
from api.replies import OpenAIStream, response_body
from api.requests import make_job, parse_body, validate
from api.state import gateway
from broker.bodies import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, GatewayOptions
from broker.messages import JobKind


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
    job = make_job(gw, kind, req, data, request_id=request_id(request.scope), include_usage=usage)
    cache = plan(gw.config, kind, req.model, data, request.headers)
    started = await begin(request, gw, job, cache)
    if started is None:
        return Response(status_code=499)
    if not job.stream:
        body = response_body(job, started.first)
        return Response(body, media_type="application/json", headers=started.headers())
    return sse(gw, started, OpenAIStream(job))
