"""Usage and cost per request, aggregated per day by group, deployment and key; /metrics."""

import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferq.api.accounting import usage as usage_module
from inferq.api.accounting.record import UsageRecord
from inferq.api.accounting.usage import Metrics, UsageRecorder
from inferq.broker.connection import connect
from inferq.broker.keys import Keys
from inferq.cli.local import EmbeddedRedis, free_port
from inferq.config import parse_config
from tests.support.fabric import MASTER_KEY, Fabric, running
from tests.support.fake_backend import FakeBackend

CONFIG = """
model_list:
  - model_name: priced
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
  - model_name: local
    litellm_params:
      model: openai//models/x.gguf
      api_base: {api_base}
router_settings:
  num_retries: 0
  allowed_fails: 1000
general_settings:
  master_key: {key}
  cache: true
inferq_settings:
  key_prefix: {prefix}
"""
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str, redis_url: str, fake: FakeBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("usage")
    with running(CONFIG, redis_url, tmp, api_base=fake.api_base, prefix=module_prefix) as fab:
        yield fab


def post(fabric: Fabric, **body: object) -> httpx.Response:
    return httpx.post(fabric.base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def test_usage_matches_what_the_backend_reported(fabric: Fabric, fake: FakeBackend) -> None:
    sent: list[tuple[str, int, int]] = []  # (group, prompt, completion) as the backend counted
    for i in range(6):
        model = "priced" if i % 2 else "local"
        stream = i % 3 == 0
        words = 2 + i
        body = {
            "model": model,
            "max_tokens": words,
            "stream": stream,
            "messages": [{"role": "user", "content": f"usage run {i} {time.time_ns()}"}],
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        resp = post(fabric, **body)
        assert resp.status_code == 200
        prompt = len(body["messages"][0]["content"].split()) + 3  # type: ignore[index]
        sent.append((model, prompt, words))
        if not stream and model == "priced":
            expected = prompt * 0.000001 + words * 0.000002
            assert float(resp.headers["x-inferq-response-cost"]) == pytest.approx(expected)
    # A cache hit counts as a request, with no new cost.
    again = post(
        fabric, model="priced", max_tokens=3, messages=[{"role": "user", "content": "same"}]
    )
    hit = post(fabric, model="priced", max_tokens=3, messages=[{"role": "user", "content": "same"}])
    assert hit.headers["x-inferq-cache"] == "hit"
    sent.append(("priced", 4, 3))
    # A failure counts as an error.
    fake.behaviour.status = 500
    assert (
        post(fabric, model="local", messages=[{"role": "user", "content": "boom"}]).status_code
        == 502
    )
    fake.behaviour.status = 200

    report = httpx.get(fabric.base_url + "/usage", headers=AUTH).json()
    totals = report["totals"]
    assert totals["requests"] == 6 + 2 + 1
    assert totals["errors"] == 1
    assert totals["cache_hits"] == 1
    assert totals["prompt_tokens"] == sum(p for _, p, _ in sent) + 4  # the hit's tokens too
    assert totals["completion_tokens"] == sum(c for _, _, c in sent) + 3
    priced = [(p, c) for g, p, c in sent if g == "priced"]
    paid = priced[:-1]  # the last one is the hit: answered before, paid once
    assert totals["cost"] == pytest.approx(
        sum(p * 1e-6 + c * 2e-6 for p, c in paid) + (4e-6 + 6e-6)
    )
    assert set(report["by_group"]) == {"priced", "local"}
    assert report["by_group"]["local"]["cost"] == 0
    assert set(report["by_deployment"]) == {"priced.0", "local.0"}
    assert set(report["by_provider"]) == {"openai"}
    [(key, row)] = report["by_key"].items()
    assert MASTER_KEY not in key and row["requests"] == 9
    only = httpx.get(fabric.base_url + "/usage", params={"model": "local"}, headers=AUTH).json()
    assert only["totals"]["requests"] == 4
    assert again.status_code == 200


def test_usage_filters_are_validated_and_protected(fabric: Fabric) -> None:
    bad = httpx.get(fabric.base_url + "/usage", params={"start": "yesterday"}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "start"
    assert httpx.get(fabric.base_url + "/usage").status_code == 401
    past = httpx.get(
        fabric.base_url + "/usage",
        params={"start": "2020-01-01", "end": "2020-01-02"},
        headers=AUTH,
    ).json()
    assert past["totals"]["requests"] == 0 and len(past["days"]) == 2


def test_metrics_parse_and_count(fabric: Fabric) -> None:
    post(fabric, model="local", max_tokens=2, messages=[{"role": "user", "content": "metrics"}])
    text = httpx.get(fabric.base_url + "/metrics", headers=AUTH).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["inferq_requests"]
    ok = [
        s
        for s in requests.samples
        if s.name == "inferq_requests_total" and s.labels["status"] == "200"
    ]
    assert sum(s.value for s in ok) >= 1
    workers = {s.labels["deployment"]: s.value for s in families["inferq_live_workers"].samples}
    assert workers == {"priced.0": 1, "local.0": 1}
    assert "inferq_request_seconds" in families
    assert "inferq_queue_depth" in families
    assert MASTER_KEY not in text


async def test_while_redis_is_away_the_latest_records_wait_as_many_as_the_log_keeps(
    prefix: str,
) -> None:
    port = free_port()
    config = parse_config(
        "model_list: [{model_name: g, litellm_params: {model: openai/m, api_base: http://x}}]\n"
        f"inferq_settings: {{key_prefix: {prefix}, usage_log_length: 3}}\n",
        env={},
    )
    redis = connect(f"redis://127.0.0.1:{port}/0")  # nothing listens there yet
    recorder = UsageRecorder(redis, Keys(prefix), config, Metrics())
    record = UsageRecord("", "2026-12-02", "k", "g", "g", "g.0", "openai", "chat", 200, None,
                         False, 1, 1, 0.0, None, None, 1.0, 1)  # fmt: skip
    for n in range(5):
        recorder.add(replace(record, request_id=f"r{n}"), "g")
    await recorder.flush()  # Redis is away: kept for the next try
    recorder.add(replace(record, request_id="r5"), "g")
    server = EmbeddedRedis(port=port).start()
    try:
        await recorder.flush()
        logged = await redis.xrange(Keys(prefix).usage_log())
        assert [orjson.loads(fields[b"r"])["request_id"] for _, fields in logged] == [
            "r3",
            "r4",
            "r5",
        ]
        totals = await redis.hget(Keys(prefix).usage("2026-12-02", "group", "g"), "requests")
        assert totals == b"6"  # the totals lose nothing
    finally:
        await redis.aclose()
        server.stop()


async def test_an_unexpected_error_in_a_flush_loses_no_usage(
    prefix: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(
        "model_list: [{model_name: g, litellm_params: {model: openai/m, api_base: http://x}}]\n"
        f"inferq_settings: {{key_prefix: {prefix}}}\n",
        env={},
    )
    redis = connect(redis_url)
    recorder = UsageRecorder(redis, Keys(prefix), config, Metrics())
    record = UsageRecord("", "2026-12-02", "k", "g", "g", "g.0", "openai", "chat", 200, None,
                         False, 1, 1, 0.0, None, None, 1.0, 1)  # fmt: skip
    real_flush = usage_module.flush

    async def broken(*args: object) -> None:
        raise RuntimeError("a bug, not an outage")

    recorder.add(record, "g")
    monkeypatch.setattr(usage_module, "flush", broken)
    await recorder.flush()  # logged, not raised: the background task lives on
    monkeypatch.setattr(usage_module, "flush", real_flush)
    recorder.add(record, "g")
    try:
        await recorder.flush()
        totals = await redis.hget(Keys(prefix).usage("2026-12-02", "group", "g"), "requests")
        assert totals == b"2"
    finally:
        await redis.aclose()
