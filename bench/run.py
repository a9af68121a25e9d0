"""`make bench`: the same load sent straight to a fake backend and through inferq, in one run.

The fake backend and the load generator share core 0; inferq's API, worker and Redis share core 1
(taskset), so every figure is "inferq on one core". Prints added latency, added time to first
token, and throughput, against the targets of issue 2.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from inferq.cli.local import EmbeddedRedis, free_port, port_open

KEY = "sk-bench"
KEYS_TARGET_MS = 0.1  # what checking a virtual key may add to p50 (issue 12)
CLIENT_CPU, FABRIC_CPU = "0", "1"

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
  cache: true
inferq_settings:
  key_prefix: bench
  queue_limit: 100000
"""

TARGETS = {
    "added_latency_p50_ms": ("<=", 3.0),
    "added_ttft_p50_ms": ("<=", 3.0),
    "requests_per_s_c32": (">=", 500.0),
    "streams_per_s_c32": (">=", 100.0),
    "cache_hit_p50_ms": ("<=", 1.0),
}


def pinned(cpu: str, *cmd: str) -> list[str]:
    """`cmd` pinned to one CPU when taskset exists (it does on Debian)."""
    return ["taskset", "-c", cpu, *cmd] if _has_taskset() else list(cmd)


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], check=False, capture_output=True).returncode == 0


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.1)


Result = dict[str, float]


# The cache is on (as in the seed's deployment); the queue cases bypass it, the hit case uses it.
BYPASS = json.dumps({"cache": {"no-cache": True, "no-store": True}})


def load(url: str, *, stream: bool, concurrency: int, duration: float, requests: int,
         tokens: int, key: str, extra: str = BYPASS) -> Result:  # fmt: skip
    """Run the load generator on the client CPU; its summary as a dict."""
    cmd = pinned(
        CLIENT_CPU, sys.executable, "-m", "bench.loadgen", "--url", url, "--key", key,
        "--concurrency", str(concurrency), "--duration", str(duration),
        "--requests", str(requests), "--tokens", str(tokens), "--extra", extra,
    )  # fmt: skip
    if stream:
        cmd.append("--stream")
    out = subprocess.run(
        cmd, capture_output=True, check=True, text=True, timeout=duration + 120
    ).stdout
    result = json.loads(out)
    if result["error_count"]:
        print(f"  !! {result['error_count']} errors, first: {result['errors'][0]}", flush=True)
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float)}


