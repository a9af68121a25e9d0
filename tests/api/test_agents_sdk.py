"""The OpenAI Agents SDK (`openai-agents`) runs an agent with a function tool against inferq's
Responses API, over a fake backend that calls the tool as a model would, then answers."""

import json
from collections.abc import Iterator

import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool
from openai import AsyncOpenAI

from tests.support import fabric as fabric_module
from tests.support.fabric import MASTER_KEY, Fabric, running
from tests.support.fake_backend import Behaviour, FakeBackend


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str, redis_url: str, fake: FakeBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("agents")
    with running(
        fabric_module.CONFIG, redis_url, tmp, api_base=fake.api_base, prefix=module_prefix
    ) as fab:
        yield fab


async def test_agent_calls_its_function_tool_through_inferq(
    fabric: Fabric, fake: FakeBackend
) -> None:
    fake.behaviour = Behaviour(tokens=3)
    fake.requests.clear()
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        cities.append(city)
        return f"sunny in {city}"

    async with AsyncOpenAI(
        base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as client:
        agent = Agent(
            name="weather",
            instructions="Answer with the weather.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="fake", openai_client=client),
        )
        # Tracing would send spans to OpenAI: off, so nothing leaves 127.0.0.1.
        result = await Runner.run(
            agent, "Weather in Paris?", run_config=RunConfig(tracing_disabled=True), max_turns=4
        )
    assert cities == ["Paris"]  # the model's call reached the tool with its arguments
    assert result.final_output == "w0 w1 w2 "
    first, second = fake.requests[-2:]
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert first["messages"][0] == {"role": "system", "content": "Answer with the weather."}
    tool_turn = second["messages"][-2:]
    assert tool_turn[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(tool_turn[0]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert tool_turn[1] == {
        "role": "tool",
        "tool_call_id": tool_turn[0]["tool_calls"][0]["id"],
        "content": "sunny in Paris",
    }
