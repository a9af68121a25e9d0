"""`POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`.

A response continues the conversation a stored one ended (`previous_response_id`), whichever API
process stored it; with `store` (the default, as in OpenAI's API) it is stored in turn.
"""

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inferq.api.errors import GatewayError, InvalidRequest
from inferq.api.inference.cache import plan
from inferq.api.inference.flow import begin
from inferq.api.inference.relay import sse
from inferq.api.inference.requests import make_job, parse_body, validate
from inferq.api.middleware.access import request_id
from inferq.api.responses.output import assistant_messages, output_items, response_object
from inferq.api.responses.request import ResponsesRequest, chat_body, input_messages
from inferq.api.responses.stream import ResponsesStream
from inferq.api.state import Gateway, gateway
from inferq.api.tenants.principal import principal_of
from inferq.broker.errors import BrokerError
from inferq.broker.messages import JobKind
from inferq.broker.responses import (
    StoredResponse,
    delete_response,
    load_response,
    save_response,
)

log = logging.getLogger("inferq.api")


class NoSuchResponse(GatewayError):
    """An id that names no stored response."""

    status = 404
    type = "invalid_request_error"


async def create_response(request: Request) -> Response:
    """Serve one Responses request through the queue, as a chat job."""
    gw = gateway(request)
    data = parse_body(await request.body())
    req = validate(ResponsesRequest, data)
    history: list[dict[str, Any]] = []
    me = principal_of(request.scope)
    if req.previous_response_id:
        previous = await load_response(gw.redis, gw.keys, req.previous_response_id)
        if previous is None or not me.may_see(previous.owner):
            raise InvalidRequest(
                f"Previous response with id '{req.previous_response_id[:100]}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        history = previous.messages
    turn = input_messages(req)
    if not turn and not history:
        raise InvalidRequest("Invalid request: input: missing required field", param="input")
    body = chat_body(req, history + turn)
    rid = request_id(request.scope)
    job = make_job(gw, JobKind.CHAT, req, body, request_id=rid, include_usage=True, key=me.key_id)
    cache = plan(gw.config, JobKind.CHAT, req.model, {**body, "model": req.model}, request.headers)
    started = await begin(request, gw, job, cache)
    if started is None:
        return Response(status_code=499)

    async def keep(response: dict[str, Any]) -> None:
        if req.store:
            messages = [*history, *turn, *assistant_messages(response["output"])]
            stored = StoredResponse(response=response, messages=messages, owner=me.token)
            await _save(gw, stored)

    if job.stream:
        return sse(gw, started, ResponsesStream(job, req, keep))
    output, finish = output_items(job, started.first)
    response = response_object(job, req, output, status="completed", finish=finish,
                               reply=started.first)  # fmt: skip
    await keep(response)
    return Response(orjson.dumps(response), media_type="application/json",
                    headers=started.headers())  # fmt: skip


async def _save(gw: Gateway, stored: StoredResponse) -> None:
    # The answer is complete either way: a store that fails costs the next turn its context
    # (which then says so), not this answer.
    try:
        await save_response(gw.redis, gw.keys, stored)
    except BrokerError as exc:
        log.warning("response %s not stored: %s", stored.response.get("id"), exc)


def _id(request: Request) -> str:
    response_id: str = request.path_params["response_id"]
    return response_id


async def retrieve_response(request: Request) -> Response:
    """`GET /v1/responses/{id}`: a stored response."""
    gw = gateway(request)
    response_id = _id(request)
    stored = await load_response(gw.redis, gw.keys, response_id)
    if stored is None or not principal_of(request.scope).may_see(stored.owner):
        raise NoSuchResponse(
            f"Response with id '{response_id[:100]}' not found.", param="response_id"
        )
    return JSONResponse(stored.response)


async def remove_response(request: Request) -> Response:
    """`DELETE /v1/responses/{id}`."""
    gw = gateway(request)
    response_id = _id(request)
    stored = await load_response(gw.redis, gw.keys, response_id)
    mine = stored is not None and principal_of(request.scope).may_see(stored.owner)
    if not mine or not await delete_response(gw.redis, gw.keys, response_id):
        raise NoSuchResponse(
            f"Response with id '{response_id[:100]}' not found.", param="response_id"
        )
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})
