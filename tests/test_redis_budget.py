"""What one request costs Redis, and what many cost in connections: counted by a private Redis
(`INFO commandstats`) and by the kernel (the API process's sockets to Redis)."""

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bench.commands import per_request
from inferq.cli.local import EmbeddedRedis
from tests.support.fabric import MASTER_KEY, Fabric, running
from tests.support.fake_backend import FakeBackend

CONFIG = """
model_list:
  - model_name: fake
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      api_key: dummy
      max_parallel_requests: 128
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: budget
"""
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}
# What the once-a-second usage flush sends (broker/ops/usage.py), whatever the request count.
_USAGE_FLUSH = frozenset({"hincrby", "hincrbyfloat", "expire", "sadd"})


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own: nobody else's commands or connections in its counts."""
    server = EmbeddedRedis().start()
    try:
        yield server
    finally:
        server.stop()


def test_a_non_stream_request_costs_at_most_six_redis_commands(
    private_redis: EmbeddedRedis, backend: FakeBackend, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with (
        running(CONFIG, private_redis.url, tmp_path, api_base=backend.api_base) as fabric,
        httpx.Client(base_url=fabric.base_url, headers=HEADERS) as http,
    ):

        def send() -> None:
            assert http.post("/v1/chat/completions", json=body).status_code == 200

        logged = client.xlen("budget:usage:log")
        for _ in range(20):
            send()
        counts = per_request(client, send, 200, idle=2.0)
        # The usage log (one record per request) and the usage totals, written once a second
        # for all requests in one round trip, are accounting, not the request's path.
        records = client.xlen("budget:usage:log") - logged
    assert records == 220  # one per request, the 20 of the warm-up included
    counts["xadd"] = counts.get("xadd", 0.0) - 1.0
    path = sum(v for k, v in counts.items() if k not in _USAGE_FLUSH)
    assert path <= 6.0, counts
    assert counts.get("multi", 0) < 0.1 and counts.get("exec", 0) < 0.1, counts


def _redis_sockets(pid: int, port: int) -> int:
    """Established TCP connections of process `pid` to `port` on loopback."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                cols = row.split()
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if remote_port == port and cols[3] == "01" and cols[9] in inodes:
                    count += 1
    return count


async def _streams(fabric: Fabric, n: int) -> list[str]:
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "stream": True,
    }
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(
        base_url=fabric.base_url, headers=HEADERS, limits=limits, timeout=60
    ) as http:

        async def one() -> str:
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                return "".join([line async for line in response.aiter_lines()])

        return await asyncio.gather(*(one() for _ in range(n)))


def test_an_api_process_holds_at_most_16_redis_connections_for_100_streams(
    private_redis: EmbeddedRedis, backend: FakeBackend, tmp_path: Path
) -> None:
    backend.behaviour.first_token_delay = 3.0  # the 100 streams are all open at once
    with running(CONFIG, private_redis.url, tmp_path, api_base=backend.api_base) as fabric:
        pid = fabric.procs["api"].pid
        seen: list[int] = []

        async def watch_and_stream() -> list[str]:
            task = asyncio.create_task(_streams(fabric, 100))
            while not task.done():
                seen.append(_redis_sockets(pid, private_redis.port))
                await asyncio.sleep(0.1)
            return await task

        answers = asyncio.run(watch_and_stream())
    assert backend.max_active == 100  # they were concurrent
    assert all("[DONE]" in answer for answer in answers)
    assert seen and max(seen) <= 16, max(seen)
