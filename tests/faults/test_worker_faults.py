"""Workers that die or stop: SIGKILL mid-stream, a job that kills every worker, SIGTERM."""

import os
import signal
import threading
import time
from collections.abc import Callable

import openai
import pytest
import redis as sync_redis

from tests.faults.conftest import deployment, models, settings
from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import FakeBackend

MESSAGES = [{"role": "user", "content": "hi"}]


def stream_text(fabric: Fabric, out: dict[str, object], **kw: object) -> None:
    """Run a streamed request to completion in a thread; record text, finish and error."""
    try:
        with openai.OpenAI(
            base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=60
        ) as client:
            chunks = list(
                client.chat.completions.create(
                    model="g",
                    messages=MESSAGES,
                    stream=True,
                    **kw,  # type: ignore[arg-type, call-overload]
                )
            )
        out["text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        out["finish"] = chunks[-1].choices[0].finish_reason
    except openai.APIError as exc:
        out["error"] = exc


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.mark.topologies
def test_sigkill_mid_stream_is_reclaimed_and_completed(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    # A 3-second stream: time to start the survivor even on a loaded machine.
    backend.behaviour.token_delay = 0.075
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings())
    victim = fabric.start_worker("victim")
    fabric.start_api()
    out: dict[str, object] = {}
    client = threading.Thread(target=stream_text, args=(fabric, out), kwargs={"max_tokens": 40})
    client.start()
    wait_for(lambda: backend.active == 1, 10)
    fabric.start_worker("survivor")  # started after the victim took the job
    time.sleep(0.3)  # a few tokens reach the client
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    client.join(30)
    assert "error" not in out, out.get("error")
    assert out["finish"] == "stop"
    text = str(out["text"])
    # The victim's words, then the survivor's answer, carrying on from them.
    partial = backend.requests[1]["messages"][-1]
    assert partial["role"] == "assistant"
    assert partial["content"].startswith("w0 w1 ")
    # The survivor was asked only for the tokens still due: 40 in all, however they split.
    left = 40 - len(partial["content"].split())
    assert backend.requests[1]["max_tokens"] == left
    assert text == partial["content"] + "".join(f"w{i} " for i in range(left))
    assert time.monotonic() - killed_at < 10  # reclaimed within the heartbeat TTL
    assert "reclaimed 1 jobs from dead worker" in fabric.log("survivor")


def test_job_that_kills_every_worker_is_dead_lettered_with_a_clear_error(
    backends: Callable[[], FakeBackend],
    fabric_for: Callable[..., Fabric],
    redis_url: str,
    prefix: str,
) -> None:
    backend = backends()
    backend.behaviour.first_token_delay = 60  # the job never finishes on its own
    yaml = models(deployment("g", backend.api_base)) + settings(fabric="  max_deliveries: 1\n")
    fabric = fabric_for(yaml)
    fabric.start_worker("w1")
    fabric.start_api()
    out: dict[str, object] = {}
    client = threading.Thread(target=stream_text, args=(fabric, out), kwargs={"max_tokens": 3})
    client.start()
    wait_for(lambda: len(backend.requests) == 1, 10)
    os.kill(fabric.procs["w1"].pid, signal.SIGKILL)
    fabric.start_worker("w2")
    client.join(30)
    error = out.get("error")
    assert isinstance(error, openai.APIStatusError)
    assert error.status_code == 502
    assert "abandoned 1 times" in error.message
    r = sync_redis.Redis.from_url(redis_url)
    dead = r.xrange(f"{prefix}:{{g}}:dead")
    assert len(dead) == 1
    assert dead[0][1][b"reason"].startswith(b"max_deliveries")
    assert len(backend.requests) == 1  # never sent to a backend again
    r.close()


def test_sigterm_finishes_in_flight_stream_then_exits(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.token_delay = 0.05
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings())
    worker = fabric.start_worker()
    fabric.start_api()
    out: dict[str, object] = {}
    client = threading.Thread(target=stream_text, args=(fabric, out), kwargs={"max_tokens": 20})
    client.start()
    wait_for(lambda: backend.active == 1, 10)
    worker.terminate()
    client.join(30)
    assert out.get("finish") == "stop", out
    assert out["text"] == "".join(f"w{i} " for i in range(20))
    assert worker.wait(10) == 0
    assert len(backend.requests) == 1
