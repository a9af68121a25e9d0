"""What every benchmark shares: the CPU layout, the gateway's config, the processes under test
(fake backend, embedded Redis, inferq's API and worker) and the load generator.

Layout: the fake backend and the load generator on CLIENT_CPU; the gateway alone on FABRIC_CPU
(taskset), so a figure is "the gateway on one core". `Bench` starts processes and stops them,
newest first, when its `with` block ends, whatever happened inside.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from inferq.cli.local import EmbeddedRedis, free_port, port_open

KEY = "sk-bench"
CLIENT_CPU, FABRIC_CPU = "0", "1"
WARMUP = 50  # requests each load generator sends before it measures

# The cache is on in `bench.run`'s deployment; the queue cases bypass it, the hit case uses it.
BYPASS = json.dumps({"cache": {"no-cache": True, "no-store": True}})

MODEL_LIST = """
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{backend}/v1
      api_key: dummy
      max_parallel_requests: {slots}
general_settings:
  master_key: {key}
"""

INFERQ_SETTINGS = """
inferq_settings:
  key_prefix: {prefix}
  queue_limit: 100000
"""


def gateway_config(
    backend: int,
    *,
    key: str = KEY,
    slots: int = 64,
    cache: bool = False,
    prefix: str = "bench",
    timeout: float | None = None,
    inferq: bool = True,
) -> str:
    """The YAML both gateways read (LiteLLM's format, which inferq reads too): one model group
    `bench` on the fake backend at port `backend`. `inferq=False` leaves out what only inferq
    reads (its settings and the response cache), for the LiteLLM proxy."""
    text = MODEL_LIST.format(backend=backend, slots=slots, key=key)
    if not inferq:
        return text
    if cache:
        text += "  cache: true\n"
    text += INFERQ_SETTINGS.format(prefix=prefix)
    if timeout is not None:
        text += f"  default_timeout: {timeout:g}\n"
    return text


def pinned(cpu: str | None, *cmd: str) -> list[str]:
    """`cmd` pinned to one CPU when `cpu` is given and taskset exists (it does on Debian)."""
    return ["taskset", "-c", cpu, *cmd] if cpu and shutil.which("taskset") else list(cmd)


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    """Wait until `port` accepts connections; exit the benchmark if `proc` dies first."""
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.1)


@dataclass(frozen=True)
class Gateway:
    """Something the load generator can target: the fake backend itself ("direct"), inferq or
    another gateway. `processes` names the pids whose CPU and memory are the gateway's."""

    name: str
    port: int
    key: str = ""
    processes: dict[str, int] = field(default_factory=dict)
    config: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The chat completions route every case sends to."""
        return f"{self.base}/v1/chat/completions"


@dataclass(frozen=True)
class Load:
    """The load generator's summary (latencies in ms; `firsts`/`totals` only with samples)."""

    count: int
    wall_s: float
    first_p50: float
    first_p99: float
    total_p50: float
    total_p99: float
    error_count: int
    errors: list[str]
    firsts: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.count / self.wall_s if self.wall_s else 0.0


def loadgen_cmd(
    url: str,
    key: str,
    *,
    stream: bool = False,
    concurrency: int = 1,
    duration: float = 60,
    requests: int = 10**9,
    tokens: int = 16,
    extra: str = BYPASS,
    warmup: int = WARMUP,
    samples: bool = False,
    cpu: str | None = CLIENT_CPU,
) -> list[str]:
    """The command line of `bench.loadgen` for one case."""
    cmd = pinned(
        cpu, sys.executable, "-m", "bench.loadgen", "--url", url, "--key", key,
        "--concurrency", str(concurrency), "--duration", str(duration),
        "--requests", str(requests), "--tokens", str(tokens), "--extra", extra,
        "--warmup", str(warmup),
    )  # fmt: skip
    if stream:
        cmd.append("--stream")
    if samples:
        cmd.append("--samples")
    return cmd


def parse_load(out: str) -> Load:
    """A `Load` from the load generator's JSON line; says so when requests failed."""
    raw: dict[str, Any] = json.loads(out)
    result = Load(**{k: raw[k] for k in Load.__dataclass_fields__ if k in raw})
    if result.error_count:
        print(f"  !! {result.error_count} errors, first: {result.errors[0]}", flush=True)
    return result


def load(url: str, key: str, **case: Any) -> Load:
    """Run the load generator (on the client CPU unless `cpu` says otherwise) and wait for it."""
    duration = float(case.get("duration", 60))
    cmd = loadgen_cmd(url, key, **case)
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=duration + 120)
    if run.returncode:
        raise SystemExit(f"the load generator failed against {url}:\n{run.stderr[-2000:]}")
    return parse_load(run.stdout)


