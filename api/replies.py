"""Turning a job's reply messages into OpenAI responses: JSON bodies, SSE chunks, headers."""

from typing import Any

import orjson

from broker.messages import ErrorInfo, Job, Reply

DONE_EVENT = b"data: [DONE]\n\n"


def completion_id(job: Job) -> str:
    """The id clients see; it is also the request id in logs and headers."""
    return f"chatcmpl-{job.id}"


def route_headers(job: Job, reply: Reply) -> dict[str, str]:
    """Which group and deployment served, like LiteLLM's `x-litellm-*` headers."""
    headers = {"x-request-id": job.id, "x-inferq-attempts": str(reply.attempts)}
    if reply.group:
        headers["x-inferq-model-group"] = reply.group
    if reply.deployment:
        headers["x-inferq-deployment"] = reply.deployment
    return headers


def completion_body(job: Job, reply: Reply) -> bytes:
    """The non-stream `chat.completion` body, named as the client asked."""
    body = dict(reply.response or {})
    body["id"] = completion_id(job)
    body["object"] = "chat.completion"
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


class ChunkEncoder:
    """Builds SSE events for one stream; the constant part of every chunk is encoded once."""

    def __init__(self, job: Job) -> None:
        head = {
            "id": completion_id(job),
            "object": "chat.completion.chunk",
            "created": int(job.created),
            "model": job.model,
        }
        # `{"id":...,"model":"x"` + `,"choices":` — the choices are appended per event.
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":'

    def choices(self, choices: list[dict[str, Any]]) -> bytes:
        """One `chat.completion.chunk` event."""
        return self._prefix + orjson.dumps(choices) + b"}\n\n"

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The final usage chunk of `stream_options.include_usage`."""
        return self._prefix + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n"

    @staticmethod
    def error(error: dict[str, Any]) -> bytes:
        """An error event: the OpenAI SDK raises it as an APIError."""
        return b"data: " + orjson.dumps(error) + b"\n\n"
