"""Backends that fail: 500, 429 with Retry-After, hangs, refused connections, dropped streams."""

import time
from collections.abc import Callable

import httpx
import openai

from tests.faults.conftest import AUTH, deployment, models, settings
from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import FakeBackend

MESSAGES = [{"role": "user", "content": "hi"}]


def post(fabric: Fabric, **body: object) -> httpx.Response:
    payload = {"model": "g", "messages": MESSAGES, "max_tokens": 3, **body}
    return httpx.post(
        fabric.base_url + "/v1/chat/completions", json=payload, headers=AUTH, timeout=30
    )


def sdk(fabric: Fabric) -> openai.OpenAI:
    return openai.OpenAI(base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0)


def test_500_is_retried_invisibly(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.status, backend.behaviour.fail_first = 500, 2
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings(num_retries=2))
    fabric.start_worker()
    fabric.start_api()
    resp = post(fabric)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "w0 w1 w2 "
    assert resp.headers["x-inferq-attempts"] == "3"
    assert len(backend.requests) == 3


def test_retries_exhausted_gives_clear_502(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.status = 503
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings(num_retries=1))
    fabric.start_worker()
    fabric.start_api()
    resp = post(fabric)
    assert resp.status_code == 502
    assert "returned 503" in resp.json()["error"]["message"]
    assert len(backend.requests) == 2
    # The request's own num_retries wins over the config's.
    backend.requests.clear()
    assert post(fabric, num_retries=0).status_code == 502
    assert len(backend.requests) == 1


def test_429_retry_after_is_honoured(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    b = backend.behaviour
    b.status, b.fail_first, b.retry_after = 429, 1, "1"
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings(num_retries=2))
    fabric.start_worker()
    fabric.start_api()
    started = time.monotonic()
    resp = post(fabric)
    assert resp.status_code == 200
    assert time.monotonic() - started >= 1.0
    assert len(backend.requests) == 2


def test_400_is_not_retried(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.status = 400
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings(num_retries=3))
    fabric.start_worker()
    fabric.start_api()
    assert post(fabric).status_code == 400
    assert len(backend.requests) == 1


