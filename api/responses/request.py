"""A Responses request as the gateway reads it, and its translation into a chat body.

Input items become chat messages: messages (roles and content parts), `function_call` (an
assistant tool call) and `function_call_output` (a tool message); `instructions` lead as a
system message (they are not carried into later turns, as in OpenAI's API). Function tools,
`tool_choice`, `max_output_tokens`, sampling, `text.format` and `reasoning` map onto their chat
equivalents.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inferq.api.errors import InvalidRequest
from inferq.broker.bodies import GatewayOptions


class TextFormat(BaseModel):
    """`text.format`: plain text, any JSON object, or JSON matching a schema."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(BaseModel):
    """`text`."""

    model_config = ConfigDict(extra="allow")
    format: TextFormat | None = None


class ResponsesRequest(GatewayOptions):
    """`POST /v1/responses` as far as the gateway needs to understand it."""

    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: TextConfig | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool = True
    previous_response_id: str | None = None
    user: str | None = None


def input_messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    """This turn's input as chat messages (without the instructions)."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [{"role": "user", "content": req.input}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(req.input):
        _add_item(out, item, f"input.{i}")
    return out


def _add_item(out: list[dict[str, Any]], item: dict[str, Any], param: str) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        out.append(_message(item, param))
    elif kind == "function_call":
        call = {
            "id": _text_field(item, "call_id", param),
            "type": "function",
            "function": {
                "name": _text_field(item, "name", param),
                "arguments": _text_field(item, "arguments", param),
            },
        }
        last = out[-1] if out else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)  # one turn, several calls
        else:
            # Content "" rather than null: OpenAI takes either, llama.cpp's server only "".
            out.append({"role": "assistant", "content": "", "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _parts_text(output, param)
        out.append({"role": "tool", "tool_call_id": _text_field(item, "call_id", param),
                    "content": text})  # fmt: skip
    elif kind != "reasoning":  # a reasoning item has nothing a chat backend can take back
        raise InvalidRequest(
            f"Invalid request: {param}.type: input items of type {kind!r} are not supported "
            "(message, function_call and function_call_output are)",
            param=f"{param}.type",
        )


def _text_field(item: dict[str, Any], name: str, param: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Invalid request: {param}.{name}: a string is required", param=f"{param}.{name}"
        )
    return value


_ROLES = ("user", "system", "developer", "assistant")


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidRequest(
            f"Invalid request: {param}.role: must be one of {', '.join(_ROLES)}",
            param=f"{param}.role",
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(
            f"Invalid request: {param}.content: a string or a list of parts is required",
            param=f"{param}.content",
        )
    parts = [_part(p, f"{param}.content.{j}") for j, p in enumerate(content)]
    if role != "user" or all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "".join(p.get("text", "") for p in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text", "refusal"):
        return {"type": "text", "text": str(part.get("text") or part.get("refusal") or "")}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise InvalidRequest(
        f"Invalid request: {param}.type: content parts of type {kind!r} are not supported "
        "(input_text, output_text and input_image with an image_url are)",
        param=f"{param}.type",
    )


def _parts_text(parts: Any, param: str) -> str:
    if not isinstance(parts, list):
        raise InvalidRequest(
            f"Invalid request: {param}.output: a string or a list of parts is required",
            param=f"{param}.output",
        )
    return "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))


def chat_body(req: ResponsesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat request for `messages` (the conversation so far plus this turn's input)."""
    lead = [{"role": "system", "content": req.instructions}] if req.instructions else []
    body: dict[str, Any] = {"messages": lead + messages}
    if req.max_output_tokens is not None:
        body["max_tokens"] = req.max_output_tokens
    for key in ("temperature", "top_p", "parallel_tool_calls", "user"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.tools:
        body["tools"] = [_tool(t, i) for i, t in enumerate(req.tools)]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    response_format = _response_format(req.text)
    if response_format:
        body["response_format"] = response_format
    effort = (req.reasoning or {}).get("effort")
    if effort:
        body["reasoning_effort"] = effort  # chat's name for it; backends without it ignore it
    return body


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
        raise InvalidRequest(
            f"Invalid request: tools.{i}: only function tools (with a name) are supported, "
            f"not {tool.get('type')!r}",
            param=f"tools.{i}",
        )
    function: dict[str, Any] = {"name": tool["name"]}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    function.setdefault("parameters", {"type": "object", "properties": {}})
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> Any:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(
                "Invalid request: tool_choice: must be auto, none, required or a function",
                param="tool_choice",
            )
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest(
        "Invalid request: tool_choice: only {'type': 'function', 'name': ...} is supported",
        param="tool_choice",
    )


def _response_format(text: TextConfig | None) -> dict[str, Any] | None:
    form = text.format if text else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    if not form.name or form.schema_ is None:
        raise InvalidRequest(
            "Invalid request: text.format: json_schema needs a name and a schema",
            param="text.format",
        )
    schema: dict[str, Any] = {"name": form.name, "schema": form.schema_}
    if form.strict is not None:
        schema["strict"] = form.strict
    if form.description:
        schema["description"] = form.description
    return {"type": "json_schema", "json_schema": schema}
