"""What real backends send, in each wire format: bodies and stream events for the fakes.

Shapes follow the providers' API references: OpenAI chat completions (with tool calls), text
completions and embeddings; Anthropic Messages (text and tool_use, non-stream and the
`message_start` … `message_stop` event stream).
"""

import time
from typing import Any

import orjson

TOOL_ARGUMENTS = ['{"city": ', '"Paris"}']


def openai_tool_call(body: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion whose answer calls the first tool offered."""
    name = body["tools"][0]["function"]["name"]
    call = {
        "id": "call_fake1",
        "type": "function",
        "function": {"name": name, "arguments": "".join(TOOL_ARGUMENTS)},
    }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
    }


def openai_tool_call_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The same call streamed: id and name first, then the arguments in pieces."""
    name = body["tools"][0]["function"]["name"]
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    first = {"index": 0, "id": "call_fake1", "type": "function",
             "function": {"name": name, "arguments": ""}}  # fmt: skip
    chunks = [chunk({"role": "assistant", "content": None}), chunk({"tool_calls": [first]})]
    for piece in TOOL_ARGUMENTS:
        chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    chunks.append(chunk({}, "tool_calls"))
    return chunks


def text_completion(body: dict[str, Any], words: list[str]) -> dict[str, Any]:
    """A legacy text_completion."""
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {"index": 0, "text": "".join(words), "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": len(words),
            "total_tokens": 3 + len(words),
        },
    }


def text_completion_chunks(words: list[str]) -> list[dict[str, Any]]:
    """A text completion streamed word by word."""
    base = {"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": "m"}
    chunks = [
        {**base, "choices": [{"index": 0, "text": w, "logprobs": None, "finish_reason": None}]}
        for w in words
    ]
    chunks.append({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    return chunks


def embeddings(body: dict[str, Any], per_token: bool) -> dict[str, Any]:
    """One vector per input, or (like llama.cpp with SmolLM2) one vector per token."""
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = []
    for i, text in enumerate(inputs):
        vector = [float(len(str(text))), 1.0, 0.0]
        embedding: Any = [vector, [v * 3 for v in vector]] if per_token else vector
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)},
    }


ANTHROPIC_USAGE = {
    "input_tokens": 25,
    "output_tokens": 11,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 7,
}


def anthropic_message(body: dict[str, Any], words: list[str]) -> dict[str, Any]:
    """A Messages response: text, or a tool_use block when tools were offered."""
    if body.get("tools"):
        content: list[dict[str, Any]] = [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_fake1", "name": body["tools"][0]["name"],
             "input": {"city": "Paris"}},
        ]  # fmt: skip
        stop = "tool_use"
    else:
        content, stop = [{"type": "text", "text": "".join(words)}], "end_turn"
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }


def anthropic_count(body: dict[str, Any]) -> dict[str, Any]:
    """count_tokens: a figure no local estimate would give (1000 + 10 per message)."""
    return {"input_tokens": 1000 + 10 * len(body.get("messages") or [])}


def _text(text: str) -> dict[str, str]:
    return {"type": "text_delta", "text": text}


def anthropic_events(body: dict[str, Any], words: list[str]) -> list[bytes]:
    """The Messages event stream for the same answer, as `event:`/`data:` pairs."""
    start_usage = {k: v for k, v in ANTHROPIC_USAGE.items() if k != "output_tokens"}
    message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {**start_usage, "output_tokens": 1}}  # fmt: skip
    events = [("message_start", {"message": message}), ("ping", {})]
    if body.get("tools"):
        tool = {
            "type": "tool_use",
            "id": "toolu_fake1",
            "name": body["tools"][0]["name"],
            "input": {},
        }
        events += [
            ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"index": 0, "delta": _text("Let me ")}),
            ("content_block_delta", {"index": 0, "delta": _text("check.")}),
            ("content_block_stop", {"index": 0}),
            ("content_block_start", {"index": 1, "content_block": tool}),
        ]  # fmt: skip
        for piece in TOOL_ARGUMENTS:
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(("content_block_delta", {"index": 1, "delta": delta}))
        events.append(("content_block_stop", {"index": 1}))
        stop = "tool_use"
    else:
        events.append(
            ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        )
        for w in words:
            events.append(
                ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
            )
        events.append(("content_block_stop", {"index": 0}))
        stop = "end_turn"
    events += [
        ("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]}}),
        ("message_stop", {}),
    ]  # fmt: skip
    return [
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"
        for name, data in events
    ]
