"""OpenAI responses from a job's replies: JSON bodies, SSE chunks, headers."""

from collections.abc import Iterable
from typing import Any

import orjson

from inferq.api.errors import GatewayError
from inferq.broker.messages import ErrorInfo, Job, JobKind, Reply

DONE_EVENT = b"data: [DONE]\n\n"

_ID_PREFIX = {JobKind.CHAT: "chatcmpl-", JobKind.COMPLETION: "cmpl-", JobKind.EMBEDDING: "emb-"}
_OBJECT = {JobKind.CHAT: "chat.completion", JobKind.COMPLETION: "text_completion"}
_CHUNK_OBJECT = {JobKind.CHAT: "chat.completion.chunk", JobKind.COMPLETION: "text_completion"}


def response_id(job: Job) -> str:
    """The id clients see in the body (`x-request-id` is the request id, not this)."""
    return _ID_PREFIX[job.kind] + job.id


def route_headers(job: Job, reply: Reply) -> dict[str, str]:
    """Which group and deployment served, like LiteLLM's `x-litellm-*` headers."""
    headers = {"x-request-id": job.request_id or job.id, "x-inferq-attempts": str(reply.attempts)}
    if reply.group:
        headers["x-inferq-model-group"] = reply.group
    if reply.deployment:
        headers["x-inferq-deployment"] = reply.deployment
    if reply.usage_source:
        headers["x-inferq-usage-source"] = reply.usage_source
    if reply.cost is not None:
        headers["x-inferq-response-cost"] = f"{reply.cost:.8f}".rstrip("0").rstrip(".") or "0"
    return headers


def response_body(job: Job, reply: Reply) -> bytes:
    """The non-stream body, named as the client asked."""
    body = dict(reply.response or {})
    if job.kind is JobKind.EMBEDDING:
        body["object"] = "list"
    else:
        body["id"] = response_id(job)
        body["object"] = _OBJECT[job.kind]
        body["created"] = int(job.created)
    body["model"] = job.model
    if reply.usage:
        body["usage"] = reply.usage
    return orjson.dumps(body)


def error_body(error: ErrorInfo) -> dict[str, Any]:
    """The OpenAI error object for an error a worker reported."""
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code if error.code is not None else str(error.status),
        }
    }


class OpenAIStream:
    """SSE events for one OpenAI stream; the constant part of every chunk is encoded once."""

    def __init__(self, job: Job) -> None:
        self._job = job
        head = {
            "id": response_id(job),
            "object": _CHUNK_OBJECT[job.kind],
            "created": int(job.created),
            "model": job.model,
        }
        # `{"id":...,"model":"x"` + `,"choices":` — the choices are appended per event.
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":'

    def deltas(self, reply: Reply) -> Iterable[bytes]:
        """One chunk event per coalesced item."""
        for choices in reply.chunks or ():
            yield self._prefix + orjson.dumps(choices) + b"}\n\n"

    def done(self, reply: Reply) -> Iterable[bytes]:
        """The usage chunk (with `stream_options.include_usage`), then `[DONE]`."""
        if self._job.include_usage and reply.usage:
            yield self._prefix + b'[],"usage":' + orjson.dumps(reply.usage) + b"}\n\n"
        yield DONE_EVENT

    def error(self, error: GatewayError) -> bytes:
        """An error event: the OpenAI SDK raises it as an APIError."""
        return b"data: " + orjson.dumps(error.body()) + b"\n\n"