def test_hanging_backend_times_out_on_stream_timeout_then_retries(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.hang_first = 1
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings(num_retries=1))
    fabric.start_worker()
    fabric.start_api()
    with sdk(fabric) as client:
        stream = client.chat.completions.create(
            model="g",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=4,
            stream=True,
            extra_body={"stream_timeout": 0.5},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "w0 w1 w2 w3 "
    assert len(backend.requests) == 2


def test_deadline_while_backend_hangs_is_504(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.hang_first = 10
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings(num_retries=0))
    fabric.start_worker()
    fabric.start_api()
    started = time.monotonic()
    resp = post(fabric, timeout=1)
    assert resp.status_code == 504
    assert "timed out" in resp.json()["error"]["message"]
    assert time.monotonic() - started < 3


def test_refused_connection_cools_down_and_the_healthy_deployment_serves(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    healthy = backends()
    dead_base = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    yaml = models(
        deployment("g", dead_base, id="broken"), deployment("g", healthy.api_base, id="healthy")
    ) + settings(num_retries=3, allowed_fails=0, cooldown_time=30)
    fabric = fabric_for(yaml)
    fabric.start_worker()
    fabric.start_api()
    for _ in range(4):
        resp = post(fabric)
        assert resp.status_code == 200
        assert (
            resp.headers["x-inferq-deployment"] == "healthy"
            or resp.headers["x-inferq-attempts"] != "1"
        )
    health = httpx.get(fabric.base_url + "/health", headers=AUTH).json()
    broken = health["groups"]["g"]["deployments"]["broken"]
    assert broken["cooldown_s"] > 0
    assert "cooling down" in broken["reason"]


def test_exhausted_group_falls_back_to_the_next(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    failing, steady = backends(), backends()
    failing.behaviour.status = 500
    yaml = models(deployment("g", failing.api_base), deployment("backup", steady.api_base))
    yaml += settings(num_retries=1, fallbacks="[{g: [backup]}]")
    fabric = fabric_for(yaml)
    fabric.start_worker()
    fabric.start_api()
    resp = post(fabric)
    assert resp.status_code == 200
    assert resp.headers["x-inferq-model-group"] == "backup"
    assert resp.headers["x-inferq-attempts"] == "3"
    assert resp.json()["model"] == "g"
    assert len(failing.requests) == 2 and len(steady.requests) == 1
    # disable_fallbacks keeps the job on its group.
    assert post(fabric, disable_fallbacks=True).status_code == 502


def test_per_request_fallbacks(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    failing, steady = backends(), backends()
    failing.behaviour.status = 500
    yaml = models(deployment("g", failing.api_base), deployment("other", steady.api_base))
    yaml += settings(num_retries=0)
    fabric = fabric_for(yaml)
    fabric.start_worker()
    fabric.start_api()
    assert post(fabric).status_code == 502
    resp = post(fabric, fallbacks=["other"])
    assert resp.status_code == 200
    assert resp.headers["x-inferq-model-group"] == "other"
    bad = post(fabric, fallbacks=["nope"])
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "fallbacks"


def test_stream_cut_mid_answer_continues_on_the_fallback(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    flaky, steady = backends(), backends()
    flaky.behaviour.drop_after = 3
    flaky.behaviour.token_delay = 0.01
    steady.behaviour.tokens = 2
    yaml = models(deployment("flaky", flaky.api_base), deployment("steady", steady.api_base))
    fabric = fabric_for(yaml + settings(aliases={"g": ["flaky", "steady"]}, num_retries=2))
    fabric.start_worker()
    fabric.start_api()
    with sdk(fabric) as client:
        chunks = list(
            client.chat.completions.create(
                model="g",
                messages=MESSAGES,
                max_tokens=10,
                stream=True,  # type: ignore[arg-type]
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 " + "w0 w1 "  # flaky's three words, then steady's answer
    assert chunks[-1].choices[0].finish_reason == "stop"
    roles = [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role]
    assert roles == ["assistant"]  # one coherent message
    # steady was asked to carry on from what the client already had.
    assert steady.requests[0]["messages"][-1] == {"role": "assistant", "content": "w0 w1 w2 "}


def test_fallback_nobody_serves_fails_fast_instead_of_waiting(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    failing, idle = backends(), backends()
    failing.behaviour.status = 500
    yaml = models(deployment("g", failing.api_base), deployment("orphan", idle.api_base))
    fabric = fabric_for(yaml + settings(num_retries=0, fallbacks="[{g: [orphan]}]"))
    fabric.start_worker("worker", "--group", "g")  # nobody serves `orphan`
    fabric.start_api()
    started = time.monotonic()
    resp = post(fabric)
    assert resp.status_code == 502
    assert time.monotonic() - started < 5
    assert idle.requests == []


def test_a_cooling_group_is_skipped_up_front(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    failing, steady = backends(), backends()
    failing.behaviour.status = 500
    yaml = models(deployment("a", failing.api_base), deployment("b", steady.api_base))
    fabric = fabric_for(
        yaml + settings(aliases={"g": ["a", "b"]}, num_retries=0, allowed_fails=0, cooldown_time=30)
    )
    fabric.start_worker()
    fabric.start_api()
    first = post(fabric)  # a fails once: it cools down, and this request falls back to b
    assert first.headers["x-inferq-model-group"] == "b"
    time.sleep(1.5)  # the API's view of cooldowns refreshes every second
    started = time.monotonic()
    second = post(fabric)
    assert second.headers["x-inferq-model-group"] == "b"
    assert second.headers["x-inferq-attempts"] == "1"  # straight to b, no wasted try on a
    assert time.monotonic() - started < 2
    assert len(failing.requests) == 1
