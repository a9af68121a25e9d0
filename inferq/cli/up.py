"""`inferq up`: the whole fabric on one machine, supervised until Ctrl-C.

Redis: $REDIS_URL if it answers, else an embedded Valkey that keeps its data in the state
directory (`.inferq/redis`, an append-only file fsynced every second). llama.cpp: started for local
deployments whose api_base does not answer. Then the workers (one process serving every servable
group, or `--processes N` copies) and the API. Cloud deployments without keys are reported as
unavailable, not started. Each process follows reloads of the config file.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from inferq.cli.local import EmbeddedRedis, LlamaServer, port_open, redis_answers
from inferq.config import GatewayConfig, RuntimeEnv
from inferq.config.model import Provider

DEV_MASTER_KEY = "sk-inferq-local-dev"


def up(
    config: GatewayConfig,
    env: RuntimeEnv,
    host: str,
    port: int,
    processes: int = 1,
    *,
    state_dir: Path = Path(".inferq"),
    fresh: bool = False,
) -> int:
    """Start everything, print how to use it, and supervise until interrupted."""
    fabric = _Fabric(config, env, processes, state_dir, fresh)
    signal.signal(signal.SIGTERM, fabric.stop)
    signal.signal(signal.SIGINT, fabric.stop)
    signal.signal(signal.SIGHUP, fabric.forward)
    try:
        fabric.start(host, port)
        if not _wait_ready(host, port, fabric.children):
            _say("the API did not become ready; see the log above")
            return 1
        _print_usage(config, host, port)
        return fabric.supervise()
    finally:
        fabric.shutdown()


class _Fabric:
    """The processes `up` owns, started in dependency order and stopped in reverse."""

    def __init__(
        self, config: GatewayConfig, env: RuntimeEnv, processes: int, state_dir: Path, fresh: bool
    ) -> None:
        self.config = config
        self.env = env
        self.state_dir = state_dir
        self.fresh = fresh
        self.embedded: EmbeddedRedis | None = None
        self.llamas: list[LlamaServer] = []
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False
        self.processes = processes

    def stop(self, *_: object) -> None:
        self.stopping = True

    def forward(self, signum: int, _frame: object) -> None:
        """SIGHUP to `up` reloads every process it started."""
        for _name, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signum)

    def start(self, host: str, port: int) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        redis_url = self._redis()
        self.llamas = _start_local_backends(self.config, self.state_dir)
        child_env = {**os.environ, "REDIS_URL": redis_url}
        base = [sys.executable, "-m", "inferq.cli"]
        cfg = ["--config", str(self.env.config_path)]
        if self.env.log_json:
            cfg.append("--log-json")  # every process of the fabric logs in one format
        # One worker process for every group: it follows reloads, so a group added to the
        # file gets served without a restart (scale out with `inferq worker --processes`).
        for group, deployments in self.config.groups.items():
            reasons = [d.unavailable_reason for d in deployments]
            state = f"unavailable ({reasons[0]})" if all(reasons) else "served"
            _say(f"group      {group}: {state}")
        cmd = [*base, "worker", *cfg, "--processes", str(self.processes)]
        self.children.append(("workers", subprocess.Popen(cmd, env=child_env)))
        api_cmd = [*base, "api", *cfg, "--host", host, "--port", str(port)]
        self.children.append(("api", subprocess.Popen(api_cmd, env=child_env)))

    def _redis(self) -> str:
        url = self.env.redis_url
        if redis_answers(url):
            _say(f"Redis      {_safe(url)}")
            return url
        data = self.state_dir / "redis"
        if self.fresh and data.exists():
            shutil.rmtree(data)
            _say(f"Redis      --fresh: deleted {data}")
        kept = data.exists()
        self.embedded = EmbeddedRedis(data_dir=data).start()
        _say(f"Redis      {_safe(url)} not answering: embedded Valkey at {self.embedded.url}")
        again = "; reloaded what it held" if kept else ""
        _say(f"Redis      data in {data} (append-only, fsync every second{again})")
        return self.embedded.url

    def supervise(self) -> int:
        while not self.stopping:
            for name, proc in self.children:
                if proc.poll() is not None:
                    _say(f"{name} exited with status {proc.returncode}; stopping everything")
                    return 1
            time.sleep(0.5)
        return 0

    def shutdown(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in self.children:
            try:
                proc.wait(35)
            except subprocess.TimeoutExpired:
                proc.kill()
        for llama in self.llamas:
            llama.stop()
        if self.embedded:
            self.embedded.stop()


def _start_local_backends(config: GatewayConfig, state_dir: Path) -> list[LlamaServer]:
    """Start a llama.cpp server on each loopback api_base that nothing answers on."""
    started: list[LlamaServer] = []
    seen: set[int] = set()
    for deployments in config.groups.values():
        for d in deployments:
            parsed = urlparse(d.api_base)
            if d.provider is not Provider.OPENAI or not d.is_local or parsed.port in seen:
                continue
            port = parsed.port or 80
            seen.add(port)
            if port_open("127.0.0.1", port):
                _say(f"llama.cpp  {d.api_base} already answering")
                continue
            _say(f"llama.cpp  starting SmolLM2-135M on {d.api_base} (log: {state_dir}/llama.log)")
            try:
                started.append(LlamaServer(port=port).start(log=state_dir / "llama.log"))
            except RuntimeError as exc:
                _say(f"llama.cpp  could not start: {exc}; local groups will fail until it runs")
    return started


def _wait_ready(host: str, port: int, children: list[tuple[str, subprocess.Popen[bytes]]]) -> bool:
    deadline = time.monotonic() + 30
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    while time.monotonic() < deadline:
        if any(p.poll() is not None for _n, p in children):
            return False
        if port_open(probe_host, port):
            return True
        time.sleep(0.2)
    return False


def _print_usage(config: GatewayConfig, host: str, port: int) -> None:
    key = config.master_key or ""
    # Never print a real key: the development default is public, anything else is a secret.
    shown = key if key == DEV_MASTER_KEY or not key else "$INFERQ_MASTER_KEY"
    model = next(iter(config.groups))
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    print(
        f"""
inferq is up on {url}   (Ctrl-C stops everything)

  curl {url}/v1/chat/completions \\
    -H "Content-Type: application/json" \\
    -H "Authorization: Bearer {shown}" \\
    -d '{{"model": "{model}", "max_tokens": 100,
         "messages": [{{"role": "user", "content": "Hello"}}]}}'

  models: {", ".join(config.public_models())}
""",
        flush=True,
    )


def _say(text: str) -> None:
    print(f"inferq up: {text}", flush=True)


def _safe(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return scheme + sep + ("***@" + rest.split("@", 1)[1] if "@" in rest else rest)
