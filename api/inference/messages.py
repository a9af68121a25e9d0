"""`POST /v1/messages`: Anthropic's Messages API in and out, served by any model group.

The request becomes an OpenAI chat job (so any backend can serve it); the answer is written
back in Anthropic's shape, streamed as Anthropic's events. Clients of the official `anthropic`
SDK point `base_url` at inferq.
"""

from collections.abc import Iterable
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from inferq.api.errors import GatewayError
from inferq.api.inference.cache import plan
from inferq.api.inference.flow import begin
from inferq.api.inference.relay import sse
from inferq.api.inference.requests import make_job, parse_body, validate
from inferq.api.middleware.access import finish_response, request_id
from inferq.api.state import gateway
from inferq.api.tenants.principal import principal_of
from inferq.broker.bodies import GatewayOptions
from inferq.broker.messages import Job, JobKind, Reply

STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class AnthropicMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(GatewayOptions):
    """The Messages request, as far as the gateway needs to understand it."""

    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


async def messages(request: Request) -> Response:
    """Serve one Messages request through the queue."""
    try:
        return await _messages(request)
    except GatewayError as exc:
        return finish_response(request.scope, anthropic_error(exc), exc.type)


async def _messages(request: Request) -> Response:
    gw = gateway(request)
    data = parse_body(await request.body())
    req = validate(MessagesRequest, data)
    body = to_chat_body(req, data)
    rid = request_id(request.scope)
    key = principal_of(request.scope).key_id
    job = make_job(gw, JobKind.CHAT, req, body, request_id=rid, include_usage=True, key=key)
    cache = plan(gw.config, JobKind.CHAT, req.model, {**body, "model": req.model}, request.headers)
    started = await begin(request, gw, job, cache)
    if started is None:
        return Response(status_code=499)
    if not job.stream:
        message = orjson.dumps(to_message(job, started.first))
        return Response(message, media_type="application/json", headers=started.headers())
    return sse(gw, started, AnthropicStream(job))


def anthropic_error(exc: GatewayError) -> Response:
    """The error in Anthropic's format."""
    return exc.anthropic_response()


# ---- Anthropic request → OpenAI chat body -----------------------------------------------------


