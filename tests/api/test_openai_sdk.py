"""End to end with real processes: openai SDK → inferq API → Redis → worker → fake backend."""

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import fabric as fabric_module
from tests.support.fabric import MASTER_KEY, Fabric, running, write_config
from tests.support.fake_backend import Behaviour, FakeBackend

# The spine runs on every Redis topology (tests/conftest.py).
pytestmark = pytest.mark.topologies

MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str, redis_url: str, fake: FakeBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("e2e")
    with running(
        fabric_module.CONFIG, redis_url, tmp, api_base=fake.api_base, prefix=module_prefix
    ) as fab:
        yield fab


@pytest.fixture(autouse=True)
def _reset(fake: FakeBackend) -> None:
    fake.behaviour = Behaviour()
    fake.requests.clear()


@pytest.fixture
def client(fabric: Fabric) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(fabric: Fabric) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as c:
        yield c


def test_non_stream_completion_through_the_queue(client: openai.OpenAI, fake: FakeBackend) -> None:
    reply = client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "w0 w1 w2 w3 w4 "
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "fake"
    assert reply.object == "chat.completion"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5
    # The backend saw its upstream model id and the config default the request left out.
    sent = fake.requests[-1]
    assert sent["model"] == "fake-model"
    assert sent["temperature"] == 0.5
    assert sent["messages"] == MESSAGES


def test_request_values_override_config_defaults(client: openai.OpenAI, fake: FakeBackend) -> None:
    client.chat.completions.create(model="fake", messages=MESSAGES, temperature=0.1)  # type: ignore[arg-type]
    sent = fake.requests[-1]
    assert sent["temperature"] == 0.1
    assert sent["max_tokens"] == 12  # from litellm_params, since the request had none


