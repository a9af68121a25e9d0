"""OpenAI ↔ Anthropic translation, checked against the Messages API reference's own examples."""

import orjson

from inferq.config import parse_config
from inferq.workers.providers.anthropic_wire import (
    StreamTranslator,
    to_completion,
    to_messages_request,
)

DEPLOYMENT = parse_config(
    "model_list:\n  - model_name: c\n    litellm_params: {model: anthropic/claude-x, api_key: k}\n",
    env={},
).groups["c"][0]


def test_request_translation_covers_system_images_tools_and_alternation() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "One."},
            {"role": "developer", "content": "Two."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}},
            ]},
            {"role": "user", "content": "And quickly."},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "stop": "END",
        "temperature": 0.3,
        "user": "u-1",
    }  # fmt: skip
    out = to_messages_request(body, "claude-x", stream=True)
    assert out["system"] == "One.\n\nTwo."
    assert out["max_tokens"] == 4096
    assert out["stream"] is True
    assert len(out["messages"]) == 1  # two user turns merged: Anthropic needs alternation
    blocks = out["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.org/cat.png"},
    }
    assert blocks[3] == {"type": "text", "text": "And quickly."}
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["temperature"] == 0.3


def test_response_translation_maps_finish_and_usage() -> None:
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "max_tokens",
        "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 4},
    }  # fmt: skip
    out = to_completion(message)
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hi"}
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["prompt_tokens"] == 14
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}


# The tool-use stream of the Messages API reference ("Streaming request with tool use").
REFERENCE_STREAM = [
    {"type": "message_start", "message": {"id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message",
     "role": "assistant", "model": "claude-x", "stop_sequence": None,
     "usage": {"input_tokens": 472, "output_tokens": 2}, "content": [], "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ", let's check"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use",
     "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " \"San Francisco, CA\"}"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
]  # fmt: skip


def test_reference_tool_use_stream_becomes_openai_chunks() -> None:
    translator = StreamTranslator()
    chunks = [c for e in REFERENCE_STREAM for c in translator.feed(e, DEPLOYMENT)]
    assert translator.done
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Okay, let's check"
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(tc["function"]["arguments"] for tc in calls)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
    assert chunks[-1]["usage"]["prompt_tokens"] == 472
    assert chunks[-1]["usage"]["completion_tokens"] == 89


def test_overloaded_error_event_is_retryable() -> None:
    translator = StreamTranslator()
    event = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    try:
        translator.feed(event, DEPLOYMENT)
    except Exception as exc:  # the provider error the worker retries
        assert getattr(exc, "retryable", False)
        assert "overloaded_error" in str(exc)
    else:
        raise AssertionError("an error event must raise")
