"""Routes clients call beside inference, through the official SDKs against real processes:
model retrieval, Anthropic's count_tokens, and Files/Batches bodies that validate strictly
against the `openai` SDK's own types."""

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types import Batch, FileObject, Model

from tests.support.fabric import MASTER_KEY, Fabric, running_pair
from tests.support.fake_backend import Behaviour, FakeBackend

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
router_settings:
  model_group_alias:
    chained: [local-model, claude]
    quiet: {{model: local-model, hidden: true}}
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
HELLO = [{"role": "user", "content": "Hello there, how many tokens is this?"}]


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str,
    redis_url: str,
    fakes: tuple[FakeBackend, FakeBackend],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("spec")
    with running_pair(CONFIG, redis_url, tmp, fakes, module_prefix) as fab:
        yield fab


@pytest.fixture(autouse=True)
def _reset(fakes: tuple[FakeBackend, FakeBackend]) -> None:
    for fake in fakes:
        fake.behaviour = Behaviour()
        fake.requests.clear()


@pytest.fixture
def oai(fabric: Fabric) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0) as c:
        yield c


@pytest.fixture
def ant(fabric: Fabric) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fabric.base_url, api_key=MASTER_KEY, max_retries=0) as c:
        yield c


def strict(model: type[Any], body: Any) -> Any:
    """`body` validated by the SDK's pydantic model in strict mode (no coercion, no nulls
    where the type has none)."""
    return model.model_validate(body, strict=True)


# ---- GET /v1/models/{model} -------------------------------------------------------------------


def test_models_retrieve_a_group_an_alias_and_a_hidden_alias(
    fabric: Fabric, oai: openai.OpenAI
) -> None:
    for name in ("local-model", "chained", "quiet"):
        model = oai.models.retrieve(name)
        assert model.id == name
        assert model.object == "model"
    raw = httpx.get(fabric.base_url + "/v1/models/claude", headers=AUTH)
    strict(Model, raw.json())


def test_models_retrieve_unknown_is_404_in_openai_format(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        oai.models.retrieve("no-such-model")
    error = err.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert "no-such-model" in error["message"]


# ---- POST /v1/messages/count_tokens -----------------------------------------------------------


def test_count_tokens_asks_an_anthropic_backend_for_its_own_count(
    ant: anthropic.Anthropic, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    raw = ant.messages.with_raw_response.count_tokens(
        model="claude",
        system="Be brief.",
        messages=HELLO,  # type: ignore[arg-type]
    )
    count = raw.parse()
    assert count.input_tokens == 1010  # the fake's figure: 1000 + 10 per message
    assert raw.headers["x-inferq-usage-source"] == "backend"
    assert "estimate" not in raw.http_response.json()
    sent = fakes[1].requests[-1]
    assert sent["model"] == "claude-3-5-sonnet-20241022"
    assert sent["system"] == "Be brief."
    text = [{"type": "text", "text": HELLO[0]["content"]}]
    assert sent["messages"] == [{"role": "user", "content": text}]
    assert "max_tokens" not in sent and "stream" not in sent


def test_count_tokens_elsewhere_is_a_marked_local_estimate(
    ant: anthropic.Anthropic, fakes: tuple[FakeBackend, FakeBackend]
) -> None:
    raw = ant.messages.with_raw_response.count_tokens(model="local-model", messages=HELLO)  # type: ignore[arg-type]
    count = raw.parse()
    # workers/usage.py: (characters + 4 per message) / 4, rounded up.
    assert count.input_tokens == -(-(len(HELLO[0]["content"]) + 4) // 4)
    assert raw.http_response.json()["estimate"] is True
    assert raw.headers["x-inferq-usage-source"] == "counted"
    assert fakes[0].requests == []  # nothing generated, no backend called


def test_count_tokens_errors_in_anthropic_format(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        ant.messages.count_tokens(model="nope", messages=HELLO)  # type: ignore[arg-type]
    assert "model=nope" in err.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.count_tokens(model="claude", messages=[])


# ---- Files and Batches bodies against the SDK's types -----------------------------------------


def test_empty_lists_have_no_null_ids(fabric: Fabric) -> None:
    for path in ("/v1/files", "/v1/batches"):
        page = httpx.get(fabric.base_url + path, headers=AUTH).json()
        assert page == {"object": "list", "data": [], "has_more": False}


def test_file_and_batch_bodies_validate_strictly(fabric: Fabric, oai: openai.OpenAI) -> None:
    line = '{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
    line += '"body": {"model": "local-model", "messages": [{"role": "user", "content": "x"}]}}\n'
    made = oai.files.create(file=("in.jsonl", line.encode()), purpose="batch")
    base = fabric.base_url + "/v1"
    body = httpx.get(f"{base}/files/{made.id}", headers=AUTH).json()
    assert "status_details" not in body
    strict(FileObject, body)
    page = httpx.get(f"{base}/files", headers=AUTH).json()
    assert page["first_id"] == page["last_id"] == made.id
    for item in page["data"]:
        strict(FileObject, item)
    content = httpx.get(f"{base}/files/{made.id}/content", headers=AUTH)
    assert content.headers["content-type"] == "application/json"
    assert content.content == line.encode()
    batch = oai.batches.create(
        input_file_id=made.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    strict(Batch, httpx.get(f"{base}/batches/{batch.id}", headers=AUTH).json())
    listed = httpx.get(f"{base}/batches", headers=AUTH).json()
    assert listed["first_id"] == batch.id
    for item in listed["data"]:
        strict(Batch, item)
    assert [b.id for b in oai.batches.list()] == [batch.id]
    deadline = time.monotonic() + 60  # the driver and the batch lane, on a loaded machine
    while oai.batches.retrieve(batch.id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
    done = strict(Batch, httpx.get(f"{base}/batches/{batch.id}", headers=AUTH).json())
    assert done.status == "completed" and done.output_file_id
    output = httpx.get(f"{base}/files/{done.output_file_id}", headers=AUTH).json()
    strict(FileObject, output)
