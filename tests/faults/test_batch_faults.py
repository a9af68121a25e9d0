"""A worker killed in the middle of a batch: every request still gets exactly one result."""

import asyncio
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from inferq.broker.batch.submit import BatchRequest, Submitter
from inferq.broker.connection import connect
from inferq.broker.keys import CONSUMER_GROUP, Keys
from inferq.broker.messages import JobKind
from inferq.config import load_config
from tests.faults.conftest import deployment, models, settings
from tests.support.fabric import Fabric
from tests.support.fake_backend import FakeBackend
from tests.support.topology import sync_client


@pytest.mark.topologies
async def test_sigkill_mid_batch_every_request_gets_one_result(
    backends: Callable[[], FakeBackend],
    fabric_for: Callable[..., Fabric],
    redis_url: str,
    prefix: str,
) -> None:
    backend = backends()
    backend.behaviour.first_token_delay = 0.3
    yaml = models(deployment("g", backend.api_base, max_parallel_requests=4)) + settings()
    fabric = fabric_for(yaml)
    victim = fabric.start_worker("victim")
    config = load_config(fabric.config)
    keys = Keys(prefix)
    redis = connect(redis_url)
    submitter = Submitter(redis, keys, config)
    body = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    requests = [BatchRequest(f"r{i}", JobKind.CHAT, body) for i in range(20)]
    run = asyncio.create_task(_collect(submitter, requests))
    deadline = time.monotonic() + 10
    while backend.active < 3:  # the victim holds its three batch slots
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    fabric.start_worker("survivor")
    custom_ids = await asyncio.wait_for(run, 60)
    await redis.aclose()

    assert Counter(custom_ids) == Counter(f"r{i}" for i in range(20))  # each exactly once
    client = sync_client(redis_url)
    assert client.xlen(keys.submission_results("s")) == 20  # no result written twice
    # Every job acknowledged and deleted (on a cluster a job's acknowledgement is the step
    # after its result, so the last ones may take a moment).
    for _ in range(100):
        if not client.xlen(keys.batch("g")):
            break
        await asyncio.sleep(0.05)
    assert client.xpending(keys.batch("g"), CONSUMER_GROUP)["pending"] == 0
    assert client.xlen(keys.batch("g")) == 0
    client.close()
    # Its three running jobs and any it had read but not started yet.
    assert re.search(
        r"reclaimed [34] jobs from dead worker .* \(batch lane\)", fabric.log("survivor")
    )


async def _collect(submitter: Submitter, requests: list[BatchRequest]) -> list[str]:
    out = []
    async for outcome in submitter.run("s", requests, window=20):
        assert outcome.ok, outcome.error
        out.append(outcome.custom_id or "")
    return out