def test_stream_yields_every_token_and_ends_with_finish_reason(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake",
        messages=MESSAGES,
        max_tokens=20,
        stream=True,  # type: ignore[arg-type]
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"w{i} " for i in range(20))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == "fake" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_stream_include_usage_from_backend(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fake",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7


def test_stream_usage_is_counted_when_backend_sends_none(
    client: openai.OpenAI, fake: FakeBackend
) -> None:
    fake.behaviour.usage_in_stream = False  # like llama.cpp
    chunks = list(
        client.chat.completions.create(
            model="fake",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=9,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 9
    assert usage.prompt_tokens > 0


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=3, stream=True)  # type: ignore[arg-type]
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_async_client_stream_and_non_stream(aclient: openai.AsyncOpenAI) -> None:
    reply = await aclient.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "w0 w1 w2 w3 "
    stream = await aclient.chat.completions.create(
        model="fake",
        messages=MESSAGES,
        max_tokens=4,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "w0 w1 w2 w3 "


def test_alias_routes_to_first_group_and_echoes_requested_name(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="chained",
        messages=MESSAGES,
        max_tokens=2,  # type: ignore[arg-type]
    )
    assert raw.headers["x-inferq-model-group"] == "fake"
    assert raw.headers["x-inferq-deployment"] == "fake.0"
    assert raw.headers["x-inferq-attempts"] == "1"
    assert raw.parse().model == "chained"


def test_hidden_alias_serves_but_is_not_listed(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="quiet", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "w0 "
    names = [m.id for m in client.models.list()]
    assert names == ["fake", "fake-llama", "chained"]


def test_wrong_or_missing_key_is_401(fabric: Fabric) -> None:
    bad = openai.OpenAI(base_url=fabric.base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.status_code == 401
    resp = httpx.post(fabric.base_url + "/v1/chat/completions", json={"model": "fake"})
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "authentication_error"
    assert httpx.get(fabric.base_url + "/v1/models").status_code == 401
    assert httpx.get(fabric.base_url + "/health").status_code == 401


def test_unknown_model_is_400_naming_the_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    message = err.value.message
    assert "model=nope" in message
    assert "fake" in message and "chained" in message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake"}, "messages"),
        ({"model": "fake", "messages": []}, "messages"),
        ({"model": "fake", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": MESSAGES}, "model"),
        ({"model": "fake", "messages": MESSAGES, "temperature": 9}, "temperature"),
        ({"model": "fake", "messages": MESSAGES, "stream": "yes please"}, "stream"),
    ],
)
def test_invalid_body_is_400_in_openai_shape(
    fabric: Fabric, body: dict[str, object], param: str
) -> None:
    resp = httpx.post(
        fabric.base_url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]
    assert "detail" not in resp.json()


def test_body_that_is_not_json_is_400(fabric: Fabric) -> None:
    resp = httpx.post(
        fabric.base_url + "/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["error"]["message"]


def test_unknown_route_is_404_in_openai_shape(fabric: Fabric) -> None:
    resp = httpx.get(
        fabric.base_url + "/v1/nothing", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "not_found_error"


def test_backend_rejection_keeps_its_status(client: openai.OpenAI, fake: FakeBackend) -> None:
    fake.behaviour.status = 400
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]
    assert "fake.0 returned 400" in err.value.message


def test_backend_failure_is_a_clear_5xx(client: openai.OpenAI, fake: FakeBackend) -> None:
    fake.behaviour.status = 500
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.status_code == 502
    assert "fake.0 returned 500" in err.value.message


def test_stream_cut_by_backend_ends_in_error_event_not_silence(
    client: openai.OpenAI, fake: FakeBackend
) -> None:
    fake.behaviour.drop_after = 3
    fake.behaviour.token_delay = 0.01
    stream = client.chat.completions.create(
        model="fake",
        messages=MESSAGES,
        max_tokens=10,
        stream=True,  # type: ignore[arg-type]
    )
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    # The backend resets the connection after three words: what the worker had not read by
    # then is discarded by the reset (a slower worker, as on a cluster under load, reads fewer).
    # The client gets a clean prefix of the words sent, then the error: never silence.
    text = "".join(received)
    assert text and "w0 w1 w2 ".startswith(text), (text, err.value)
    assert "dropped the connection" in str(err.value)


def test_stream_ending_without_finish_reason_is_an_error(
    client: openai.OpenAI, fake: FakeBackend
) -> None:
    fake.behaviour.no_finish = True
    stream = client.chat.completions.create(
        model="fake",
        messages=MESSAGES,
        max_tokens=3,
        stream=True,  # type: ignore[arg-type]
    )
    with pytest.raises(openai.APIError) as err:
        list(stream)
    assert "without a finish_reason" in str(err.value)


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert {m.id for m in models} == {"fake", "fake-llama", "chained"}
    assert all(m.object == "model" for m in models)


def test_health_reports_workers_and_queues(fabric: Fabric) -> None:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    body = httpx.get(fabric.base_url + "/health", headers=headers).json()
    assert body["redis"] == "connected"
    assert body["groups"]["fake"]["workers"] == 1
    assert body["groups"]["fake"]["queue"] == {"waiting": 0, "running": 0}
    assert body["groups"]["fake"]["deployments"]["fake.0"]["slots"] == 8
    assert "fake.0" in body["healthy_endpoints"]
    assert "dummy" not in httpx.get(fabric.base_url + "/health", headers=headers).text
    assert httpx.get(fabric.base_url + "/health/liveliness").status_code == 200
    assert httpx.get(fabric.base_url + "/health/readiness").json()["status"] == "healthy"


def test_seed_httpx_streaming_snippet(fabric: Fabric) -> None:
    """The seed document's own streaming client, verbatim but for the URL and key."""
    text = []
    with (
        httpx.Client() as http,
        http.stream(
            "POST",
            fabric.base_url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={
                "model": "fake",
                "messages": [{"role": "user", "content": "Tell me a story"}],
                "stream": True,
            },
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                data = json.loads(line[6:])
                if "choices" in data:
                    text.append(data["choices"][0].get("delta", {}).get("content", "") or "")
    assert "".join(text) == "".join(f"w{i} " for i in range(12))  # max_tokens 12 from config


def test_secrets_never_reach_logs(fabric: Fabric, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]
    for name in ("api", "worker"):
        assert MASTER_KEY not in fabric.log(name)


def test_per_request_timeout_gives_504(client: openai.OpenAI, fake: FakeBackend) -> None:
    fake.behaviour.first_token_delay = 3
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model="fake",
            messages=MESSAGES,
            extra_body={"timeout": 0.5},  # type: ignore[arg-type]
        )
    assert err.value.status_code == 504
    assert "timed out" in err.value.message


def test_group_without_key_is_skipped_or_refused_at_once(
    tmp_path: Path, redis_url: str, fake: FakeBackend
) -> None:
    """A cloud group with no API key is unavailable: an alias chain skips it, and asking for it
    directly gets a 503 naming the reason at once (not a request that waits for its deadline)."""
    prefix = "cloud" + tmp_path.name[-6:]
    config = write_config(tmp_path / "c.yaml", fake.api_base, prefix, text=CLOUD_CONFIG)
    fab = Fabric(config, redis_url, tmp_path)
    try:
        fab.start_worker("worker", "--group", "fake")
        fab.start_api()
        with openai.OpenAI(base_url=fab.base_url + "/v1", api_key=MASTER_KEY, max_retries=0) as c:
            raw = c.chat.completions.with_raw_response.create(
                model="smart", messages=MESSAGES, max_tokens=1
            )  # type: ignore[arg-type]
            assert raw.headers["x-inferq-model-group"] == "fake"
            with pytest.raises(openai.APIStatusError) as err:
                c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            assert err.value.status_code == 503
            assert "OPENAI_API_KEY" in err.value.message
    finally:
        fab.stop()


CLOUD_CONFIG = """
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: gpt-4o-mini
      api_key: ""
  - model_name: fake
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
router_settings:
  model_group_alias:
    smart: [gpt-4o-mini, fake]
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""
