"""Every backend behind one API: OpenAI-compatible and Anthropic deployments, tool calls,
completions and embeddings, and Anthropic's Messages API in front, with both official SDKs."""

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.support.fabric import MASTER_KEY, Fabric, running_pair
from tests.support.fake_backend import Behaviour, FakeBackend
from tests.support.wire import ANTHROPIC_USAGE

CONFIG = """
model_list:
  - model_name: local-model
    litellm_params:
      model: openai//models/x.gguf
      api_base: {local}
  - model_name: gpt-4o-mini
    litellm_params:
      model: gpt-4o-mini
      api_base: {local}
      api_key: sk-openai-test
      organization: org-test
      extra_headers: {{x-extra: "1"}}
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_base: {anthropic}
      api_key: sk-ant-test
      max_tokens: 300
router_settings:
  num_retries: 2
  allowed_fails: 1000
  model_group_alias:
    function-calling: [local-model, gpt-4o-mini]
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}]


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str,
    redis_url: str,
    fakes: tuple[FakeBackend, FakeBackend],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("providers")
    with running_pair(CONFIG, redis_url, tmp, fakes, module_prefix) as fab:
        yield fab


@pytest.fixture(autouse=True)
def _reset(fakes: tuple[FakeBackend, FakeBackend]) -> None:
    for fake in fakes:
        fake.behaviour = Behaviour()
        fake.requests.clear()
        fake.headers.clear()


@pytest.fixture
def oai(fabric: Fabric) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0) as c:
        yield c


@pytest.fixture
def ant(fabric: Fabric) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fabric.base_url, api_key=MASTER_KEY, max_retries=0) as c:
        yield c


# ---- OpenAI clients, Anthropic backend ---------------------------------------------------------


def test_openai_client_chats_with_an_anthropic_deployment(
    oai: openai.OpenAI, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    _, claude = fakes
    reply = oai.chat.completions.create(model="claude", messages=ASK, stop="END")  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "".join(f"w{i} " for i in range(300))
    assert reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    assert usage is not None
    cached = ANTHROPIC_USAGE["cache_read_input_tokens"]
    prompt = (
        ANTHROPIC_USAGE["input_tokens"] + cached + ANTHROPIC_USAGE["cache_creation_input_tokens"]
    )
    assert usage.prompt_tokens == prompt
    assert usage.completion_tokens == ANTHROPIC_USAGE["output_tokens"]
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == cached
    sent = claude.requests[-1]
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}]
    assert sent["max_tokens"] == 300  # the config default: Anthropic requires one
    assert sent["stop_sequences"] == ["END"]
    assert sent["model"] == "claude-3-5-sonnet-20241022"
    headers = claude.headers[-1]
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == "2023-06-01"


def test_openai_client_streams_from_an_anthropic_deployment(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="claude", messages=ASK, max_tokens=5, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 "
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == ANTHROPIC_USAGE["output_tokens"]


def test_tool_calls_round_trip_through_an_anthropic_deployment(
    oai: openai.OpenAI, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    _, claude = fakes
    reply = oai.chat.completions.create(
        model="claude",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",  # type: ignore[arg-type, list-item]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    sent = claude.requests[-1]
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    # The next turn sends the call and its result back: they become tool_use and tool_result.
    follow = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C"},
    ]
    oai.chat.completions.create(model="claude", messages=follow)  # type: ignore[arg-type]
    turn = claude.requests[-1]["messages"]
    assert turn[1]["role"] == "assistant"
    assert turn[1]["content"][1] == {
        "type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}
    }  # fmt: skip
    assert turn[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C"}],
    }


def test_streamed_tool_call_from_an_anthropic_deployment(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="claude",
        messages=ASK,
        tools=[WEATHER],
        stream=True,  # type: ignore[arg-type, list-item]
    )
    arguments, names, finish = "", [], None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            if call.function and call.function.name:
                names.append(call.function.name)
            arguments += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"]
    assert json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"


def test_anthropic_overloaded_529_is_retried(
    oai: openai.OpenAI, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    _, claude = fakes
    claude.behaviour.status, claude.behaviour.fail_first = 529, 1
    reply = oai.chat.completions.with_raw_response.create(
        model="claude",
        messages=ASK,
        max_tokens=2,  # type: ignore[arg-type]
    )
    assert reply.headers["x-inferq-attempts"] == "2"
    assert len(claude.requests) == 2


def test_anthropic_400_is_mapped_not_retried(
    oai: openai.OpenAI, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    _, claude = fakes
    claude.behaviour.status = 400
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="claude", messages=ASK)  # type: ignore[arg-type]
    assert len(claude.requests) == 1


# ---- OpenAI-compatible backends: tools, completions, embeddings ---------------------------------


def test_function_calling_alias_passes_tools_and_streams_tool_call_deltas(
    oai: openai.OpenAI, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    local, _ = fakes
    reply = oai.chat.completions.create(
        model="function-calling", messages=ASK, tools=[WEATHER],  # type: ignore[arg-type, list-item]
        tool_choice="auto", parallel_tool_calls=False, seed=7,
        response_format={"type": "json_object"}, user="u1",
    )  # fmt: skip
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert reply.model == "function-calling"
    sent = local.requests[-1]
    expected = {
        "tools": [WEATHER],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "seed": 7,
        "response_format": {"type": "json_object"},
        "user": "u1",
    }
    assert {k: sent[k] for k in expected} == expected
    arguments = ""
    for chunk in oai.chat.completions.create(
        model="function-calling",
        messages=ASK,
        tools=[WEATHER],
        stream=True,  # type: ignore[arg-type, list-item]
    ):
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            arguments += delta.function.arguments or "" if delta.function else ""
    assert json.loads(arguments) == {"city": "Paris"}


def test_openai_deployment_gets_key_organization_and_extra_headers(
    oai: openai.OpenAI, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    local, _ = fakes
    oai.chat.completions.create(model="gpt-4o-mini", messages=ASK, max_tokens=1)  # type: ignore[arg-type]
    headers = local.headers[-1]
    assert headers["authorization"] == "Bearer sk-openai-test"
    assert headers["openai-organization"] == "org-test"
    assert headers["x-extra"] == "1"


def test_text_completions_stream_and_not(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model="local-model", prompt="Once", max_tokens=3)
    assert reply.choices[0].text == "w0 w1 w2 "
    assert reply.object == "text_completion"
    assert reply.model == "local-model"
    stream = oai.completions.create(model="local-model", prompt="Once", max_tokens=4, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "w0 w1 w2 w3 "


def test_embeddings_are_one_vector_per_input(
    oai: openai.OpenAI, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    local, _ = fakes
    result = oai.embeddings.create(model="local-model", input=["a", "bbb"])
    assert [d.embedding for d in result.data] == [[1.0, 1.0, 0.0], [3.0, 1.0, 0.0]]
    assert result.model == "local-model"
    assert result.usage.prompt_tokens == 8
    # A server answering one vector per token (llama.cpp with SmolLM2) is pooled and normalised.
    local.behaviour.per_token_embeddings = True
    pooled = oai.embeddings.create(model="local-model", input="abcd").data[0].embedding
    assert len(pooled) == 3
    assert abs(sum(x * x for x in pooled) - 1.0) < 1e-9
    assert pooled[0] > pooled[1] > pooled[2] == 0


def test_embeddings_from_an_anthropic_deployment_are_refused_clearly(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model="claude", input="x")
    assert "serves chat, not embedding" in err.value.message


# ---- Anthropic clients, any backend -------------------------------------------------------------


def test_anthropic_sdk_against_an_openai_backend(
    ant: anthropic.Anthropic, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    local, _ = fakes
    message = ant.messages.create(
        model="local-model", max_tokens=4, system="Be brief.",
        messages=[{"role": "user", "content": "Hi"}], stop_sequences=["END"],
    )  # fmt: skip
    assert message.content[0].text == "w0 w1 w2 w3 "  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.model == "local-model"
    assert message.usage.output_tokens == 4
    sent = local.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["stop"] == ["END"] and sent["max_tokens"] == 4


def test_anthropic_sdk_streams_from_an_openai_backend(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="local-model", max_tokens=6, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "w0 w1 w2 w3 w4 w5 "
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 6


def test_anthropic_sdk_tool_use_through_the_function_calling_alias(
    ant: anthropic.Anthropic,
) -> None:
    tool = {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    message = ant.messages.create(
        model="function-calling", max_tokens=50, tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )  # fmt: skip
    assert message.stop_reason == "tool_use"
    use = next(b for b in message.content if b.type == "tool_use")
    assert use.name == "get_weather"  # type: ignore[union-attr]
    assert use.input == {"city": "Paris"}  # type: ignore[union-attr]
    with ant.messages.stream(
        model="function-calling",
        max_tokens=50,
        tools=[tool],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert streamed.input == {"city": "Paris"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


def test_anthropic_sdk_against_an_anthropic_backend(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(
        model="claude", max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text == "w0 w1 w2 "  # type: ignore[union-attr]
    assert message.usage.cache_read_input_tokens == ANTHROPIC_USAGE["cache_read_input_tokens"]


def test_anthropic_sdk_errors(fabric: Fabric, ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        ant.messages.create(model="nope", max_tokens=3, messages=[{"role": "user", "content": "x"}])
    assert err.value.body["type"] == "error"  # type: ignore[index]
    assert "model=nope" in err.value.body["error"]["message"]  # type: ignore[index]
    with (
        anthropic.Anthropic(base_url=fabric.base_url, api_key="wrong", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError),
    ):
        bad.messages.create(
            model="claude", max_tokens=3, messages=[{"role": "user", "content": "x"}]
        )
