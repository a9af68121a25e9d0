"""A fair share of a backend between keys (issue 12): key A floods a 4-slot group whose backend
takes 0.2 s per job with 2,000 requests at once; key B sends one request at a time. Prints B's
latency idle and under A's backlog (target: at most 3x idle) and the backend's utilisation
while B is measured (target: above 90 %: A's jobs still take the slots B leaves free).

Same layout as `bench.run`: the fake backend and both load generators on CPU 0; inferq's API,
one worker and Redis on CPU 1. B's requests are not streamed: the answer comes whole after the
backend's 0.2 s, so its latency is its time to first token. Run alone with
`python -m bench.fairness`, or as part of `make bench`.
"""

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

from bench.harness import KEY, Bench, Load, loadgen_cmd, parse_load

TARGET_RATIO = 3.0
TARGET_UTILISATION = 0.9


@dataclass(frozen=True)
class Figures:
    """What one run measured."""

    idle_ms: float
    loaded_ms: float
    loaded_p99_ms: float
    utilisation: float
    served: int  # jobs finished while B was measured
    window_s: float
    b_errors: int


def finished_jobs(base: str) -> float:
    """Requests the API has finished so far (its Prometheus counter)."""
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("inferq_requests_total{")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flood", type=int, default=2000, help="requests key A sends at once")
    parser.add_argument("--slots", type=int, default=4, help="slots of the group")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per job")
    parser.add_argument("--n", type=int, default=30, help="B's requests per case")
    parser.add_argument("--log-level", default="WARNING", help="of the API and the worker")
    args = parser.parse_args()

    with Bench(prefix="inferq-bench-fair-") as bench:
        figures = run(args, bench)
    return report(figures, args)


def run(args: argparse.Namespace, bench: Bench) -> Figures:
    """Start the backend, a worker and the API, then measure both cases."""
    backend = bench.backend("--complete-delay", str(args.delay))
    # 1.5 s to settle: the API sees the worker's slots before key A floods them.
    gw = bench.inferq(backend, slots=args.slots, timeout=600, log_level=args.log_level, settle=1.5)
    base = gw.base
    master = {"Authorization": f"Bearer {KEY}"}
    key_a = httpx.post(f"{base}/key/generate", json={"key_alias": "A"}, headers=master)
    key_b = httpx.post(f"{base}/key/generate", json={"key_alias": "B"}, headers=master)
    a, b = key_a.json()["key"], key_b.json()["key"]
    url = gw.url

    def measure_b() -> Load:
        out = subprocess.run(
            loadgen_cmd(url, b, requests=args.n, duration=120, warmup=0),
            capture_output=True, check=True, text=True, timeout=300,
        ).stdout  # fmt: skip
        return parse_load(out)

    print("key B alone ...", flush=True)
    idle = measure_b()
    print(f"key A floods {args.flood} requests at once ...", flush=True)
    flood = bench.spawn(
        loadgen_cmd(url, a, concurrency=args.flood, requests=args.flood, duration=600, warmup=0),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3.0)  # A's requests are all in by now, and its jobs hold every slot
    print("key B under A's backlog ...", flush=True)
    before, started = finished_jobs(base), time.monotonic()
    loaded = measure_b()
    window = time.monotonic() - started
    served = finished_jobs(base) - before
    flood.terminate()
    return Figures(
        idle_ms=idle.total_p50,
        loaded_ms=loaded.total_p50,
        loaded_p99_ms=loaded.total_p99,
        utilisation=served * args.delay / (args.slots * window),
        served=int(served),
        window_s=window,
        b_errors=idle.error_count + loaded.error_count,
    )


def report(f: Figures, args: argparse.Namespace) -> int:
    """Print the figures; 1 when a target is missed."""
    ratio = f.loaded_ms / f.idle_ms
    ratio_ok, busy_ok = ratio <= TARGET_RATIO, f.utilisation > TARGET_UTILISATION
    print()
    print(f"{'case':<52}{'ms':>8}")
    print(f"{'key B latency p50 (= TTFT), alone':<52}{f.idle_ms:>8.1f}")
    print(f"{'key B latency p50, key A flooding':<52}{f.loaded_ms:>8.1f}")
    print(f"{'key B latency p99, key A flooding':<52}{f.loaded_p99_ms:>8.1f}")
    print(f"{'ratio':<52}{ratio:>8.2f}   target <= {TARGET_RATIO:g}: "
          f"{'OK' if ratio_ok else 'MISSED'}")  # fmt: skip
    print(f"{'backend utilisation while B was measured':<52}{f.utilisation:>8.2f}   target > "
          f"{TARGET_UTILISATION:g}: {'OK' if busy_ok else 'MISSED'}")  # fmt: skip
    print(f"\n{f.served} jobs finished in {f.window_s:.1f} s on {args.slots} slots of "
          f"{args.delay} s; B's errors: {f.b_errors}")  # fmt: skip
    return 0 if ratio_ok and busy_ok and not f.b_errors else 1


if __name__ == "__main__":
    sys.exit(main())
