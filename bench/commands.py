"""Redis commands per request, counted by Redis itself (`INFO commandstats`).

`python -m bench.commands [--requests 500]` starts a private Redis, the fake backend, one worker
and one API, sends sequential non-stream requests and prints, per command, how many each
request cost. Background work (heartbeats, retry promotion, usage flushes, the live-worker
view, idle blocking reads) is counted over an idle interval first and subtracted at its rate.
Commands run inside a Lua script count too (Redis counts them), as does the EVALSHA itself.
One XADD per request is the usage log (`<prefix>:usage:log`, one record per request, written
once a second for all of them in one round trip): accounting, not the request's path.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from bench.harness import KEY, gateway_config, wait_port
from inferq.cli.local import EmbeddedRedis, free_port

BYPASS = {"cache": {"no-cache": True, "no-store": True}}


def commandstats(client: "redis.Redis[bytes]") -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT."""
    info = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def per_request(
    client: "redis.Redis[bytes]", send: Callable[[], None], requests: int, idle: float = 2.0
) -> dict[str, float]:
    """Commands per call of `send`, background work subtracted (measured over `idle` s)."""
    time.sleep(1.2)  # the API flushes usage records once a second: not into the idle count
    client.config_resetstat()
    time.sleep(idle)
    background = commandstats(client)
    client.config_resetstat()
    started = time.monotonic()
    for _ in range(requests):
        send()
    time.sleep(1.2)  # and the usage records of these requests are flushed
    elapsed = time.monotonic() - started
    loaded = commandstats(client)
    out: dict[str, float] = {}
    for name, calls in loaded.items():
        if name in ("config", "info"):
            continue
        net = (calls - background.get(name, 0) * elapsed / idle) / requests
        if net > 0.02:
            out[name] = round(net, 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--stream", action="store_true", help="64-token streams instead")
    args = parser.parse_args()
    server = EmbeddedRedis().start()
    procs: list[subprocess.Popen[bytes]] = []
    workdir = tempfile.TemporaryDirectory(prefix="inferq-commands-")
    try:
        backend_port, api_port = free_port(), free_port()
        config = Path(workdir.name) / "bench.yaml"
        config.write_text(gateway_config(backend_port, cache=True))
        env = {**os.environ, "REDIS_URL": server.url, "INFERQ_LOG_LEVEL": "WARNING"}
        backend = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_backend", "--port", str(backend_port)],
            stdout=subprocess.DEVNULL,
        )
        procs.append(backend)
        wait_port(backend_port, backend, "fake backend")
        cli = [sys.executable, "-m", "inferq.cli"]
        procs.append(subprocess.Popen([*cli, "worker", "--config", str(config)], env=env))
        api = subprocess.Popen(
            [*cli, "api", "--config", str(config), "--port", str(api_port)], env=env
        )
        procs.append(api)
        wait_port(api_port, api, "inferq api")
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {KEY}"}
        )
        body = {
            "model": "bench",
            "messages": [{"role": "user", "content": "Say something."}],
            "max_tokens": 64 if args.stream else 16,
            "stream": args.stream,
            **BYPASS,
        }

        def send() -> None:
            http.post("/v1/chat/completions", json=body).raise_for_status()

        for _ in range(50):
            send()  # warm up: connections open, scripts loaded, the worker's view current
        counts = per_request(redis.Redis.from_url(server.url), send, args.requests)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        server.stop()
        workdir.cleanup()
    kind = "64-token stream" if args.stream else "non-stream"
    print(f"Redis commands per {kind} request ({args.requests} sequential requests):")
    for name, calls in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14}{calls:>6.2f}")
    print(f"  {'total':<14}{sum(counts.values()):>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
