"""Side-by-side runs of two (or more) checkouts of inferq, interleaved, with CPU per request.

`python -m bench.ab --tree /path/to/old --tree . [--rounds 3]` runs, for each tree in turn and
for `rounds` rounds, the layout of `bench.run` (fake backend and load generator on CPU 0; the
tree's API, worker and a fresh Redis on CPU 1) and measures non-stream latency at c=1, time to
first token at c=1, and requests/s and 64-token streams/s at c=32, plus the CPU time each
gateway process spent per request in the c=32 non-stream case (from /proc). A tree is any
directory holding inferq's source (`git archive <commit> | tar -x -C DIR`); its processes run
with it as their working directory, so `python -m inferq.cli` imports that tree's code.
Prints the median of the rounds per tree: on a shared machine, only figures measured side by
side, alternating, compare.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import BYPASS, CLIENT_CPU, FABRIC_CPU, KEY, gateway_config, pinned, wait_port
from inferq.cli.local import EmbeddedRedis, free_port

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def loadgen(url: str, *, stream: bool, concurrency: int, seconds: float, requests: int,
            tokens: int) -> dict[str, float]:  # fmt: skip
    cmd = pinned(
        CLIENT_CPU, sys.executable, "-m", "bench.loadgen", "--url", url, "--key", KEY,
        "--concurrency", str(concurrency), "--duration", str(seconds),
        "--requests", str(requests), "--tokens", str(tokens), "--extra", BYPASS,
    )  # fmt: skip
    if stream:
        cmd.append("--stream")
    out = subprocess.run(cmd, capture_output=True, check=True, text=True, timeout=seconds + 120)
    result = json.loads(out.stdout)
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float)}


def one_round(tree: Path, seconds: float, n_latency: int) -> dict[str, float]:
    """The four cases and CPU per request against the code in `tree`."""
    redis = EmbeddedRedis(cpus=FABRIC_CPU).start()
    workdir = tempfile.TemporaryDirectory(prefix="inferq-ab-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend_port, api_port = free_port(), free_port()
        config = Path(workdir.name) / "bench.yaml"
        config.write_text(gateway_config(backend_port, cache=True))
        env = {**os.environ, "REDIS_URL": redis.url, "INFERQ_LOG_LEVEL": "WARNING"}
        backend = subprocess.Popen(
            pinned(CLIENT_CPU, sys.executable, "-m", "tests.support.fake_backend",
                   "--port", str(backend_port)), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(backend)
        wait_port(backend_port, backend, "fake backend")
        cli = (sys.executable, "-m", "inferq.cli")
        worker = subprocess.Popen(
            pinned(FABRIC_CPU, *cli, "worker", "--config", str(config)), env=env, cwd=tree
        )
        api = subprocess.Popen(
            pinned(FABRIC_CPU, *cli, "api", "--config", str(config), "--port", str(api_port)),
            env=env,
            cwd=tree,
        )
        procs += [worker, api]
        wait_port(api_port, api, "inferq api")
        time.sleep(1.0)
        url = f"http://127.0.0.1:{api_port}/v1/chat/completions"
        lat = loadgen(url, stream=False, concurrency=1, seconds=60, requests=n_latency, tokens=16)
        ttft = loadgen(url, stream=True, concurrency=1, seconds=60, requests=n_latency, tokens=64)
        sps = loadgen(url, stream=True, concurrency=32, seconds=seconds, requests=10**9,
                      tokens=64)  # fmt: skip
        assert redis.process is not None
        pids = {"api": api.pid, "worker": worker.pid, "redis": redis.process.pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        rps = loadgen(url, stream=False, concurrency=32, seconds=seconds, requests=10**9,
                      tokens=16)  # fmt: skip
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        redis.stop()
        workdir.cleanup()
    cpu = {f"cpu_ms_{name}": (after[name] - before[name]) * 1000 / rps["count"] for name in pids}
    errors = sum(r["error_count"] for r in (lat, ttft, rps, sps))
    return {
        "latency_p50": lat["total_p50"],
        "ttft_p50": ttft["first_p50"],
        "rps": rps["count"] / rps["wall_s"],
        "sps": sps["count"] / sps["wall_s"],
        **cpu,
        "cpu_ms_total": sum(cpu.values()),
        "errors": errors,
    }


ROWS = [
    ("non-stream latency p50 (ms), c=1", "latency_p50"),
    ("64-token stream TTFT p50 (ms), c=1", "ttft_p50"),
    ("non-stream requests/s, c=32", "rps"),
    ("64-token streams/s, c=32", "sps"),
    ("CPU ms per request, API", "cpu_ms_api"),
    ("CPU ms per request, worker", "cpu_ms_worker"),
    ("CPU ms per request, Redis", "cpu_ms_redis"),
    ("CPU ms per request, all three", "cpu_ms_total"),
    ("errors", "errors"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", action="append", required=True, help="a checkout to measure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per c=32 case")
    parser.add_argument("--n-latency", type=int, default=500, help="requests per c=1 case")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.tree]
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    for i in range(args.rounds):
        for tree in trees:
            print(f"round {i + 1}: {tree} ...", flush=True)
            runs[tree].append(one_round(tree, args.duration, args.n_latency))
            print("  " + json.dumps({k: round(v, 2) for k, v in runs[tree][-1].items()}))
    print()
    print(f"{'median of ' + str(args.rounds) + ' rounds':<36}" + "".join(
        f"{tree.name[-14:]:>16}" for tree in trees))  # fmt: skip
    for label, key in ROWS:
        values = [statistics.median(r[key] for r in runs[tree]) for tree in trees]
        print(f"{label:<36}" + "".join(f"{v:>16.2f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
