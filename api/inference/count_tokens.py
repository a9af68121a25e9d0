"""`POST /v1/messages/count_tokens`: Anthropic's token count for a Messages prompt.

The count is a job like any other, so only workers call backends: an Anthropic deployment asks
its backend's own count_tokens; others answer with the local estimate the worker uses for usage
when a backend reports none, marked `"estimate": true` (and `x-inferq-usage-source: counted`).
"""

from typing import Any, Literal

import orjson
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from inferq.api.errors import GatewayError
from inferq.api.inference.flow import begin
from inferq.api.inference.messages import MessagesRequest, anthropic_error, to_chat_body
from inferq.api.inference.requests import make_job, parse_body, validate
from inferq.api.middleware.access import finish_response, request_id
from inferq.api.state import gateway
from inferq.api.tenants.principal import principal_of
from inferq.broker.messages import JobKind


class CountTokensRequest(MessagesRequest):
    """A Messages request without `max_tokens`: nothing is generated."""

    max_tokens: int = Field(default=1, ge=1)
    stream: Literal[False] = False


async def count_tokens(request: Request) -> Response:
    """Count the prompt's tokens through the queue."""
    try:
        return await _count(request)
    except GatewayError as exc:
        return finish_response(request.scope, anthropic_error(exc), exc.type)


async def _count(request: Request) -> Response:
    gw = gateway(request)
    data = parse_body(await request.body())
    req = validate(CountTokensRequest, data)
    body = to_chat_body(req, data)
    body.pop("max_tokens", None)
    key = principal_of(request.scope).key_id
    job = make_job(gw, JobKind.TOKENS, req, body, request_id=request_id(request.scope), key=key)
    started = await begin(request, gw, job, None)
    if started is None:
        return Response(status_code=499)
    reply = started.first
    answer: dict[str, Any] = {"input_tokens": int((reply.response or {}).get("input_tokens", 0))}
    if reply.usage_source != "backend":
        answer["estimate"] = True
    return Response(orjson.dumps(answer), media_type="application/json", headers=started.headers())
