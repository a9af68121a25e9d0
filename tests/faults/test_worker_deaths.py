"""A worker SIGKILLed at each moment of a job: its client still gets every token once and one end.

The streamed cases run on a single Redis and on a Sentinel-managed primary (`topologies`).
The moments are hit deterministically: the fake backend holds its stream at a chosen point (the
test kills the worker while it waits there, once what it read has reached Redis), or the worker
kills itself with the backend's whole answer in hand (`INFERQ_CRASH_AT=before-terminal`).
"""

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from tests.faults.conftest import AUTH, deployment, models, settings
from tests.faults.test_worker_faults import wait_for
from tests.support.fabric import Fabric
from tests.support.fake_backend import FakeBackend
from tests.support.topology import sync_client

WORDS8 = "".join(f"w{i} " for i in range(8))


@dataclass
class Seen:
    """What a client of a streamed request saw, event by event."""

    status: int = 0
    text: str = ""
    finishes: list[str] = field(default_factory=list)
    dones: int = 0
    errors: list[Any] = field(default_factory=list)
    usage: dict[str, Any] | None = None


def stream(fabric: Fabric, seen: Seen, **body: Any) -> None:
    """One streamed chat request, read raw so a second end or a repeated token would show."""
    request = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    url = fabric.base_url + "/v1/chat/completions"
    with httpx.stream("POST", url, json={**request, **body}, headers=AUTH, timeout=60) as resp:
        seen.status = resp.status_code
        for line in resp.iter_lines():
            if line == "data: [DONE]":
                seen.dones += 1
            elif line.startswith("data: "):
                event = orjson.loads(line[6:])
                if "error" in event:
                    seen.errors.append(event["error"])
                seen.usage = event.get("usage") or seen.usage
                for choice in event.get("choices") or []:
                    seen.text += (choice.get("delta") or {}).get("content") or ""
                    if choice.get("finish_reason"):
                        seen.finishes.append(choice["finish_reason"])


def published(redis_url: str, prefix: str) -> tuple[str, str | None]:
    """The text and finish_reason a stream job's holder has published (its progress record)."""
    r = sync_client(redis_url)
    text, finish = "", None
    try:
        for key in r.scan_iter(f"{prefix}:{{g}}:progress:*"):
            for raw in r.lrange(key, 0, -1):
                for choices in orjson.loads(raw).get("chunks") or []:
                    for choice in choices:
                        text += (choice.get("delta") or {}).get("content") or ""
                        finish = choice.get("finish_reason") or finish
    finally:
        r.close()
    return text, finish


@dataclass(frozen=True)
class Moment:
    """Where the victim dies, and what the survivor must then do."""

    hold_at: int | None = None
    hold_after_finish: bool = False
    tokens: int | None = None  # the backend's natural answer length (None: max_tokens)
    max_tokens: int | None = 8
    sent: str = ""  # what the client has when the victim dies
    finish_sent: bool = False
    backend_calls: int = 2  # in all, victim and survivor
    finish: str = "stop"


MOMENTS = {
    "before the first token": Moment(hold_at=0),
    "between tokens": Moment(hold_at=3, sent="w0 w1 w2 "),
    # max_tokens reached: the survivor knows nothing more is due without asking the backend.
    "after the last token": Moment(hold_at=8, sent=WORDS8, backend_calls=1, finish="length"),
    # No max_tokens: only the backend can say the answer is over; asked, it says just that.
    "after the last token, natural stop": Moment(hold_at=8, tokens=8, max_tokens=None, sent=WORDS8),
    "after the backend's finish": Moment(
        hold_after_finish=True, sent=WORDS8, finish_sent=True, backend_calls=1
    ),
}


@pytest.mark.topologies
@pytest.mark.parametrize("moment", MOMENTS.values(), ids=list(MOMENTS))
def test_stream_survives_a_worker_killed_at_any_moment(
    moment: Moment,
    backends: Callable[[], FakeBackend],
    fabric_for: Callable[..., Fabric],
    redis_url: str,
    prefix: str,
) -> None:
    backend = backends()
    b = backend.behaviour
    b.hold_at, b.hold_after_finish, b.tokens, b.continues = (
        moment.hold_at,
        moment.hold_after_finish,
        moment.tokens,
        True,
    )
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings())
    victim = fabric.start_worker("victim")
    fabric.start_api()
    seen = Seen()
    body: dict[str, Any] = {"stream_options": {"include_usage": True}}
    if moment.max_tokens:
        body["max_tokens"] = moment.max_tokens
    client = threading.Thread(target=stream, args=(fabric, seen), kwargs=body)
    client.start()
    wait_for(lambda: backend.held == 1, 15)
    # Everything the victim read has reached the client (and the progress record).
    expected = (moment.sent, "stop" if moment.finish_sent else None)
    wait_for(lambda: published(redis_url, prefix) == expected, 10)
    fabric.start_worker("survivor")
    os.kill(victim.pid, signal.SIGKILL)
    client.join(40)
    assert not client.is_alive()
    assert seen.status == 200 and not seen.errors, seen
    assert seen.text == WORDS8  # every token once
    assert seen.finishes == [moment.finish]  # one end
    assert seen.dones == 1
    assert seen.usage is not None and seen.usage["completion_tokens"] == 8
    assert len(backend.requests) == moment.backend_calls
    if moment.backend_calls == 2 and moment.sent:
        # The survivor asked only for what was still due, after what the client had.
        carry_on = backend.requests[1]
        assert carry_on["messages"][-1] == {"role": "assistant", "content": moment.sent}
        if moment.max_tokens:
            assert carry_on["max_tokens"] == moment.max_tokens - len(moment.sent.split())
    assert "reclaimed 1 jobs from dead worker" in fabric.log("survivor")


@pytest.mark.topologies
def test_stream_whose_worker_dies_after_the_backend_finished_ends_once(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings())
    victim = fabric.start_worker("victim", env={"INFERQ_CRASH_AT": "before-terminal"})
    fabric.start_api()
    seen = Seen()
    body = {"max_tokens": 8, "stream_options": {"include_usage": True}}
    client = threading.Thread(target=stream, args=(fabric, seen), kwargs=body)
    client.start()
    wait_for(lambda: victim.poll() is not None, 20)
    assert victim.returncode == -signal.SIGKILL
    fabric.start_worker("survivor")
    client.join(40)
    assert seen.status == 200 and not seen.errors, seen
    assert seen.text == WORDS8
    assert seen.finishes == ["stop"]
    assert seen.dones == 1
    assert seen.usage is not None and seen.usage["completion_tokens"] == 8
    assert len(backend.requests) == 1  # the survivor only ended it


def test_non_stream_answer_whose_worker_dies_before_replying_is_answered_once(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    fabric = fabric_for(models(deployment("g", backend.api_base)) + settings())
    victim = fabric.start_worker("victim", env={"INFERQ_CRASH_AT": "before-terminal"})
    fabric.start_api()
    out: dict[str, httpx.Response] = {}
    request = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    def ask() -> None:
        out["resp"] = httpx.post(
            fabric.base_url + "/v1/chat/completions", json=request, headers=AUTH, timeout=60
        )

    client = threading.Thread(target=ask)
    client.start()
    wait_for(lambda: victim.poll() is not None, 20)
    assert len(backend.requests) == 1  # the victim had its answer, and died with it
    fabric.start_worker("survivor")
    client.join(40)
    resp = out["resp"]
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == WORDS8
    # The survivor asked again (nobody had received the first answer), and answered once.
    assert len(backend.requests) == 2
    assert "reclaimed 1 jobs from dead worker" in fabric.log("survivor")
