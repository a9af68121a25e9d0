"""The Responses API end to end: the official `openai` SDK → inferq API → Redis → worker → a
fake OpenAI backend or a fake Anthropic backend. Every non-stream body is checked against the
SDK's own `Response` model."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.support.fabric import MASTER_KEY, Fabric, running_pair
from tests.support.fake_backend import Behaviour, FakeBackend
from tests.support.wire import ANTHROPIC_USAGE, TOOL_ARGUMENTS

CONFIG = """
model_list:
  - model_name: local-model
    litellm_params:
      model: openai//models/x.gguf
      api_base: {local}
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_base: {anthropic}
      api_key: sk-ant-test
      max_tokens: 300
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ARGUMENTS = "".join(TOOL_ARGUMENTS)


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str,
    redis_url: str,
    fakes: tuple[FakeBackend, FakeBackend],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("responses")
    with running_pair(CONFIG, redis_url, tmp, fakes, module_prefix) as fab:
        yield fab


@pytest.fixture(autouse=True)
def _reset(fakes: tuple[FakeBackend, FakeBackend]) -> None:
    for fake in fakes:
        fake.behaviour = Behaviour()
        fake.requests.clear()


@pytest.fixture
def local(fakes: tuple[FakeBackend, FakeBackend]) -> FakeBackend:
    return fakes[0]


@pytest.fixture
def claude(fakes: tuple[FakeBackend, FakeBackend]) -> FakeBackend:
    return fakes[1]


def sdk(fabric: Fabric) -> openai.OpenAI:
    return openai.OpenAI(base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def client(fabric: Fabric) -> Iterator[openai.OpenAI]:
    with sdk(fabric) as c:
        yield c


def create(client: openai.OpenAI, **params: Any) -> Response:
    """`responses.create`, with the raw body validated strictly by the SDK's model."""
    raw = client.responses.with_raw_response.create(**params)
    body = raw.http_response.json()
    strict = Response.model_validate(body, strict=True)
    assert strict.id == body["id"]
    return raw.parse()


def events(client: openai.OpenAI, **params: Any) -> list[Any]:
    with client.responses.create(stream=True, **params) as stream:
        return list(stream)


def test_plain_text_response(client: openai.OpenAI, local: FakeBackend) -> None:
    response = create(client, model="local-model", input="Hello there", max_output_tokens=5)
    assert response.output_text == "w0 w1 w2 w3 w4 "
    assert response.status == "completed"
    assert response.model == "local-model"
    assert response.id.startswith("resp_")
    assert response.usage is not None and response.usage.output_tokens == 5
    assert response.usage.total_tokens == response.usage.input_tokens + 5
    sent = local.requests[-1]
    assert sent["messages"] == [{"role": "user", "content": "Hello there"}]
    assert sent["max_tokens"] == 5


def test_items_instructions_and_settings_reach_the_backend(
    client: openai.OpenAI, local: FakeBackend
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    response = create(
        client,
        model="local-model",
        instructions="Be brief.",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello!"},
            {"type": "message", "role": "user", "content": "Again"},
        ],
        temperature=0.3,
        top_p=0.9,
        max_output_tokens=3,
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema}},
        reasoning={"effort": "low"},
        metadata={"team": "blue"},
    )
    assert response.instructions == "Be brief."
    assert response.metadata == {"team": "blue"}
    assert response.temperature == 0.3
    sent = local.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]
    assert sent["temperature"] == 0.3 and sent["top_p"] == 0.9 and sent["max_tokens"] == 3
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema},
    }
    assert sent["reasoning_effort"] == "low"
    assert "metadata" not in sent


def test_streamed_response_has_the_full_event_sequence(client: openai.OpenAI) -> None:
    got = events(client, model="local-model", input="Hello", max_output_tokens=4)
    kinds = [e.type for e in got]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * (kinds.count("response.output_text.delta")),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in got] == list(range(len(got)))
    text = "".join(e.delta for e in got if e.type == "response.output_text.delta")
    assert text == "w0 w1 w2 w3 "
    assert got[-4].text == text
    final = got[-1].response
    assert final.output_text == text
    assert final.usage is not None and final.usage.output_tokens == 4
    assert got[0].response.status == "in_progress"
    Response.model_validate(final.model_dump(mode="json", exclude_unset=True), strict=True)


