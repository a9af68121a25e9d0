"""The embedded Redis keeps `inferq up`'s data across restarts (and crashes); tests' stays none."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as sync_redis

from inferq.cli.local import EmbeddedRedis, free_port
from tests.support.fabric import MASTER_KEY
from tests.support.fake_backend import BackendThread, FakeBackend

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def fill(url: str) -> None:
    """What a fabric keeps in Redis: a queue with a job taken but not acknowledged, a waiting
    job, a usage hash, a result record with a TTL."""
    r = sync_redis.Redis.from_url(url)
    r.xgroup_create("q:{g}:jobs", "workers", id="0", mkstream=True)
    r.xadd("q:{g}:jobs", {"job": "taken"})
    r.xreadgroup("workers", "w1", {"q:{g}:jobs": ">"}, count=1)
    r.xadd("q:{g}:jobs", {"job": "waiting"})
    r.hincrbyfloat("q:usage:2026-12-02:group:g", "cost", 0.25)
    r.hincrby("q:usage:2026-12-02:group:g", "requests", 3)
    r.set("q:result:{j1}", "done", ex=3600)
    r.close()


def check(url: str) -> None:
    r = sync_redis.Redis.from_url(url)
    entries = r.xrange("q:{g}:jobs")
    assert [fields[b"job"] for _id, fields in entries] == [b"taken", b"waiting"]
    pending = r.xpending("q:{g}:jobs", "workers")
    assert pending["pending"] == 1 and pending["consumers"][0]["name"] == b"w1"
    usage = r.hgetall("q:usage:2026-12-02:group:g")
    assert usage == {b"cost": b"0.25", b"requests": b"3"}
    assert r.get("q:result:{j1}") == b"done" and 0 < r.ttl("q:result:{j1}") <= 3600
    r.close()


@pytest.mark.parametrize("how", ["stopped", "SIGKILLed"])
def test_embedded_redis_with_a_data_dir_finds_its_data_after_a_restart(
    how: str, tmp_path: Path
) -> None:
    data = tmp_path / "redis"
    first = EmbeddedRedis(data_dir=data).start()
    try:
        fill(first.url)
        if how == "SIGKILLed":
            time.sleep(1.5)  # appendfsync everysec: a crash loses at most the last second
            assert first.process is not None
            first.process.kill()
            first.process.wait()
    finally:
        first.stop()
    assert list(data.rglob("*.aof")), "no append-only file was written"
    again = EmbeddedRedis(data_dir=data).start()  # another port: the data is in the directory
    try:
        check(again.url)
    finally:
        again.stop()


def test_embedded_redis_without_a_data_dir_is_throwaway(tmp_path: Path) -> None:
    server = EmbeddedRedis().start()
    try:
        r = sync_redis.Redis.from_url(server.url)
        assert r.config_get("appendonly") == {"appendonly": "no"}
        assert r.config_get("save") == {"save": ""}
        where = Path(r.config_get("dir")["dir"])
        r.close()
    finally:
        server.stop()
    assert not where.exists()  # its temporary directory went with it


@pytest.fixture
def fake() -> Iterator[FakeBackend]:
    thread = BackendThread()
    yield thread.start()
    thread.stop()


class Up:
    """`inferq up` in a working directory, with $REDIS_URL pointing where nothing answers."""

    def __init__(self, cwd: Path, config: Path) -> None:
        self.cwd, self.config = cwd, config
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> str:
        """Start it; return what it said up to "inferq is up"."""
        env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
        cmd = [sys.executable, "-m", "inferq.cli", "up", "--config", str(self.config)]
        cmd += ["--port", str(self.port), *args]
        log = self.cwd / "up.log"
        log.write_text("")
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while "inferq is up" not in log.read_text():
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        return log.read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)

    def usage(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.port}/usage"
        totals: dict[str, float] = httpx.get(url, headers=AUTH, timeout=10).json()["totals"]
        return totals


def test_inferq_up_keeps_usage_across_a_restart_and_fresh_forgets_it(
    tmp_path: Path, fake: FakeBackend
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""model_list:
  - model_name: g
    litellm_params: {{model: openai/fake, api_base: "{fake.api_base}"}}
general_settings:
  master_key: {MASTER_KEY}
"""
    )
    up = Up(tmp_path, config)
    try:
        said = up.start()
        assert "data in .inferq/redis" in said
        body = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        url = f"http://127.0.0.1:{up.port}/v1/chat/completions"
        assert httpx.post(url, json=body, headers=AUTH, timeout=30).status_code == 200
        time.sleep(1.5)  # usage is flushed to Redis once a second
        assert up.usage()["requests"] == 1
        up.stop()
        assert list((tmp_path / ".inferq" / "redis").rglob("*.aof"))

        said = up.start()
        assert "reloaded what it held" in said
        assert up.usage()["requests"] == 1  # a restart keeps what the embedded Redis held
        up.stop()

        said = up.start("--fresh")
        assert re.search(r"--fresh: deleted \.inferq/redis", said)
        assert up.usage()["requests"] == 0
    finally:
        up.stop()