def to_chat_body(req: MessagesRequest, data: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request equivalent to a Messages request."""
    chat: list[dict[str, Any]] = []
    if req.system:
        chat.append({"role": "system", "content": _text_of(req.system)})
    for message in req.messages:
        chat += _chat_messages(message)
    body: dict[str, Any] = {"messages": chat, "max_tokens": req.max_tokens}
    # top_k is left out: OpenAI's API refuses it, and the backend is not known here.
    for key in ("temperature", "top_p"):
        if data.get(key) is not None:
            body[key] = data[key]
    if req.stop_sequences:
        body["stop"] = req.stop_sequences
    user = (data.get("metadata") or {}).get("user_id")
    if user:
        body["user"] = str(user)
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name", ""),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for t in req.tools
        ]
    if req.tool_choice:
        body.update(_tool_choice(req.tool_choice))
    return body


def _text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(str(b.get("text", "")) for b in content if b.get("type") == "text")


def _chat_messages(message: AnthropicMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input", {})).decode()
            calls.append(
                {"id": block.get("id", ""), "type": "function",
                 "function": {"name": block.get("name", ""), "arguments": arguments}}
            )  # fmt: skip
        elif kind == "tool_result":
            content = block.get("content", "")
            text = content if isinstance(content, str) else _text_of(content)
            out.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}
            )
    if message.role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        reply: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            reply["tool_calls"] = calls
        out.append(reply)
    elif parts:
        simple = all(p["type"] == "text" for p in parts)
        user: Any = "".join(p["text"] for p in parts) if simple else parts
        out.append({"role": "user", "content": user})
    return out


def _image_url(block: dict[str, Any]) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    return str(source.get("url", ""))


def _tool_choice(choice: dict[str, Any]) -> dict[str, Any]:
    kind = choice.get("type")
    out: dict[str, Any] = {}
    if kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    elif kind == "none":
        out["tool_choice"] = "none"
    else:
        out["tool_choice"] = "auto"
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


# ---- OpenAI answer → Anthropic message --------------------------------------------------------


def _usage(reply: Reply) -> dict[str, int]:
    usage = reply.usage or {}
    out = {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }
    for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):
        if usage.get(key):
            out[key] = int(usage[key])
    return out


def to_message(job: Job, reply: Reply) -> dict[str, Any]:
    """A non-stream OpenAI completion as an Anthropic message."""
    choice = ((reply.response or {}).get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
             "input": _json_object(function.get("arguments"))}
        )  # fmt: skip
    return {
        "id": f"msg_{job.id}",
        "type": "message",
        "role": "assistant",
        "model": job.model,
        "content": content,
        "stop_reason": STOP_REASON.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(reply),
    }


def _json_object(arguments: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


class AnthropicStream:
    """Anthropic's stream events from OpenAI chunks: message_start, content blocks, deltas,
    message_delta with stop reason and usage, message_stop."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._started = False
        self._block: int | None = None  # index of the open content block
        self._block_is_text = False
        self._blocks = 0
        self._tool: int | None = None  # OpenAI tool call index of the open tool_use block
        self._stop = "end_turn"

    def _start(self) -> Iterable[bytes]:
        if not self._started:
            self._started = True
            message: dict[str, Any] = {
                "id": f"msg_{self._job.id}", "type": "message", "role": "assistant",
                "model": self._job.model, "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
            }  # fmt: skip
            yield _event("message_start", {"message": message})

    def _open(self, block: dict[str, Any], text: bool) -> Iterable[bytes]:
        yield from self._close()
        self._block, self._block_is_text = self._blocks, text
        self._blocks += 1
        yield _event("content_block_start", {"index": self._block, "content_block": block})

    def _close(self) -> Iterable[bytes]:
        if self._block is not None:
            yield _event("content_block_stop", {"index": self._block})
            self._block = None

    def deltas(self, reply: Reply) -> Iterable[bytes]:
        """Events for one batch of OpenAI chunks (choice 0: Messages has one answer)."""
        yield from self._start()
        for choices in reply.chunks or ():
            for choice in choices:
                if choice.get("index", 0) == 0:
                    yield from self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> Iterable[bytes]:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            if self._block is None or not self._block_is_text:
                yield from self._open({"type": "text", "text": ""}, text=True)
            yield _event(
                "content_block_delta",
                {"index": self._block, "delta": {"type": "text_delta", "text": delta["content"]}},
            )
        for call in delta.get("tool_calls") or []:
            function = call.get("function") or {}
            index = call.get("index", 0)
            if self._block is None or self._block_is_text or index != self._tool:
                self._tool = index  # a new call (keyed by index: some servers repeat the id)
                block = {"type": "tool_use", "id": call.get("id") or f"toolu_{index}",
                         "name": function.get("name", ""), "input": {}}  # fmt: skip
                yield from self._open(block, text=False)
            if function.get("arguments"):
                partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
                yield _event("content_block_delta", {"index": self._block, "delta": partial})
        if choice.get("finish_reason"):
            self._stop = STOP_REASON.get(choice["finish_reason"], "end_turn")

    def done(self, reply: Reply) -> Iterable[bytes]:
        """Close the last block, then message_delta (stop reason, usage) and message_stop."""
        yield from self._start()
        yield from self._close()
        delta = {"stop_reason": self._stop, "stop_sequence": None}
        yield _event("message_delta", {"delta": delta, "usage": _usage(reply)})
        yield _event("message_stop", {})

    def error(self, error: GatewayError) -> bytes:
        """Anthropic's error event."""
        return _event("error", {"error": {"type": error.type, "message": error.message}})
