"""`inferq status` and `inferq check-health` against a running fabric."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.fabric import Fabric, write_config
from tests.support.fake_backend import FakeBackend


def cli(fabric: Fabric, *args: str, redis: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis or fabric.redis_url}
    return subprocess.run(
        [sys.executable, "-m", "inferq.cli", *args, "--config", str(fabric.config)],
        capture_output=True, text=True, env=env, check=False, timeout=30,
    )  # fmt: skip


def test_status_and_check_health(
    tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend
) -> None:
    config = write_config(tmp_path / "c.yaml", backend.api_base, prefix)
    fabric = Fabric(config, redis_url, tmp_path)
    try:
        fabric.start_worker("worker", "--group", "fake")
        status = json.loads(cli(fabric, "status", "--json").stdout)
        assert status["groups"]["fake"]["workers"] == 1
        assert status["groups"]["fake"]["slots"] == 8
        assert status["groups"]["fake-llama"]["workers"] == 0
        table = cli(fabric, "status").stdout
        assert "fake-llama" in table and "no live worker" in table
        assert cli(fabric, "check-health", "--group", "fake").returncode == 0
        missing = cli(fabric, "check-health", "--group", "fake-llama")
        assert missing.returncode == 1 and "no live worker for fake-llama" in missing.stderr
        down = cli(fabric, "check-health", redis="redis://127.0.0.1:1/0")
        assert down.returncode == 1 and "Redis is unreachable" in down.stderr
        assert cli(fabric, "check-health", "--api", "http://127.0.0.1:1").returncode == 1
    finally:
        fabric.stop()
