"""The response cache: hits skip the queue, equal requests share entries, controls, replay,
nothing from failures, single flight. Real processes, real Redis, a fake backend."""

import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.support.fabric import MASTER_KEY, Fabric, running
from tests.support.fake_backend import Behaviour, FakeBackend

CONFIG = """
model_list:
  - model_name: fake
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      temperature: 0.5
      max_tokens: 4
router_settings:
  num_retries: 0
  allowed_fails: 1000
  model_group_alias:
    same: fake
general_settings:
  master_key: {key}
  cache: true
  cache_params:
    type: redis
    ttl: 600
inferq_settings:
  key_prefix: {prefix}
"""
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str, redis_url: str, fake: FakeBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("cache")
    with running(CONFIG, redis_url, tmp, api_base=fake.api_base, prefix=module_prefix) as fab:
        yield fab


@pytest.fixture(autouse=True)
def _reset(fake: FakeBackend) -> None:
    fake.behaviour = Behaviour()
    fake.requests.clear()


_counter = iter(range(10**6))


def unique() -> str:
    """A prompt no other test uses, so each test starts with an empty cache."""
    return f"question {next(_counter)} {time.monotonic_ns()}"


def ask(
    fabric: Fabric, body: dict[str, object], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        fabric.base_url + "/v1/chat/completions",
        json=body,
        headers={**AUTH, **(headers or {})},
        timeout=30,
    )


def chat(prompt: str, **kw: object) -> dict[str, object]:
    return {"model": "fake", "messages": [{"role": "user", "content": prompt}], **kw}


@pytest.mark.topologies
def test_second_identical_request_is_a_hit_without_the_backend(
    fabric: Fabric, fake: FakeBackend
) -> None:
    prompt = unique()
    first = ask(fabric, chat(prompt))
    second = ask(fabric, chat(prompt))
    assert first.headers["x-inferq-cache"] == "miss"
    assert second.headers["x-inferq-cache"] == "hit"
    assert len(fake.requests) == 1
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["usage"] == first.json()["usage"]
    assert second.json()["id"] != first.json()["id"]


def test_equal_requests_written_differently_share_an_entry(
    fabric: Fabric, fake: FakeBackend
) -> None:
    prompt = unique()
    ask(fabric, chat(prompt))
    # Other key order, the config's defaults spelled out, another user, through an alias.
    body = {"temperature": 0.5, "messages": [{"content": prompt, "role": "user"}],
            "user": "someone", "max_tokens": 4, "model": "same"}  # fmt: skip
    again = ask(fabric, body)
    assert again.headers["x-inferq-cache"] == "hit"
    assert again.json()["model"] == "same"
    different = ask(fabric, chat(prompt, temperature=0.9))
    assert different.headers["x-inferq-cache"] == "miss"
    assert len(fake.requests) == 2


def sse_events(resp: httpx.Response) -> list[dict[str, object] | str]:
    events: list[dict[str, object] | str] = []
    for line in resp.text.splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


def normalise(events: list[dict[str, object] | str]) -> list[object]:
    return [e if isinstance(e, str) else {k: v for k, v in e.items() if k not in ("id", "created")}
            for e in events]  # fmt: skip


def test_stream_replay_has_the_format_of_a_live_stream(fabric: Fabric, fake: FakeBackend) -> None:
    prompt = unique()
    body = chat(prompt, stream=True, stream_options={"include_usage": True})
    live = ask(fabric, body)
    replayed = ask(fabric, body)
    assert replayed.headers["x-inferq-cache"] == "hit"
    assert replayed.headers["content-type"].startswith("text/event-stream")
    live_events, replay_events = sse_events(live), sse_events(replayed)
    assert replay_events[-1] == "[DONE]"
    text = "".join(
        c["delta"].get("content") or ""  # type: ignore[index, union-attr]
        for e in replay_events
        if isinstance(e, dict)
        for c in e["choices"]  # type: ignore[attr-defined]
    )
    assert text == "w0 w1 w2 w3 "
    # Same objects, fields, finish and usage chunk; only ids, timestamps and chunking differ.
    assert {k for e in live_events if isinstance(e, dict) for k in e} == {
        k for e in replay_events if isinstance(e, dict) for k in e
    }
    assert normalise(live_events)[-2:] == normalise(replay_events)[-2:]  # usage chunk, [DONE]
    assert len(fake.requests) == 1
    # The same entry answers a plain request too.
    plain = ask(fabric, chat(prompt))
    assert plain.headers["x-inferq-cache"] == "hit"
    assert plain.json()["choices"][0]["message"]["content"] == "w0 w1 w2 w3 "