def test_answer_cut_at_the_token_limit_is_incomplete(
    client: openai.OpenAI, local: FakeBackend
) -> None:
    local.behaviour.finish_reason = "length"
    response = create(client, model="local-model", input="Hello", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    got = events(client, model="local-model", input="Hello", max_output_tokens=2)
    assert got[-1].type == "response.incomplete"
    assert got[-1].response.incomplete_details.reason == "max_output_tokens"


def test_stream_failing_midway_ends_in_an_error_event(
    client: openai.OpenAI, local: FakeBackend
) -> None:
    local.behaviour.drop_after = 2  # every attempt breaks after two tokens
    got = events(client, model="local-model", input="Hello", max_output_tokens=6)
    assert got[-1].type == "error"
    assert got[-1].message
    assert "response.completed" not in [e.type for e in got]
    assert [e.sequence_number for e in got] == list(range(len(got)))


def test_function_tool_round_trip(client: openai.OpenAI, local: FakeBackend) -> None:
    first = create(
        client, model="local-model", input="Weather in Paris?", tools=[WEATHER], tool_choice="auto"
    )
    call = first.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert local.requests[-1]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert local.requests[-1]["tool_choice"] == "auto"
    # The caller runs the tool and sends its output back with the call, as a client that
    # keeps its own history does (no previous_response_id).
    second = create(
        client,
        model="local-model",
        max_output_tokens=2,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )  # fmt: skip
    assert second.output_text == "w0 w1 "
    assert local.requests[-1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",  # not null: llama.cpp's server refuses null
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
    ]


def test_streamed_function_call_events(client: openai.OpenAI) -> None:
    got = events(client, model="local-model", input="Weather?", tools=[WEATHER])
    kinds = [e.type for e in got]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.delta for e in got if e.type.endswith("arguments.delta")] == TOOL_ARGUMENTS
    assert got[5].arguments == ARGUMENTS
    item = got[-1].response.output[0]
    assert (item.type, item.name, item.arguments, item.status) == (
        "function_call",
        "get_weather",
        ARGUMENTS,
        "completed",
    )


def test_previous_response_id_continues_on_another_api_process(
    fabric: Fabric, client: openai.OpenAI, local: FakeBackend, tmp_path: Path
) -> None:
    first = create(client, model="local-model", input="My name is Ann.", max_output_tokens=2)
    other = Fabric(fabric.config, fabric.redis_url, tmp_path)
    try:
        other.start_api()
        with sdk(other) as second_api:
            again = create(
                second_api,
                model="local-model",
                input="What is my name?",
                previous_response_id=first.id,
                instructions="Answer briefly.",
                max_output_tokens=3,
            )
            assert again.previous_response_id == first.id
            third = create(
                second_api,
                model="local-model",
                input="And again?",
                previous_response_id=again.id,
                max_output_tokens=1,
            )
    finally:
        other.stop()
    assert third.output_text == "w0 "
    assert local.requests[-2]["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "My name is Ann."},
        {"role": "assistant", "content": "w0 w1 "},
        {"role": "user", "content": "What is my name?"},
    ]
    # Instructions belong to their turn, as in OpenAI's API; the conversation carries on.
    assert local.requests[-1]["messages"] == [
        {"role": "user", "content": "My name is Ann."},
        {"role": "assistant", "content": "w0 w1 "},
        {"role": "user", "content": "What is my name?"},
        {"role": "assistant", "content": "w0 w1 w2 "},
        {"role": "user", "content": "And again?"},
    ]


def test_streamed_response_is_stored_before_it_completes(
    client: openai.OpenAI, local: FakeBackend
) -> None:
    got = events(client, model="local-model", input="One", max_output_tokens=2)
    done = got[-1].response
    follow = create(client, model="local-model", input="Two", previous_response_id=done.id)
    assert follow.status == "completed"
    assert local.requests[-1]["messages"][:2] == [
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "w0 w1 "},
    ]


