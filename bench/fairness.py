"""A fair share of a backend between keys (issue 12): key A floods a 4-slot group whose backend
takes 0.2 s per job with 2,000 requests at once; key B sends one request at a time. Prints B's
latency idle and under A's backlog (target: at most 3x idle) and the backend's utilisation
while B is measured (target: above 90 %: A's jobs still take the slots B leaves free).

Three cases (`--case`, all by default): `one-api`; `two-apis`, where A floods through two API
processes at once and B asks the first (the share holds across processes); and `batch`, where A
submits its 2,000 with `inferq submit --key` into the batch lane and B submits one batch request
at a time with `inferq.connect(key=)` (utilisation counted against the batch slots).

Same layout as `bench.run`: the fake backend and both load generators on CPU 0; inferq's API,
one worker and Redis on CPU 1. B's requests are not streamed: the answer comes whole after the
backend's 0.2 s, so its latency is its time to first token. Run alone with
`python -m bench.fairness`, or as part of `make bench`.
"""

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

import inferq
from bench.harness import CLIENT_CPU, KEY, Bench, Gateway, Load, loadgen_cmd, parse_load, pinned
from inferq.broker.batch.submit import BatchRequest
from inferq.broker.connection import connect
from inferq.broker.keys import Keys
from inferq.broker.messages import JobKind
from inferq.config import load_config

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
    slots: int = 0  # the slots utilisation is counted against (0: the group's)


def finished_jobs(base: str) -> float:
    """Requests the API has answered with success so far (its Prometheus counter): a job
    that failed fast (a backend cooling down) used no backend time."""
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("inferq_requests_total{") and 'status="200"' in line
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flood", type=int, default=2000, help="requests key A sends at once")
    parser.add_argument("--slots", type=int, default=4, help="slots of the group")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per job")
    parser.add_argument("--n", type=int, default=30, help="B's requests per case")
    parser.add_argument(
        "--case", choices=("one-api", "two-apis", "batch", "all"), default="all",
        help="one API process; two (A floods through both, B asks the first); the batch lane",
    )  # fmt: skip
    parser.add_argument("--log-level", default="WARNING", help="of the API and the worker")
    args = parser.parse_args()
    cases = ("one-api", "two-apis", "batch") if args.case == "all" else (args.case,)
    failed = 0
    for case in cases:
        print(f"\n== {case} ==", flush=True)
        with Bench(prefix="inferq-bench-fair-") as bench:
            figures = run(args, case, bench)
        failed |= report(figures, args, case)
    return failed


