"""Anthropic's Messages wire format ↔ OpenAI's chat shapes (requests, responses, stream events).

Requests: system messages → `system`; text, image (base64 and URL) parts; tools and tool_choice;
assistant `tool_calls` → `tool_use` blocks, `tool` messages → `tool_result` blocks; `stop` →
`stop_sequences`; `max_tokens` always sent. Responses and stream events become OpenAI
completions and chunks, with finish reasons and usage (cache token counts kept) mapped.
"""

import time
from typing import Any

import orjson

from inferq.config import Deployment
from inferq.workers.errors import BackendFailed, BackendRejected, ProviderError
from inferq.workers.providers.base import Chunk

DEFAULT_MAX_TOKENS = 4096

FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}

# Request fields with the same meaning and name on both sides.
_SAME = ("temperature", "top_p", "top_k")


# ---- OpenAI request → Anthropic request ------------------------------------------------------


def to_messages_request(body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """Translate an OpenAI chat request body into an Anthropic Messages request."""
    system, messages = _messages(body.get("messages", []))
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens")
        or DEFAULT_MAX_TOKENS,
    }  # fmt: skip
    if system:
        out["system"] = system
    for key in _SAME:
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(t) for t in tools]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if stream:
        out["stream"] = True
    return out


def _messages(items: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """System text, and the conversation as alternating Anthropic messages."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in items:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_plain_text(message.get("content")))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id", ""),
                "content": _plain_text(message.get("content")),
            }
            _append(messages, "user", [block])
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(message))
        else:
            _append(messages, "user", _user_blocks(message.get("content")))
    if messages and messages[-1]["role"] == "assistant":
        # A prefill (an answer carried on): Anthropic refuses one ending in whitespace.
        last = messages[-1]["content"][-1]
        if last.get("type") == "text":
            last["text"] = last["text"].rstrip()
    return "\n\n".join(s for s in system if s), messages


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants alternating roles: consecutive messages of one role are merged, and
    rejects empty text blocks: they are left out, and so is a message left with nothing."""
    blocks = [b for b in blocks if b.get("type") != "text" or b.get("text")]
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _plain_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            blocks.append({"type": "image", "source": _image_source(url)})
    return blocks


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        header, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": header or "image/png", "data": data}
    return {"type": "url", "url": url}


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _plain_text(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        blocks.append(
            {"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
             "input": arguments}
        )  # fmt: skip
    return blocks


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or tool
    out = {
        "name": function.get("name", ""),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict):
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    else:
        out = {"type": "auto"}
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


# ---- Anthropic response → OpenAI response -----------------------------------------------------


def usage_of(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage as OpenAI's; cache reads and writes count as prompt tokens, and are
    kept under their own names too."""
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cache_read + cache_write
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def to_completion(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as an OpenAI `chat.completion`."""
    text = "".join(b.get("text", "") for b in message["content"] if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id", ""),
            "type": "function",
            "function": {
                "name": b.get("name", ""),
                "arguments": orjson.dumps(b.get("input", {})).decode(),
            },
        }
        for b in message["content"]
        if b.get("type") == "tool_use"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH.get(message.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": usage_of(message.get("usage") or {}),
    }


class StreamTranslator:
    """Turns Anthropic stream events into OpenAI chunks, one event at a time."""

    def __init__(self) -> None:
        self.done = False
        self._usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}  # content block index → tool call index

    def feed(self, event: dict[str, Any], deployment: Deployment) -> list[Chunk]:
        """The OpenAI chunks for one event (often none)."""
        kind = event.get("type")
        if kind == "message_start":
            self._usage.update((event.get("message") or {}).get("usage") or {})
            return [_chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            self._usage.update(event.get("usage") or {})
            reason = (event.get("delta") or {}).get("stop_reason")
            return [_chunk({}, FINISH.get(reason or "", "stop"))] if reason else []
        if kind == "message_stop":
            self.done = True
            return [{"choices": [], "usage": usage_of(self._usage)}]
        if kind == "error":
            raise _stream_error(event.get("error") or {}, deployment)
        return []  # ping, content_block_stop, unknown future events

    def _block_start(self, event: dict[str, Any]) -> list[Chunk]:
        block = event.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = len(self._tools)
            self._tools[int(event.get("index", 0))] = index
            call = {
                "index": index,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            return [_chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [_chunk({"content": block["text"]})]
        return []

    def _block_delta(self, event: dict[str, Any]) -> list[Chunk]:
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta":
            return [_chunk({"content": delta.get("text", "")})]
        if delta.get("type") == "input_json_delta":
            index = self._tools.get(int(event.get("index", 0)), 0)
            call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
            return [_chunk({"tool_calls": [call]})]
        return []  # thinking and signature deltas are not part of the OpenAI answer


def _chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _stream_error(error: dict[str, Any], deployment: Deployment) -> ProviderError:
    kind = str(error.get("type") or "api_error")
    message = f"{deployment.id}: {kind}: {error.get('message', '')}"
    if kind in ("overloaded_error", "api_error", "rate_limit_error"):
        return BackendFailed(message, status=503, code=kind)
    return BackendRejected(message, status=400, code=kind)