def test_plain_entry_replays_as_a_stream(fabric: Fabric) -> None:
    prompt = unique()
    ask(fabric, chat(prompt))
    replayed = ask(fabric, chat(prompt, stream=True))
    assert replayed.headers["x-inferq-cache"] == "hit"
    events = sse_events(replayed)
    assert events[-1] == "[DONE]"
    finishes = [c.get("finish_reason") for e in events if isinstance(e, dict)
                for c in e["choices"]]  # type: ignore[attr-defined]  # fmt: skip
    assert finishes[-1] == "stop"


def test_ttl_expires(fabric: Fabric, fake: FakeBackend) -> None:
    prompt = unique()
    ask(fabric, chat(prompt, cache={"ttl": 1}))
    assert ask(fabric, chat(prompt)).headers["x-inferq-cache"] == "hit"
    time.sleep(1.2)
    assert ask(fabric, chat(prompt)).headers["x-inferq-cache"] == "miss"
    assert len(fake.requests) == 2


def test_controls(fabric: Fabric, fake: FakeBackend) -> None:
    prompt = unique()
    ask(fabric, chat(prompt))
    assert ask(fabric, chat(prompt, cache={"no-cache": True})).headers["x-inferq-cache"] == "miss"
    assert (
        ask(fabric, chat(prompt), {"Cache-Control": "no-cache"}).headers["x-inferq-cache"] == "miss"
    )
    assert len(fake.requests) == 3
    time.sleep(1.1)
    old = ask(fabric, chat(prompt, cache={"s-maxage": 1}))
    assert old.headers["x-inferq-cache"] == "miss"  # the entry is older than the client accepts
    other = unique()
    ask(fabric, chat(other, cache={"no-store": True}))
    assert ask(fabric, chat(other)).headers["x-inferq-cache"] == "miss"
    ask(fabric, chat(other, cache={"namespace": "team-a"}))
    assert (
        ask(fabric, chat(other, cache={"namespace": "team-a"})).headers["x-inferq-cache"] == "hit"
    )
    assert (
        ask(fabric, chat(other, cache={"namespace": "team-b", "no-store": True})).headers[
            "x-inferq-cache"
        ]
        == "miss"
    )


def test_failures_and_cut_streams_are_not_cached(fabric: Fabric, fake: FakeBackend) -> None:
    prompt = unique()
    fake.behaviour.status = 500
    assert ask(fabric, chat(prompt)).status_code == 502
    fake.behaviour.status = 200
    assert ask(fabric, chat(prompt)).headers["x-inferq-cache"] == "miss"
    cut = unique()
    fake.behaviour.drop_after, fake.behaviour.token_delay = 2, 0.01
    assert '"error"' in ask(fabric, chat(cut, stream=True)).text
    fake.behaviour.drop_after = None
    assert ask(fabric, chat(cut, stream=True)).headers["x-inferq-cache"] == "miss"


@pytest.mark.topologies
def test_single_flight_two_concurrent_requests_one_backend_call(
    fabric: Fabric, fake: FakeBackend
) -> None:
    prompt = unique()
    fake.behaviour.first_token_delay = 0.5
    results: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: results.append(ask(fabric, chat(prompt)))) for _ in range(2)
    ]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(10)
    assert [r.status_code for r in results] == [200, 200]
    assert sorted(r.headers["x-inferq-cache"] for r in results) == ["hit", "miss"]
    assert results[0].json()["choices"] == results[1].json()["choices"]
    assert len(fake.requests) == 1


def test_cache_params_host_puts_the_cache_on_its_own_redis() -> None:
    from inferq.api.app import cache_url
    from inferq.config import parse_config

    text = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, api_base: 'http://127.0.0.1:1/v1'}\n"
    own = parse_config(
        text
        + "litellm_settings:\n  cache: true\n"
        + "  cache_params: {host: cachehost, port: 6380, password: 'p@ss'}\n",
        env={},
    )
    assert cache_url(own.cache, "redis://fabric:6379/0") == "redis://:p%40ss@cachehost:6380/0"
    shared = parse_config(text + "general_settings:\n  cache: true\n", env={})
    assert cache_url(shared.cache, "redis://fabric:6379/0") == "redis://fabric:6379/0"
