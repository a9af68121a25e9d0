"""Redis behind Sentinel: the primary is SIGKILLed with 100 requests in flight.

Every request must complete or fail clearly (an OpenAI error body, or an SSE error event), none
may hang or end silently, and API and worker must follow the promoted replica by themselves.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.faults.conftest import AUTH, deployment, models, settings
from tests.support.fabric import Fabric
from tests.support.fake_backend import FakeBackend
from tests.support.topology import SentinelTopology, redis_server

pytestmark = pytest.mark.skipif(redis_server() is None, reason="no redis-server installed")

IN_FLIGHT = 100
TOKENS = 16
EXPECTED = "".join(f"w{i} " for i in range(TOKENS))


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    topology = SentinelTopology(workdir).start()
    yield topology
    topology.stop()


async def one(http: httpx.AsyncClient, url: str, i: int, why: Counter[str]) -> tuple[str, float]:
    """One request; how it ended (completed, failed clearly, lost, garbled) and how long it took."""
    body = {
        "model": "g",
        "messages": [{"role": "user", "content": f"request {i}"}],
        "max_tokens": TOKENS,
        "stream": i % 2 == 0,
    }
    started = time.monotonic()
    try:
        call = streamed(http, url, body, why) if body["stream"] else plain(http, url, body, why)
        kind = await call
    except httpx.HTTPError:
        kind = "lost"
    return kind, time.monotonic() - started


async def plain(
    http: httpx.AsyncClient, url: str, body: dict[str, object], why: Counter[str]
) -> str:
    resp = await http.post(url, json=body)
    if resp.status_code != 200:
        return failed(resp.status_code, resp.json(), why)
    text = resp.json()["choices"][0]["message"]["content"]
    return "completed" if text == EXPECTED else "garbled"


async def streamed(
    http: httpx.AsyncClient, url: str, body: dict[str, object], why: Counter[str]
) -> str:
    async with http.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return failed(resp.status_code, resp.json(), why)
        text, finish, done, error = "", None, False, None
        async for line in resp.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = orjson.loads(line[6:])
                error = error or event.get("error")
                for choice in event.get("choices") or []:
                    text += (choice.get("delta") or {}).get("content") or ""
                    finish = choice.get("finish_reason") or finish
    if error:
        return failed(200, {"error": error}, why)
    if not done or finish is None:
        return "lost"
    return "completed" if text == EXPECTED else "garbled"


def failed(status: int, body: dict[str, object], why: Counter[str]) -> str:
    """A failure is clear when it carries an OpenAI error; counted by status and message."""
    error = body.get("error")
    if not isinstance(error, dict):
        return "lost"
    why[f"{'SSE error' if status == 200 else status}: {error.get('message')}"] += 1
    return "failed"


async def first_answer(http: httpx.AsyncClient, url: str, since: float) -> float:
    """Seconds from `since` until a new request is answered again."""
    body = {"model": "g", "messages": [{"role": "user", "content": "probe"}], "max_tokens": 2}
    while time.monotonic() - since < 60:
        try:
            if (await http.post(url, json=body, timeout=5)).status_code == 200:
                return time.monotonic() - since
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("service did not come back within 60 s of the failover")


async def test_primary_killed_with_requests_in_flight(
    topology: SentinelTopology,
    backends: Callable[[], FakeBackend],
    fabric_for: Callable[..., Fabric],
) -> None:
    backend = backends()
    backend.behaviour.token_delay = 0.05  # 16 tokens: 0.8 s per answer
    yaml = models(deployment("g", backend.api_base, max_parallel_requests=IN_FLIGHT))
    fabric = fabric_for(yaml + settings(num_retries=2), redis=topology.url)
    fabric.start_worker()
    fabric.start_api()
    old_primary = topology.primary()
    url = fabric.base_url + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=IN_FLIGHT + 10)
    async with httpx.AsyncClient(timeout=90, headers=AUTH, limits=limits) as http:
        why: Counter[str] = Counter()
        tasks = [asyncio.create_task(one(http, url, i, why)) for i in range(IN_FLIGHT)]
        deadline = time.monotonic() + 20
        while backend.active < IN_FLIGHT // 2:  # most of them are being answered
            assert time.monotonic() < deadline, f"only {backend.active} requests in flight"
            await asyncio.sleep(0.02)
        active_at_kill = backend.active
        killed = time.monotonic()
        await asyncio.to_thread(topology.kill_primary)
        probe = asyncio.create_task(first_answer(http, url, killed))
        outcomes = await asyncio.gather(*tasks)
        down = await probe
    ends = Counter(kind for kind, _ in outcomes)
    slowest = max(elapsed for _, elapsed in outcomes)
    print(
        f"\nfailover: {IN_FLIGHT} in flight, {active_at_kill} backend calls at the kill; "
        f"completed {ends['completed']}, failed clearly {ends['failed']}, lost {ends['lost']}, "
        f"garbled {ends['garbled']}; service answered again {down:.1f} s after the kill; "
        f"slowest request {slowest:.1f} s; primary {old_primary} -> {topology.primary()}"
    )
    for reason, n in why.most_common():
        print(f"  {n:3d}  {reason}")
    assert ends["lost"] == 0 and ends["garbled"] == 0, ends
    assert ends["completed"] + ends["failed"] == IN_FLIGHT
    assert slowest < 60  # nobody hung
    assert topology.primary() != old_primary
    assert down < 30
