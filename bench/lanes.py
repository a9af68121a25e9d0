"""Priority lanes under load: interactive time to first token, idle and while a backlog of batch
jobs saturates the worker's batch slots (issue 7: within 2x of idle).

Same layout as `bench.run`: the fake backend, the load generator and the batch client
(`inferq submit`) on CPU 0; inferq's API, one worker and Redis on CPU 1. The worker has 64 slots;
batch jobs may hold 48 of them, each for `--batch-delay` seconds (a slow generation), so the
backlog keeps every batch slot busy while interactive streams are measured. Run alone with
`python -m bench.lanes`, or as part of `make bench`.
"""

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import CLIENT_CPU, Bench, load, pinned
from inferq.broker.connection import connect
from inferq.broker.jobs.queue import QueueDepth, depths
from inferq.broker.keys import Keys

TARGET_RATIO = 2.0


def queue(redis_url: str) -> QueueDepth:
    """The bench group's queue depth now."""

    async def read() -> QueueDepth:
        redis = connect(redis_url, max_connections=2)
        try:
            return (await depths(redis, Keys("bench"), ["bench"]))["bench"]
        finally:
            await redis.aclose()

    return asyncio.run(read())


def batch_file(path: Path, n: int) -> None:
    """`n` chat requests in OpenAI's batch input format."""
    with path.open("w") as f:
        for i in range(n):
            body = {"model": "bench", "messages": [{"role": "user", "content": f"job {i}"}],
                    "max_tokens": 16}  # fmt: skip
            f.write(json.dumps({"custom_id": f"job-{i}", "method": "POST",
                                "url": "/v1/chat/completions", "body": body}) + "\n")  # fmt: skip


@dataclass(frozen=True)
class Figures:
    """What one run measured."""

    idle_ms: float
    loaded_ms: float
    after: QueueDepth  # the queue when the loaded case ended
    written: int
    batch: int
    batch_s: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1000, help="batch jobs in the backlog")
    parser.add_argument("--batch-delay", type=float, default=0.5, help="seconds per batch job")
    parser.add_argument("--n-latency", type=int, default=500, help="streams per TTFT case")
    parser.add_argument("--duration", type=float, default=6.0, help="max seconds per TTFT case")
    args = parser.parse_args()

    with Bench(prefix="inferq-bench-lanes-") as bench:
        figures = run(args, bench)
    return report(figures)


def run(args: argparse.Namespace, bench: Bench) -> Figures:
    """Start the backend, a worker and the API, then measure both cases."""
    backend = bench.backend("--complete-delay", str(args.batch_delay))
    gw = bench.inferq(backend)
    redis_url = gw.env["REDIS_URL"]

    def ttft() -> float:
        result = load(gw.url, gw.key, stream=True, duration=args.duration,
                      requests=args.n_latency, tokens=64)  # fmt: skip
        return result.first_p50

    print("interactive TTFT, idle ...", flush=True)
    idle = ttft()

    requests, results = bench.work / "batch.jsonl", bench.work / "results.jsonl"
    batch_file(requests, args.batch)
    print(f"submitting {args.batch} batch jobs (inferq submit) ...", flush=True)
    submitted = time.monotonic()
    submit = bench.spawn(
        pinned(CLIENT_CPU, sys.executable, "-m", "inferq.cli", "submit", str(requests),
               "--out", str(results), "--window", str(args.batch), "--config", str(gw.config)),
        env=gw.env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    # Measure once the backlog is most of the submission (not while it is still being queued).
    backlog = args.batch // 2
    while (q := queue(redis_url)).batch_running < 48 or q.batch_waiting < backlog:
        if time.monotonic() > deadline or submit.poll() is not None:
            raise SystemExit(f"the batch backlog did not build up: {q}")
        time.sleep(0.05)
    print(f"interactive TTFT, batch backlog {q.batch_waiting} waiting + "
          f"{q.batch_running} taken ...", flush=True)  # fmt: skip
    loaded = ttft()
    after = queue(redis_url)
    submit.wait(timeout=max(600.0, args.batch * args.batch_delay))
    return Figures(
        idle_ms=idle,
        loaded_ms=loaded,
        after=after,
        written=len(results.read_text().splitlines()),
        batch=args.batch,
        batch_s=time.monotonic() - submitted,
    )


def report(f: Figures) -> int:
    """Print the figures; 1 when the target is missed or the backlog was gone too soon."""
    ratio = f.loaded_ms / f.idle_ms
    ok = ratio <= TARGET_RATIO
    print()
    print(f"{'case':<52}{'ms':>8}")
    print(f"{'interactive 64-token stream TTFT p50, idle':<52}{f.idle_ms:>8.2f}")
    print(f"{'interactive 64-token stream TTFT p50, batch backlog':<52}{f.loaded_ms:>8.2f}")
    verdict = f"target <= {TARGET_RATIO:g}: {'OK' if ok else 'MISSED'}"
    print(f"{'ratio':<52}{ratio:>8.2f}   {verdict}")
    print(
        f"\nbatch: {f.written} of {f.batch} results written in {f.batch_s:.1f} s "
        f"({f.written / f.batch_s:.1f}/s); still waiting when the loaded case ended: "
        f"{f.after.batch_waiting} (must be > 0 for the case to count)"
    )
    backlog_held = f.after.batch_waiting > 0
    if not backlog_held:
        print("!! the backlog drained during the loaded case: raise --batch or --batch-delay")
    return 0 if ok and backlog_held and f.written == f.batch else 1


if __name__ == "__main__":
    sys.exit(main())