class Bench:
    """The processes of one benchmark run; `with Bench() as b:` stops them all at the end."""

    def __init__(self, prefix: str = "inferq-bench-") -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._redis: EmbeddedRedis | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.work = Path(self._tmp.name)

    def __enter__(self) -> "Bench":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def spawn(self, cmd: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start `cmd`; it is stopped with the rest."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, **popen)
        self._procs.append(proc)
        return proc

    def backend(self, *args: str, cpu: str | None = CLIENT_CPU) -> Gateway:
        """The fake backend (`tests.support.fake_backend`, extra `args`), as the direct target."""
        port = free_port()
        proc = self.spawn(
            pinned(cpu, sys.executable, "-m", "tests.support.fake_backend", "--port", str(port),
                   *args),
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(port, proc, "fake backend")
        return Gateway("direct", port)

    def redis(self, cpu: str | None = FABRIC_CPU) -> EmbeddedRedis:
        """The run's embedded Redis (started once)."""
        if self._redis is None:
            self._redis = EmbeddedRedis(cpus=cpu).start()
        return self._redis

    def inferq(
        self,
        backend: Gateway,
        *,
        cpu: str | None = FABRIC_CPU,
        redis_url: str | None = None,
        processes: int = 1,
        log_level: str = "WARNING",
        settle: float = 1.0,
        **config: Any,
    ) -> Gateway:
        """One `inferq worker` and one `inferq api` (N of each with `processes`) on `cpu`, with
        the embedded Redis there too unless `redis_url` names another; `config` goes to
        `gateway_config`. Waits `settle` seconds so the API sees the worker's slots."""
        redis = None if redis_url else self.redis(cpu)
        url = redis_url or (redis.url if redis else "")
        path = self.work / f"inferq-{len(self._procs)}.yaml"
        path.write_text(gateway_config(backend.port, **config))
        env = {**os.environ, "REDIS_URL": url, "INFERQ_LOG_LEVEL": log_level}
        copies = ["--processes", str(processes)] if processes > 1 else []
        cli = [sys.executable, "-m", "inferq.cli"]
        worker = self.spawn(pinned(cpu, *cli, "worker", "--config", str(path), *copies), env=env)
        port, api = self._api(path, env, cpu, copies)
        time.sleep(settle)
        procs = {"API": api.pid, "worker": worker.pid}
        if redis and redis.process:
            procs["Redis"] = redis.process.pid
        return Gateway("inferq", port, KEY, procs, path, env)

    def api(self, gw: Gateway, *, cpu: str | None = FABRIC_CPU, settle: float = 1.0) -> Gateway:
        """One more `inferq api` process of `gw`'s fabric (same config and Redis, its own port),
        for cases that spread load over API processes a client can address one by one."""
        if gw.config is None:
            raise ValueError("another API process needs an inferq gateway from `inferq()`")
        port, api = self._api(gw.config, gw.env, cpu, [])
        time.sleep(settle)
        return Gateway("inferq", port, gw.key, {"API": api.pid}, gw.config, gw.env)

    def _api(
        self, config: Path, env: dict[str, str], cpu: str | None, copies: list[str]
    ) -> tuple[int, subprocess.Popen[bytes]]:
        """Start `inferq api` on a free port and wait until it listens."""
        port = free_port()
        api = self.spawn(
            pinned(cpu, sys.executable, "-m", "inferq.cli", "api", "--config", str(config),
                   "--port", str(port), *copies),
            env=env,
        )  # fmt: skip
        wait_port(port, api, "inferq api")
        return port, api

    def close(self) -> None:
        """Stop every process, newest first (SIGTERM, then SIGKILL after 60 s), and Redis."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._redis:
            self._redis.stop()
            self._redis = None
        self._tmp.cleanup()
