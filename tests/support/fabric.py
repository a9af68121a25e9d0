"""Real inferq processes for end-to-end tests: `inferq api` and `inferq worker` subprocesses."""

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from inferq.cli.local import free_port

MASTER_KEY = "sk-test-master"

CONFIG = """
model_list:
  - model_name: fake
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      api_key: dummy
      temperature: 0.5
      max_tokens: 12
      max_parallel_requests: 8
      timeout: 10
  - model_name: fake-llama
    litellm_params:
      model: openai//models/x.gguf
      api_base: {api_base}
      max_parallel_requests: 2
router_settings:
  num_retries: 1
  allowed_fails: 1000   # these tests break the backend on purpose; cooldowns are tested apart
  model_group_alias:
    chained: [fake, fake-llama]
    quiet: {{model: fake, hidden: true}}
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""


def key_id(key: str) -> str:
    """The id `inferq status` and `/usage` show for a key (its hash, never the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def write_config(path: Path, api_base: str, prefix: str, text: str | None = None) -> Path:
    """Write the standard test config (or `text`) for a backend at `api_base`."""
    body = text if text is not None else CONFIG
    path.write_text(body.format(api_base=api_base, key=MASTER_KEY, prefix=prefix))
    return path


@contextmanager
def running(config_text: str, redis_url: str, tmp: Path, **fields: str) -> Iterator["Fabric"]:
    """A worker and an API for `config_text` (`{key}` and the given `fields` filled in),
    stopped on exit."""
    config = tmp / "config.yaml"
    config.write_text(config_text.format(key=MASTER_KEY, **fields))
    fabric = Fabric(config, redis_url, tmp)
    try:
        fabric.start_worker()
        fabric.start_api()
        yield fabric
    finally:
        fabric.stop()


@contextmanager
def running_pair(
    config_text: str, redis_url: str, tmp: Path, fakes: tuple[Any, Any], prefix: str
) -> Iterator["Fabric"]:
    """`running` for a config whose `{local}` names an OpenAI-compatible fake backend and
    `{anthropic}` an Anthropic one (the `fakes` fixture's pair)."""
    local, claude = fakes
    anthropic = f"http://127.0.0.1:{claude.port}"
    with running(
        config_text, redis_url, tmp, local=local.api_base, anthropic=anthropic, prefix=prefix
    ) as fabric:
        yield fabric


class Fabric:
    """An API process and worker processes sharing one Redis and config."""

    def __init__(self, config: Path, redis_url: str, log_dir: Path) -> None:
        self.config = config
        self.redis_url = redis_url
        self.port = free_port()
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def _spawn(
        self, name: str, *args: str, level: str = "INFO", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REDIS_URL": self.redis_url, "INFERQ_LOG_LEVEL": level, **(env or {})}
        cmd = [sys.executable, "-m", "inferq.cli", *args, "--config", str(self.config)]
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_api(self, *args: str, wait_ready: bool = True) -> None:
        """Start `inferq api ARGS` and wait until it answers."""
        self._spawn("api", "api", "--port", str(self.port), *args)
        deadline = time.monotonic() + 20
        path = "/health/readiness" if wait_ready else "/health/liveliness"
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.procs["api"].poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"API did not start; log:\n{self.log('api')}")

    def start_worker(
        self,
        name: str = "worker",
        *args: str,
        level: str = "INFO",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `inferq worker ARGS` (logging at `level`, with `env` added to the environment)
        and wait until it serves."""
        proc = self._spawn(name, "worker", *args, level=level, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "serving" in self.log(name):
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker did not start; log:\n{self.log(name)}")

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`inferq ARGS --config <this config>` against this fabric's Redis (not checked)."""
        return subprocess.run(
            [sys.executable, "-m", "inferq.cli", *args, "--config", str(self.config)],
            capture_output=True, text=True, check=False, timeout=timeout,
            env={**os.environ, "REDIS_URL": self.redis_url},
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        """`inferq status --json`."""
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def log(self, name: str) -> str:
        """What a process has written so far."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Terminate every process (SIGTERM, then SIGKILL)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
