"""Redis Sentinel failover under load: the primary is SIGKILLed with 100 requests in flight.

Every request must end, within its deadline, either complete or with a clear error (an
OpenAI error body, or an SSE error event); none may hang or end silently short. The API and
the worker follow the new primary by themselves, and the figures (completed, failed clearly,
seconds without service) are printed for the record.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from tests.faults.conftest import deployment, models, settings
from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import FakeBackend
from tests.support.topology import SentinelSet

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
IN_FLIGHT = 100
TOKENS = 20


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    servers = SentinelSet().start()
    yield servers
    servers.stop()


async def _one(client: httpx.AsyncClient, i: int) -> str:
    """How request `i` ended: complete, clear (an error the client is told), silent or hung."""
    stream = i % 2 == 0
    body = {
        "model": "g",
        "messages": [{"role": "user", "content": f"q{i}"}],
        "max_tokens": TOKENS,
        "stream": stream,
        "cache": {"no-cache": True, "no-store": True},
    }
    try:
        if not stream:
            r = await client.post("/v1/chat/completions", json=body)
            if r.status_code == 200:
                text = r.json()["choices"][0]["message"]["content"]
                return "complete" if len(text.split()) == TOKENS else "silent"
            return "clear" if "error" in r.json() else "silent"
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return "clear" if "error" in r.json() else "silent"
            words, finished = 0, False
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = orjson.loads(line[6:])
                if "error" in event:
                    return "clear"
                for choice in event.get("choices", []):
                    words += len((choice["delta"].get("content") or "").split())
                    finished = finished or choice.get("finish_reason") is not None
            return "complete" if finished and words == TOKENS else "silent"
    except httpx.TimeoutException:
        return "hung"


async def _downtime(client: httpx.AsyncClient, killed: asyncio.Event, done: asyncio.Event) -> float:
    """Seconds from the kill until a new request is answered again."""
    await killed.wait()
    start = time.monotonic()
    body = {"model": "g", "messages": [{"role": "user", "content": "probe"}], "max_tokens": 1}
    while not done.is_set() or time.monotonic() - start < 60:
        try:
            r = await client.post("/v1/chat/completions", json=body, timeout=5)
            if r.status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    return float("inf")


async def test_primary_killed_with_100_requests_in_flight(
    sentinels: SentinelSet,
    backends: Callable[[], FakeBackend],
    fabric_for: Callable[..., Fabric],
) -> None:
    backend = backends()
    backend.behaviour.token_delay = 0.1  # two seconds an answer: all 100 are running at the kill
    backend.behaviour.complete_delay = 2.0
    yaml = models(deployment("g", backend.api_base, max_parallel_requests=IN_FLIGHT)) + settings(
        num_retries=0
    )
    fabric = fabric_for(yaml, redis=sentinels.url)
    fabric.start_worker()
    fabric.start_api()
    killed, done = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(
        base_url=fabric.base_url, headers=AUTH, timeout=httpx.Timeout(45.0)
    ) as client:
        probe = asyncio.create_task(_downtime(client, killed, done))
        requests = [asyncio.create_task(_one(client, i)) for i in range(IN_FLIGHT)]
        deadline = time.monotonic() + 20
        while backend.active < IN_FLIGHT * 0.9:
            assert time.monotonic() < deadline, f"only {backend.active} in flight"
            await asyncio.sleep(0.02)
        old = await asyncio.to_thread(sentinels.kill_primary)
        killed.set()
        failover_s = await asyncio.to_thread(sentinels.wait_failover, old)
        outcomes = Counter(await asyncio.gather(*requests))
        done.set()
        downtime = await asyncio.wait_for(probe, 90)
        after = await client.post(
            "/v1/chat/completions",
            json={"model": "g", "messages": [{"role": "user", "content": "after"}]},
        )
    print(
        f"\nfailover: {IN_FLIGHT} in flight: completed {outcomes['complete']}, failed clearly "
        f"{outcomes['clear']}, silent {outcomes['silent']}, hung {outcomes['hung']}; "
        f"sentinels promoted the replica in {failover_s:.1f} s; "
        f"no service for {downtime:.1f} s after the kill"
    )
    assert outcomes["hung"] == 0 and outcomes["silent"] == 0, outcomes
    assert outcomes["complete"] + outcomes["clear"] == IN_FLIGHT
    assert downtime < 30
    assert after.status_code == 200, after.text
