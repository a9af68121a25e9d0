"""Response objects: a chat answer written back as the Responses API's `response`.

The same builder serves a non-stream answer (from the whole completion), the stream's first
events (empty, `in_progress`) and its `response.completed` (from the items the stream built).
"""

import time
from typing import Any

from inferq.api.responses.request import ResponsesRequest
from inferq.broker.messages import Job, Reply


def response_id(job: Job) -> str:
    """The id clients see, and the key a stored response is kept under."""
    return f"resp_{job.id}"


def message_item(job: Job, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant message output item holding `text`."""
    return {
        "type": "message",
        "id": f"msg_{job.id}",
        "status": status,
        "role": "assistant",
        "content": [text_part(text)] if status == "completed" else [],
    }


def text_part(text: str) -> dict[str, Any]:
    """An `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    job: Job, index: int, call_id: str, name: str, arguments: str, *, status: str = "completed"
) -> dict[str, Any]:
    """A `function_call` output item."""
    return {
        "type": "function_call",
        "id": f"fc_{job.id}_{index}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(job: Job, reply: Reply) -> tuple[list[dict[str, Any]], str | None]:
    """The output items of a non-stream chat answer, and its finish reason."""
    choice = ((reply.response or {}).get("choices") or [{}])[0]
    message = choice.get("message") or {}
    items: list[dict[str, Any]] = []
    if message.get("content"):
        items.append(message_item(job, str(message["content"])))
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        items.append(
            call_item(job, i, str(call.get("id") or f"call_{job.id}_{i}"),
                      str(function.get("name") or ""),
                      arguments if isinstance(arguments, str) else "{}")
        )  # fmt: skip
    return items, choice.get("finish_reason")


def usage(reply: Reply | None) -> dict[str, Any] | None:
    """The Responses usage object from a chat usage object."""
    found = (reply.usage if reply else None) or None
    if not found:
        return None
    prompt = int(found.get("prompt_tokens") or 0)
    completion = int(found.get("completion_tokens") or 0)
    details = found.get("prompt_tokens_details") or {}
    reasoning = (found.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(details.get("cached_tokens") or 0),
            "cache_write_tokens": int(found.get("cache_creation_input_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(found.get("total_tokens") or prompt + completion),
    }


def response_object(
    job: Job,
    req: ResponsesRequest,
    output: list[dict[str, Any]],
    *,
    status: str,
    finish: str | None = None,
    reply: Reply | None = None,
) -> dict[str, Any]:
    """The Response object: the request's settings echoed, the output and usage."""
    incomplete = None
    if status == "completed" and finish == "length":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    elif status == "completed" and finish == "content_filter":
        status, incomplete = "incomplete", {"reason": "content_filter"}
    text = req.text.model_dump(by_alias=True, exclude_none=True) if req.text else {}
    return {
        "id": response_id(job),
        "object": "response",
        "created_at": int(job.created),
        "status": status,
        "completed_at": int(time.time()) if status != "in_progress" else None,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": job.model,
        "output": output,
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "reasoning": req.reasoning,
        "store": req.store,
        "temperature": req.temperature,
        "text": {"format": {"type": "text"}, **text},
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "tools": req.tools or [],
        "top_p": req.top_p,
        "truncation": "disabled",
        "usage": usage(reply),
        "user": req.user,
        "metadata": req.metadata or {},
    }


def assistant_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The output items as the chat messages a later turn sends back: one assistant message
    with its text and tool calls."""
    text = "".join(
        part.get("text", "")
        for item in output
        if item["type"] == "message"
        for part in item.get("content", [])
    )
    calls = [
        {"id": item["call_id"], "type": "function",
         "function": {"name": item["name"], "arguments": item["arguments"]}}
        for item in output
        if item["type"] == "function_call"
    ]  # fmt: skip
    if not text and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": text}  # "" beside tool calls
    if calls:
        message["tool_calls"] = calls
    return [message]
