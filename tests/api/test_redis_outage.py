"""With Redis gone the API answers 503 fast and clearly; when Redis returns, it serves again."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferq.cli.local import EmbeddedRedis, free_port
from tests.support.fabric import MASTER_KEY, Fabric, write_config
from tests.support.fake_backend import FakeBackend

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
def no_redis_fabric(tmp_path: Path, backend: FakeBackend) -> Iterator[tuple[Fabric, int]]:
    port = free_port()
    config = write_config(tmp_path / "c.yaml", backend.api_base, prefix="outage")
    fabric = Fabric(config, f"redis://127.0.0.1:{port}/0", tmp_path)
    try:
        fabric.start_api(wait_ready=False)
        yield fabric, port
    finally:
        fabric.stop()


def test_api_answers_503_within_a_second_then_recovers(no_redis_fabric: tuple[Fabric, int]) -> None:
    fabric, port = no_redis_fabric
    started = time.monotonic()
    resp = httpx.post(fabric.base_url + "/v1/chat/completions", json=BODY, headers=AUTH, timeout=5)
    elapsed = time.monotonic() - started
    assert resp.status_code == 503
    assert elapsed < 1.0
    error = resp.json()["error"]
    assert error["type"] == "service_unavailable"
    assert "Redis" in error["message"]
    assert httpx.get(fabric.base_url + "/health/readiness").status_code == 503
    assert httpx.get(fabric.base_url + "/health", headers=AUTH, timeout=5).status_code == 503
    assert httpx.get(fabric.base_url + "/health/liveliness").status_code == 200

    redis = EmbeddedRedis(port=port).start()
    try:
        deadline = time.monotonic() + 10
        while httpx.get(fabric.base_url + "/health/readiness").status_code != 200:
            assert time.monotonic() < deadline, "API did not reconnect to Redis by itself"
            time.sleep(0.1)
        fabric.start_worker()
        resp = httpx.post(
            fabric.base_url + "/v1/chat/completions", json=BODY, headers=AUTH, timeout=10
        )
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"] == "w0 w1 "
    finally:
        fabric.stop()
        redis.stop()
