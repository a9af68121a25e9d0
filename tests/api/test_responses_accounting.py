"""The Responses API is accounted like chat: the response cache answers a repeated request
without the backend, and usage and cost land in `/usage` under the group that served it."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.support.fabric import MASTER_KEY, Fabric, running
from tests.support.fake_backend import Behaviour, FakeBackend

CONFIG = """
model_list:
  - model_name: priced
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
general_settings:
  master_key: {key}
  cache: true
inferq_settings:
  key_prefix: {prefix}
"""


@pytest.fixture
def fabric(redis_url: str, prefix: str, fake: FakeBackend, tmp_path: Path) -> Iterator[Fabric]:
    fake.behaviour = Behaviour()
    fake.requests.clear()
    with running(CONFIG, redis_url, tmp_path, api_base=fake.api_base, prefix=prefix) as fab:
        yield fab


def test_a_repeated_response_is_a_cache_hit_and_both_count_in_usage(
    fabric: Fabric, fake: FakeBackend
) -> None:
    with openai.OpenAI(
        base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as client:
        ask = {"model": "priced", "input": "the same question", "max_output_tokens": 4}
        first = client.responses.with_raw_response.create(**ask)  # type: ignore[arg-type]
        second = client.responses.with_raw_response.create(**ask)  # type: ignore[arg-type]
    one, two = first.parse(), second.parse()
    for response in (one, two):
        Response.model_validate(response.model_dump(mode="json"), strict=True)
        assert response.output_text == "w0 w1 w2 w3 "
    assert second.headers["x-inferq-cache"] == "hit"
    assert len(fake.requests) == 1  # the hit never reached the backend
    assert one.id != two.id  # each request is its own response
    assert one.usage is not None and two.usage == one.usage
    cost = float(first.headers["x-inferq-response-cost"])
    assert cost == pytest.approx(one.usage.input_tokens * 1e-6 + 4 * 2e-6)

    report = httpx.get(
        fabric.base_url + "/usage", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ).json()
    totals = report["totals"]
    assert totals["requests"] == 2 and totals["cache_hits"] == 1
    assert totals["completion_tokens"] == 8  # the hit's tokens count too
    assert totals["cost"] == pytest.approx(cost)  # paid once
    assert set(report["by_group"]) == {"priced"}
