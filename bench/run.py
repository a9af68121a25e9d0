"""`make bench`: the same load sent straight to a fake backend and through inferq, in one run.

The fake backend and the load generator share core 0; inferq's API, worker and Redis share core 1
(taskset), so every figure is "inferq on one core". Prints added latency, added time to first
token, throughput against concurrency, CPU per request and memory of inferq's processes (median
of `--repeat` rounds in which the targets take turns), against the targets of issues 2 and 15;
writes the table and PNG plots to `--out` (bench/results). `--soak-minutes M` then loads inferq
for M minutes and reports the growth of its memory.
"""

import argparse
import statistics
import sys

import httpx

from bench import cases, plots, report
from bench.harness import KEY, Bench, Gateway, load

# Issue 2's targets: `make bench` fails when one is missed.
TARGETS = {
    "added_latency_p50_ms": ("<=", 3.0),
    "added_ttft_p50_ms": ("<=", 3.0),
    "requests_per_s_c32": (">=", 500.0),
    "streams_per_s_c32": (">=", 100.0),
    "cache_hit_p50_ms": ("<=", 1.0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    cases.add_arguments(parser)
    parser.add_argument(
        "--virtual-keys",
        action="store_true",
        help="also measure latency with a virtual key (no limits) and a limited one (issue 12)",
    )
    args = parser.parse_args()
    measured = report.commit()  # before anything else can change the tree
    opts = cases.options(args, cache_hit=True)
    keyed: dict[str, float] = {}
    with Bench() as bench:
        direct = cases.Target(bench.backend())
        inferq = cases.Target(bench.inferq(direct.gateway, cache=True))
        targets = [direct, inferq]
        cases.run_all(targets, opts, args.repeat)
        if args.virtual_keys:
            keyed = measure_keys(inferq.gateway, args)
        if args.soak_minutes:
            cases.soak(inferq, args.soak_minutes)
    lines = [
        *report.header(measured, args.repeat),
        "",
        *report.figures(targets),
        "",
        *report.sweep(targets),
        "",
        *report.resources([inferq]),
        *(["", *report.soak([inferq])] if inferq.soak else []),
        "",
        *report.headline(direct, inferq, None),
        "",
    ]
    code, verdicts = issue2(direct, inferq)
    lines += verdicts
    for name, value in keyed.items():
        lines.append(f"{name:<42}{value - direct.median('latency_p50'):>8.2f}")
    lines.append("\nboth sides measured in one run; inferq = API + worker + Redis on CPU 1")
    report.publish(lines, args.out, "bench")
    title = f"make bench, commit {measured}: fake backend direct vs through inferq"
    for path in plots.write_all(targets, args.out, "bench", title):
        print(f"wrote {path}")
    errors = sum(r.errors for t in targets for r in t.runs) + inferq.throughput_errors
    return 1 if code or errors else 0


def issue2(direct: cases.Target, via: cases.Target) -> tuple[int, list[str]]:
    """Issue 2's figures with their verdicts; 1 when one is missed."""
    figures = {
        "added_latency_p50_ms": via.median("latency_p50") - direct.median("latency_p50"),
        "added_latency_p99_ms": via.median("latency_p99") - direct.median("latency_p99"),
        "added_ttft_p50_ms": via.median("ttft_p50") - direct.median("ttft_p50"),
        "added_ttft_p99_ms": via.median("ttft_p99") - direct.median("ttft_p99"),
        "requests_per_s_c32": via.median("rps_c32"),
        "streams_per_s_c32": via.median("sps_c32"),
        "cache_hit_p50_ms": via.median("hit_p50"),
    }
    failed, lines = 0, []
    for name, value in figures.items():
        verdict = ""
        if target := TARGETS.get(name):
            op, limit = target
            ok = value <= limit if op == "<=" else value >= limit
            failed += not ok
            verdict = f"target (issue 2) {op} {limit:g}: {'OK' if ok else 'MISSED'}"
        lines.append(f"{name:<26}{value:>10.2f}   {verdict}")
    return (1 if failed else 0), lines


def measure_keys(gw: Gateway, args: argparse.Namespace, rounds: int = 5) -> dict[str, float]:
    """Non-stream latency p50 with the master key, a virtual key without limits and one with
    rpm/tpm/parallel limits (added latency = minus direct). The three take turns, `rounds`
    times, and each figure is the median of its rounds: on a shared machine, load that comes
    and goes would otherwise land on one key's run and not the others'."""
    headers = {"Authorization": f"Bearer {KEY}"}
    free = httpx.post(f"{gw.base}/key/generate", json={}, headers=headers).json()["key"]
    limits = {"rpm_limit": 10**6, "tpm_limit": 10**9, "max_parallel_requests": 1000}
    limited = httpx.post(f"{gw.base}/key/generate", json=limits, headers=headers).json()["key"]
    keys = {"master key": KEY, "virtual key": free, "virtual key, limits": limited}
    p50s: dict[str, list[float]] = {name: [] for name in keys}
    print(f"through inferq, master and virtual keys in turn ({rounds} rounds) ...", flush=True)
    order = list(keys)
    for i in range(rounds):
        for name in order[i % 3 :] + order[: i % 3]:  # each goes first in turn
            lat = load(gw.url, keys[name], requests=max(args.n_latency // rounds, 20))
            p50s[name].append(lat.total_p50)
    return {f"added_latency_p50_ms ({name})": statistics.median(v) for name, v in p50s.items()}


if __name__ == "__main__":
    sys.exit(main())
