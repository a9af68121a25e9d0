"""The whole path against a real llama.cpp server running SmolLM2-135M (structure, not text)."""

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
)
from openai.types.responses import Response

from inferq.cli.local import LlamaServer
from tests.support.fabric import MASTER_KEY, Fabric

pytestmark = pytest.mark.llama

CONFIG = """
model_list:
  - model_name: local-model
    litellm_params:
      model: openai//models/SmolLM2-135M-Instruct.Q4_1.gguf
      api_base: {api_base}
      api_key: dummy
      temperature: 0.2
      max_tokens: 24
      max_parallel_requests: 1
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama") / "llama.log"
    server = LlamaServer().start(log=log)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(
    module_prefix: str, llama: LlamaServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    tmp: Path = tmp_path_factory.mktemp("llama-fabric")
    config = tmp / "config.yaml"
    config.write_text(CONFIG.format(api_base=llama.api_base, key=MASTER_KEY, prefix=module_prefix))
    fabric = Fabric(config, redis_url, tmp)
    try:
        fabric.start_worker()
        fabric.start_api()
        with openai.OpenAI(
            base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0
        ) as c:
            yield c
    finally:
        fabric.stop()


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_real_model_answers_through_the_queue(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="local-model", messages=QUESTION)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert (choice.message.content or "").strip()
    assert choice.finish_reason in ("stop", "length")
    assert reply.model == "local-model"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 24


def test_real_model_streams_through_the_queue(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="local-model",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes and finishes[-1] in ("stop", "length")
    usage = chunks[-1].usage
    assert usage is not None
    assert 0 < usage.completion_tokens <= 24
    assert usage.prompt_tokens > 0


def test_real_model_completes_text_and_embeds(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model="local-model", prompt="The capital of France is", max_tokens=8
    )
    assert completion.choices[0].text.strip()
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    result = client.embeddings.create(model="local-model", input=["Paris", "a cat"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 2
    assert len(vectors[0]) == len(vectors[1]) > 100  # one pooled vector per input
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3
    assert vectors[0] != vectors[1]


def test_real_model_serves_the_responses_api(client: openai.OpenAI) -> None:
    """responses.create plain, streamed, and continued with previous_response_id."""
    raw = client.responses.with_raw_response.create(
        model="local-model", input="What is the capital of France?", max_output_tokens=16
    )
    Response.model_validate(raw.http_response.json(), strict=True)
    first = raw.parse()
    assert first.status in ("completed", "incomplete")
    assert first.output_text.strip()
    assert first.usage is not None and 0 < first.usage.output_tokens <= 16
    with client.responses.create(
        model="local-model",
        input="And of Italy?",
        previous_response_id=first.id,
        max_output_tokens=16,
        stream=True,
    ) as stream:
        events = list(stream)
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas.strip() and events[-1].response.output_text == deltas
    assert events[-1].response.previous_response_id == first.id
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_agents_sdk_runs_an_agent_with_a_tool_on_the_real_model(
    client: openai.OpenAI,
) -> None:
    """One agent with one function tool on SmolLM2 through inferq's Responses API, the tool
    call and its result included. Left to choose, the 135M model answers in text; the agent
    names the tool (`tool_choice`), which llama.cpp's server then answers with a call whose
    arguments follow the tool's JSON schema (a grammar), and the Agents SDK lets the model
    choose again after the call, so the loop ends in a text answer."""
    called: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"sunny in {city}"

    async with openai.AsyncOpenAI(
        base_url=str(client.base_url), api_key=MASTER_KEY, max_retries=0
    ) as aclient:
        agent = Agent(
            name="weather",
            instructions="Answer in one short sentence.",
            tools=[get_weather],
            # Room to finish: the config's 24 tokens would end the answer `incomplete`.
            model_settings=ModelSettings(max_tokens=300, tool_choice="get_weather"),
            model=OpenAIResponsesModel(model="local-model", openai_client=aclient),
        )
        result = await Runner.run(
            agent,
            "What is the weather in Paris?",
            run_config=RunConfig(tracing_disabled=True),
            max_turns=3,
        )
    print(f"agent final output: {result.final_output!r}; tool called with: {called}")
    assert len(called) == 1 and called[0].strip()  # one call, with a city the model chose
    assert isinstance(result.final_output, str) and result.final_output.strip()
