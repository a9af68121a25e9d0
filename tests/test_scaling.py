"""Scaling a backend's workers: more processes serve more jobs at once; dead ones drop out."""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import Behaviour, FakeBackend
from tests.support.topology import sync_client
from tests.test_cli import cli

CONFIG = """
model_list:
  - model_name: fake
    litellm_params:
      model: openai/fake-model
      api_base: "{api_base}"
      api_key: dummy
      max_parallel_requests: 2
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""

HEARTBEAT_TTL = 6.0  # three heartbeat intervals


def burst(fabric: Fabric, count: int) -> list[int]:
    """`count` requests at once; their status codes."""
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    url = f"{fabric.base_url}/v1/chat/completions"
    with ThreadPoolExecutor(count) as pool:
        calls = [
            pool.submit(httpx.post, url, json=body, headers=headers, timeout=30)
            for _ in range(count)
        ]
        return [c.result().status_code for c in calls]


def status(fabric: Fabric) -> dict[str, Any]:
    result = cli(fabric, "status", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_for(fabric: Fabric, check: Any, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        current = status(fabric)
        if check(current):
            return current
        assert time.monotonic() < deadline, current
        time.sleep(0.3)


def test_more_worker_processes_serve_more_jobs_at_once(
    tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(api_base=backend.api_base, key=MASTER_KEY, prefix=prefix))
    fabric = Fabric(config, redis_url, tmp_path)
    backend.behaviour = Behaviour(first_token_delay=0.4)
    try:
        fabric.start_worker("one", "--group", "fake")
        fabric.start_api()
        assert burst(fabric, 12) == [200] * 12
        assert backend.max_active == 2  # one process, max_parallel_requests: 2

        # Scale out: two more processes under one supervisor, three jobs at once each.
        fabric.start_worker("more", "--group", "fake", "--processes", "2", "--concurrency", "3")
        scaled = wait_for(fabric, lambda s: s["groups"]["fake"]["workers"] == 3, within=20)
        assert scaled["groups"]["fake"]["slots"] == 2 + 3 + 3
        backend.max_active = 0
        assert burst(fabric, 24) == [200] * 24
        assert backend.max_active == 8

        # The registry says who serves: host, pid, slots, jobs done.
        pids = {w["pid"]: w for w in scaled["workers"]}
        assert len(pids) == 3 and {w["slots"] for w in pids.values()} == {2, 3}
        served = wait_for(
            fabric, lambda s: sum(w["done"] for w in s["workers"]) == 36, within=HEARTBEAT_TTL
        )
        assert all(w["host"] and w["deployment"] == "fake.0" for w in served["workers"])

        # A killed worker drops out of status within the heartbeat TTL...
        lone = fabric.procs["one"]
        lone.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        lone.wait()
        # Its last heartbeat was before the kill, so its entry expires within the TTL after it.
        time.sleep(max(0.0, killed_at + HEARTBEAT_TTL + 0.5 - time.monotonic()))
        after = status(fabric)
        assert lone.pid not in {w["pid"] for w in after["workers"]}
        assert after["groups"]["fake"]["workers"] == 2

        # ...and a supervised copy that dies is replaced by a new process.
        victim = next(w["pid"] for w in after["workers"])
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(
            fabric,
            lambda s: (
                s["groups"]["fake"]["workers"] == 2
                and victim not in {w["pid"] for w in s["workers"]}
            ),
            within=15,
        )
        assert replaced["groups"]["fake"]["slots"] == 6
        assert burst(fabric, 4) == [200] * 4
    finally:
        fabric.stop()


def _reply_channels(fabric: Fabric, prefix: str) -> set[bytes]:
    client = sync_client(fabric.redis_url)
    try:
        return set(client.pubsub_channels(f"{prefix}:reply:*"))
    finally:
        client.close()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_two_api_processes_share_one_port_and_one_that_dies_is_replaced(
    tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(api_base=backend.api_base, key=MASTER_KEY, prefix=prefix))
    fabric = Fabric(config, redis_url, tmp_path)
    try:
        fabric.start_worker()
        fabric.start_api("--processes", "2")
        deadline = time.monotonic() + 20
        while len(_reply_channels(fabric, prefix)) < 2:  # each process listens on its own
            assert time.monotonic() < deadline
            time.sleep(0.1)
        supervisor = fabric.procs["api"].pid
        first = _children(supervisor)
        assert len(first) == 2
        # Each request on a new connection: the kernel spreads them over both processes.
        assert burst(fabric, 24) == [200] * 24
        os.kill(first[0], signal.SIGKILL)
        time.sleep(0.3)
        assert burst(fabric, 12) == [200] * 12  # the survivor takes every new connection
        deadline = time.monotonic() + 20
        while len(set(_children(supervisor)) - {first[0]}) < 2:
            assert time.monotonic() < deadline, "the dead API process was not replaced"
            time.sleep(0.1)
        assert burst(fabric, 12) == [200] * 12
    finally:
        fabric.stop()