def run(args: argparse.Namespace, case: str, bench: Bench) -> Figures:
    """Start the backend, a worker and the API processes, then measure B alone and under A's
    flood."""
    backend = bench.backend("--complete-delay", str(args.delay))
    # 1.5 s to settle: the API sees the worker's slots before key A floods them.
    gw = bench.inferq(backend, slots=args.slots, timeout=600, log_level=args.log_level, settle=1.5)
    gws = [gw, bench.api(gw, settle=1.5)] if case == "two-apis" else [gw]
    bases = [g.base for g in gws]
    master = {"Authorization": f"Bearer {KEY}"}
    key_a = httpx.post(f"{bases[0]}/key/generate", json={"key_alias": "A"}, headers=master)
    key_b = httpx.post(f"{bases[0]}/key/generate", json={"key_alias": "B"}, headers=master)
    a, b = key_a.json()["key"], key_b.json()["key"]
    if case == "batch":
        return _batch_case(args, bench, gw, a=a, b=b)
    url = gw.url

    def measure_b() -> Load:
        out = subprocess.run(
            loadgen_cmd(url, b, requests=args.n, duration=120, warmup=0),
            capture_output=True, check=True, text=True, timeout=300,
        ).stdout  # fmt: skip
        return parse_load(out)

    print("key B alone ...", flush=True)
    idle = measure_b()
    print(f"key A floods {args.flood} requests at once through {len(gws)} API process(es) ...",
          flush=True)  # fmt: skip
    share = args.flood // len(gws)
    floods = [
        bench.spawn(
            loadgen_cmd(g.url, a, concurrency=share, requests=share, duration=600, warmup=0),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for g in gws
    ]
    time.sleep(4.0)  # A's requests are all in by now, and its jobs hold every slot
    print("key B under A's backlog ...", flush=True)
    before, started = sum(map(finished_jobs, bases)), time.monotonic()
    loaded = measure_b()
    window = time.monotonic() - started
    served = sum(map(finished_jobs, bases)) - before
    for flood in floods:
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


def _batch_case(args: argparse.Namespace, bench: Bench, gw: Gateway, *, a: str, b: str) -> Figures:
    """The batch lane: A submits `--flood` requests with `inferq submit --key` (a window as
    large as the flood); B submits one request at a time through `inferq.connect(key=)`; B's
    latency is from submitting to holding the result."""
    if gw.config is None:
        raise ValueError("the batch case needs inferq's config")
    config, redis_url = gw.config, gw.env["REDIS_URL"]
    loaded_config = load_config(config)
    batch_slots = loaded_config.fabric.batch_slots(args.slots)
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    lines = [
        json.dumps({"custom_id": f"a{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": body})
        for i in range(args.flood)
    ]  # fmt: skip
    flood_file = bench.work / "flood.jsonl"
    flood_file.write_text("\n".join(lines) + "\n")

    async def measure_b(tag: str) -> list[float]:
        took = []
        async with inferq.connect(loaded_config, redis_url, key=b) as client:
            for i in range(args.n):
                started = time.perf_counter()
                request = BatchRequest(f"b{i}", JobKind.CHAT, body)
                async for outcome in client.submit(f"b-{tag}-{i}", [request], window=1):
                    if not outcome.ok:
                        raise RuntimeError(f"B's batch request failed: {outcome}")
                took.append((time.perf_counter() - started) * 1000)
        return took

    async def a_done() -> int:
        redis = connect(redis_url)
        try:
            raw = await redis.hget(Keys("bench").submission("flood-a"), "succeeded")
        finally:
            await redis.aclose()
        return int(raw or 0)

    print("key B alone (batch lane) ...", flush=True)
    idle = asyncio.run(measure_b("idle"))
    print(f"key A submits {args.flood} batch requests (inferq submit --key) ...", flush=True)
    flood = bench.spawn(
        pinned(CLIENT_CPU, sys.executable, "-m", "inferq.cli", "submit", str(flood_file),
               "--out", str(bench.work / "flood.out"), "--config", str(config),
               "--key", a, "--window", str(args.flood), "--id", "flood-a"),
        env=gw.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(4.0)
    print("key B under A's batch backlog ...", flush=True)
    before, started = asyncio.run(a_done()), time.monotonic()
    loaded = asyncio.run(measure_b("loaded"))
    window = time.monotonic() - started
    served = asyncio.run(a_done()) - before + args.n
    flood.terminate()
    return Figures(
        idle_ms=statistics.median(idle),
        loaded_ms=statistics.median(loaded),
        loaded_p99_ms=sorted(loaded)[max(0, math.ceil(len(loaded) * 0.99) - 1)],
        utilisation=served * args.delay / (batch_slots * window),
        served=int(served),
        window_s=window,
        b_errors=0,
        slots=batch_slots,
    )


def report(f: Figures, args: argparse.Namespace, case: str) -> int:
    """Print the figures; 1 when a target is missed."""
    ratio = f.loaded_ms / f.idle_ms
    ratio_ok, busy_ok = ratio <= TARGET_RATIO, f.utilisation > TARGET_UTILISATION
    what = "result" if case == "batch" else "latency"
    print()
    print(f"{'case: ' + case:<52}{'ms':>8}")
    print(f"{f'key B {what} p50 (= TTFT), alone':<52}{f.idle_ms:>8.1f}")
    print(f"{f'key B {what} p50, key A flooding':<52}{f.loaded_ms:>8.1f}")
    print(f"{f'key B {what} p99, key A flooding':<52}{f.loaded_p99_ms:>8.1f}")
    print(f"{'ratio':<52}{ratio:>8.2f}   target <= {TARGET_RATIO:g}: "
          f"{'OK' if ratio_ok else 'MISSED'}")  # fmt: skip
    print(f"{'backend utilisation while B was measured':<52}{f.utilisation:>8.2f}   target > "
          f"{TARGET_UTILISATION:g}: {'OK' if busy_ok else 'MISSED'}")  # fmt: skip
    slots = f.slots or args.slots
    print(f"\n{f.served} jobs finished in {f.window_s:.1f} s on {slots} slots of "
          f"{args.delay} s; B's errors: {f.b_errors}")  # fmt: skip
    return 0 if ratio_ok and busy_ok and not f.b_errors else 1


if __name__ == "__main__":
    sys.exit(main())