def measure(base: str, key: str, args: argparse.Namespace) -> Result:
    """The four cases of issue 2 against one target."""
    url = f"{base}/v1/chat/completions"
    lat = load(url, stream=False, concurrency=1, duration=60, requests=args.n_latency,
               tokens=16, key=key)  # fmt: skip
    ttft = load(url, stream=True, concurrency=1, duration=60, requests=args.n_latency,
                tokens=64, key=key)  # fmt: skip
    rps = load(url, stream=False, concurrency=32, duration=args.duration, requests=10**9,
               tokens=16, key=key)  # fmt: skip
    sps = load(url, stream=True, concurrency=32, duration=args.duration, requests=10**9,
               tokens=64, key=key)  # fmt: skip
    hit = load(url, stream=False, concurrency=1, duration=60, requests=args.n_latency,
               tokens=16, key=key, extra="{}")  # fmt: skip
    return {
        "hit_p50": hit["total_p50"],
        "hit_p99": hit["total_p99"],
        "latency_p50": lat["total_p50"],
        "latency_p99": lat["total_p99"],
        "ttft_p50": ttft["first_p50"],
        "ttft_p99": ttft["first_p99"],
        "rps": rps["count"] / rps["wall_s"],
        "sps": sps["count"] / sps["wall_s"],
        "errors": sum(r["error_count"] for r in (lat, ttft, rps, sps)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput case")
    parser.add_argument("--n-latency", type=int, default=1000, help="requests per latency case")
    parser.add_argument(
        "--virtual-keys",
        action="store_true",
        help="also measure latency with a virtual key (no limits) and a limited one (issue 12)",
    )
    args = parser.parse_args()
    keyed: dict[str, float] = {}

    procs: list[subprocess.Popen[bytes]] = []
    redis = EmbeddedRedis(cpus=FABRIC_CPU).start()
    workdir = tempfile.TemporaryDirectory(prefix="inferq-bench-")
    try:
        backend_port, api_port = free_port(), free_port()
        config = Path(workdir.name) / "bench.yaml"
        config.write_text(CONFIG.format(backend=backend_port, key=KEY))
        env = {**os.environ, "REDIS_URL": redis.url, "INFERQ_LOG_LEVEL": "WARNING"}
        backend = subprocess.Popen(
            pinned(CLIENT_CPU, sys.executable, "-m", "tests.support.fake_backend",
                   "--port", str(backend_port)), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(backend)
        wait_port(backend_port, backend, "fake backend")
        worker = subprocess.Popen(
            pinned(FABRIC_CPU, sys.executable, "-m", "inferq.cli", "worker",
                   "--config", str(config)), env=env,
        )  # fmt: skip
        api = subprocess.Popen(
            pinned(FABRIC_CPU, sys.executable, "-m", "inferq.cli", "api", "--config",
                   str(config), "--port", str(api_port)), env=env,
        )  # fmt: skip
        procs += [worker, api]
        wait_port(api_port, api, "inferq api")
        time.sleep(1.0)

        print("direct to the fake backend ...", flush=True)
        direct = measure(f"http://127.0.0.1:{backend_port}", "", args)
        print("through inferq ...", flush=True)
        via = measure(f"http://127.0.0.1:{api_port}", KEY, args)
        if args.virtual_keys:
            keyed = measure_keys(f"http://127.0.0.1:{api_port}", args)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        redis.stop()
        workdir.cleanup()
    code = report(direct, via)
    if keyed:
        print("\nvirtual keys, side by side (non-stream p50, c=1, ms)")
        for name, value in keyed.items():
            note = ""
            if name == "added keys on (virtual key)":
                ok = value <= KEYS_TARGET_MS
                note = f"   target <= {KEYS_TARGET_MS}: {'OK' if ok else 'MISSED'}"
            print(f"{name:<46}{value:>8.3f}{note}")
    return code


def measure_keys(base: str, args: argparse.Namespace) -> dict[str, float]:
    """Non-stream latency p50 with keys off (the master key: the path as it was before virtual
    keys) and on (a virtual key without limits; and one with rpm/tpm/parallel limits, which
    pays one Redis script call), interleaved request by request (bench/keytimes.py), and what
    keys add: the median of the per-turn differences."""
    headers = {"Authorization": f"Bearer {KEY}"}
    free = httpx.post(f"{base}/key/generate", json={}, headers=headers).json()["key"]
    limits = {"rpm_limit": 10**6, "tpm_limit": 10**9, "max_parallel_requests": 1000}
    limited = httpx.post(f"{base}/key/generate", json=limits, headers=headers).json()["key"]
    turns = max(args.n_latency, 300)
    print(f"through inferq, keys off and on, interleaved ({turns} turns) ...", flush=True)
    cmd = pinned(
        CLIENT_CPU, sys.executable, "-m", "bench.keytimes", "--url",
        f"{base}/v1/chat/completions", "--n", str(turns), "--extra", BYPASS,
        "--key", f"keys off (master key)={KEY}", "--key", f"keys on (virtual key)={free}",
        "--key", f"keys on (virtual key with limits)={limited}",
    )  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, check=True, text=True, timeout=900).stdout
    found: dict[str, float] = json.loads(out)
    return found


def report(direct: dict[str, float], via: dict[str, float]) -> int:
    figures = {
        "added_latency_p50_ms": via["latency_p50"] - direct["latency_p50"],
        "added_latency_p99_ms": via["latency_p99"] - direct["latency_p99"],
        "added_ttft_p50_ms": via["ttft_p50"] - direct["ttft_p50"],
        "added_ttft_p99_ms": via["ttft_p99"] - direct["ttft_p99"],
        "requests_per_s_c32": via["rps"],
        "streams_per_s_c32": via["sps"],
        "cache_hit_p50_ms": via["hit_p50"],
    }
    print()
    print(f"{'case':<34}{'direct':>10}{'inferq':>10}")
    rows = [
        ("non-stream latency p50 (ms), c=1", "latency_p50"),
        ("non-stream latency p99 (ms), c=1", "latency_p99"),
        ("64-token stream TTFT p50 (ms), c=1", "ttft_p50"),
        ("64-token stream TTFT p99 (ms), c=1", "ttft_p99"),
        ("non-stream requests/s, c=32", "rps"),
        ("64-token streams/s, c=32", "sps"),
        ("cache hit p50 (ms), c=1", "hit_p50"),
        ("cache hit p99 (ms), c=1", "hit_p99"),
    ]
    for label, key in rows:
        print(f"{label:<34}{direct[key]:>10.2f}{via[key]:>10.2f}")
    print()
    failed = 0
    for name, value in figures.items():
        target = TARGETS.get(name)
        verdict = ""
        if target:
            op, limit = target
            ok = value <= limit if op == "<=" else value >= limit
            failed += not ok
            verdict = f"target {op} {limit:g}: {'OK' if ok else 'MISSED'}"
        print(f"{name:<26}{value:>10.2f}   {verdict}")
    print(f"\nboth sides measured in one run; inferq = API + worker + Redis on CPU {FABRIC_CPU}")

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