def test_retrieve_and_delete(fabric: Fabric, client: openai.OpenAI) -> None:
    made = create(client, model="local-model", input="Keep me", max_output_tokens=2)
    found = client.responses.retrieve(made.id)
    assert found.output_text == "w0 w1 "
    raw = httpx.get(f"{fabric.base_url}/v1/responses/{made.id}", headers=AUTH).json()
    Response.model_validate(raw, strict=True)
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="local-model", input="x", previous_response_id=made.id)
    assert err.value.code == "previous_response_not_found"


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    made = create(client, model="local-model", input="Forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "local-model"}, "input"),
        ({"model": "nope", "input": "x"}, "model"),
        ({"model": "local-model", "input": "x", "tools": [{"type": "web_search"}]}, "tools.0"),
        ({"model": "local-model", "input": [{"type": "mystery"}]}, "input.0.type"),
        ({"model": "local-model", "input": [{"role": "wizard", "content": "x"}]}, "input.0.role"),
        ({"model": "local-model", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "local-model", "input": "x", "tool_choice": "maybe"}, "tool_choice"),
        ({"model": "local-model", "input": "x", "text": {"format": {"type": "json_schema"}}},
         "text.format"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_in_openai_format(
    fabric: Fabric, body: dict[str, Any], param: str
) -> None:
    resp = httpx.post(fabric.base_url + "/v1/responses", json=body, headers=AUTH)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_backend_failure_is_an_openai_error(client: openai.OpenAI, local: FakeBackend) -> None:
    local.behaviour.status = 400
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="local-model", input="x")


def test_retries_and_routing_headers_work_as_for_chat(fabric: Fabric, local: FakeBackend) -> None:
    local.behaviour = Behaviour(status=500, fail_first=1)
    resp = httpx.post(
        fabric.base_url + "/v1/responses",
        json={"model": "local-model", "input": "Hi", "max_output_tokens": 2},
        headers={**AUTH, "x-request-id": "resp-test-1"},
    )
    assert resp.status_code == 200
    assert resp.json()["output"][0]["content"][0]["text"] == "w0 w1 "
    assert resp.headers["x-inferq-attempts"] == "2"  # the 500 was retried
    assert resp.headers["x-inferq-model-group"] == "local-model"
    assert resp.headers["x-request-id"] == "resp-test-1"
    assert len(local.requests) == 2


# ---- an Anthropic deployment ------------------------------------------------------------------


def test_anthropic_deployment_answers_a_response(
    client: openai.OpenAI, claude: FakeBackend
) -> None:
    response = create(
        client, model="claude", input="Hi", instructions="Be brief.", max_output_tokens=4
    )
    assert response.output_text == "w0 w1 w2 w3 "
    assert response.usage is not None
    # OpenAI counts cached and cache-written tokens in input_tokens; Anthropic apart.
    assert response.usage.input_tokens == 25 + 5 + 7
    assert response.usage.input_tokens_details.cached_tokens == 7
    assert response.usage.input_tokens_details.cache_write_tokens == 5
    assert response.usage.output_tokens == ANTHROPIC_USAGE["output_tokens"]
    sent = claude.requests[-1]
    assert sent["system"] == "Be brief."
    assert sent["model"] == "claude-3-5-sonnet-20241022"


def test_anthropic_deployment_streams_a_response(client: openai.OpenAI) -> None:
    got = events(client, model="claude", input="Hi", max_output_tokens=3)
    assert got[-1].type == "response.completed"
    assert got[-1].response.output_text == "w0 w1 w2 "
    assert [e.sequence_number for e in got] == list(range(len(got)))


def test_anthropic_deployment_tool_round_trip(client: openai.OpenAI, claude: FakeBackend) -> None:
    first = create(client, model="claude", input="Weather in Paris?", tools=[WEATHER])
    kinds = [item.type for item in first.output]
    assert kinds == ["message", "function_call"]
    call = first.output[1]
    assert call.type == "function_call"
    assert json.loads(call.arguments) == {"city": "Paris"}
    second = create(
        client,
        model="claude",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert second.output_text
    messages = claude.requests[-1]["messages"]
    assert messages[-2]["role"] == "assistant"
    assert any(b.get("type") == "tool_use" for b in messages[-2]["content"])
    assert messages[-1]["content"][0]["type"] == "tool_result"
    assert messages[-1]["content"][0]["tool_use_id"] == call.call_id
