"""The cases `make bench` and `make bench-compare` run against each target: latency and time to
first token at c=1, throughput at a range of concurrencies, CPU per request and memory of the
gateway's processes, and an optional memory soak.

Targets take turns within each repetition (each goes first in turn), so load on a shared machine
that comes and goes does not land on one target only; figures are the median of repetitions.
"""

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import WARMUP, Gateway, Load, load
from bench.procstat import Usage

DEFAULT_CONCURRENCY = (1, 4, 16, 32, 64)
CPU_CASE = 32  # the concurrency whose non-stream case gives CPU per request


@dataclass(frozen=True)
class Options:
    """How much to measure."""

    n_latency: int = 1000  # requests per c=1 case
    duration: float = 5.0  # seconds per throughput case
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY
    cache_hit: bool = False  # also the cache-hit case (inferq's cache)


@dataclass
class Figures:
    """One repetition against one target."""

    latency: Load  # non-stream, c=1, with every request's latency
    ttft: Load  # 64-token stream, c=1
    rps: dict[int, float]  # non-stream requests/s by concurrency
    sps: dict[int, float]  # 64-token streams/s by concurrency
    cpu_ms: dict[str, float]  # CPU per non-stream request at c=CPU_CASE, per process tree
    hit: Load | None = None

    @property
    def errors(self) -> int:
        loads = [self.latency, self.ttft, *([self.hit] if self.hit else [])]
        return sum(r.error_count for r in loads)


@dataclass
class Target:
    """A gateway and what was measured on it, over every repetition."""

    gateway: Gateway
    runs: list[Figures] = field(default_factory=list)
    idle: Usage | None = None  # before any load
    after: Usage | None = None  # after every repetition
    soak: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (min, MB each)
    throughput_errors: int = 0

    @property
    def name(self) -> str:
        return self.gateway.name

    def median(self, figure: str) -> float:
        """The median over repetitions of one scalar figure (see `scalar`)."""
        return statistics.median(scalar(run, figure) for run in self.runs)

    def spread(self, figure: str) -> tuple[float, float]:
        values = [scalar(run, figure) for run in self.runs]
        return min(values), max(values)


def scalar(run: Figures, figure: str) -> float:
    """One figure of a run by name: latency_p50/p99, ttft_p50/p99, hit_p50/p99, rps_c<N>,
    sps_c<N>, cpu_ms (all process trees) or cpu_ms_<tree>."""
    kind, _, rest = figure.partition("_")
    if kind in ("rps", "sps"):
        return (run.rps if kind == "rps" else run.sps)[int(rest.removeprefix("c"))]
    if kind == "cpu":
        name = rest.removeprefix("ms").removeprefix("_")
        return run.cpu_ms[name] if name else sum(run.cpu_ms.values())
    source = {"latency": run.latency, "ttft": run.ttft, "hit": run.hit}[kind]
    if source is None:
        return float("nan")
    attr = {"latency": "total", "hit": "total", "ttft": "first"}[kind]
    return float(getattr(source, f"{attr}_{rest}"))


def measure(gw: Gateway, opts: Options) -> tuple[Figures, int]:
    """Every case once against `gw`; also the errors of the throughput cases."""
    c1 = {"concurrency": 1, "requests": opts.n_latency, "samples": True}
    latency = load(gw.url, gw.key, tokens=16, **c1)
    ttft = load(gw.url, gw.key, stream=True, tokens=64, **c1)
    hit = load(gw.url, gw.key, tokens=16, extra="{}", **c1) if opts.cache_hit else None
    rps: dict[int, float] = {}
    sps: dict[int, float] = {}
    cpu_ms: dict[str, float] = {}
    errors = 0
    for c in sorted({*opts.concurrency, CPU_CASE}):
        before = Usage.now(gw.processes)
        result = load(gw.url, gw.key, concurrency=c, duration=opts.duration, tokens=16)
        rps[c], errors = result.rate, errors + result.error_count
        if c == CPU_CASE and gw.processes:
            spent = Usage.now(gw.processes).cpu_since(before)
            served = result.count + WARMUP + result.error_count  # the warm-up's too
            cpu_ms = {name: 1000 * s / served for name, s in spent.items()}
        result = load(gw.url, gw.key, stream=True, concurrency=c, duration=opts.duration,
                      tokens=64)  # fmt: skip
        sps[c], errors = result.rate, errors + result.error_count
    return Figures(latency, ttft, rps, sps, cpu_ms, hit), errors


def run_all(targets: Sequence[Target], opts: Options, repeat: int) -> None:
    """`repeat` rounds; in each, every target is measured once, each going first in turn."""
    for t in targets:
        if t.gateway.processes:
            t.idle = Usage.now(t.gateway.processes)
    for i in range(repeat):
        order = [*targets[i % len(targets) :], *targets[: i % len(targets)]]
        for t in order:
            print(f"round {i + 1}/{repeat}: {t.name} ...", flush=True)
            figures, errors = measure(t.gateway, opts)
            t.runs.append(figures)
            t.throughput_errors += errors
    for t in targets:
        if t.gateway.processes:
            t.after = Usage.now(t.gateway.processes)


def soak(t: Target, minutes: float, slice_s: float = 30.0) -> None:
    """Load `t` for `minutes` (c=32, non-stream and 64-token streams taking turns in slices of
    `slice_s`), recording the RSS of each of its processes before and after each slice."""
    procs = t.gateway.processes
    t.soak = [(0.0, Usage.now(procs).rss)]
    slices = max(1, round(minutes * 60 / slice_s))
    print(f"memory soak of {t.name}: {slices} slices of {slice_s:g} s ...", flush=True)
    for i in range(slices):
        result = load(t.gateway.url, t.gateway.key, stream=bool(i % 2), concurrency=32,
                      duration=slice_s, tokens=64 if i % 2 else 16, warmup=0)  # fmt: skip
        t.throughput_errors += result.error_count
        t.soak.append(((i + 1) * slice_s / 60, Usage.now(procs).rss))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `bench.run` and `bench.compare` share."""
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput case")
    parser.add_argument("--n-latency", type=int, default=1000, help="requests per c=1 case")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (targets take turns)")
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, DEFAULT_CONCURRENCY)),
        help=f"comma-separated concurrencies of the throughput cases ({CPU_CASE} is always in)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        help="afterwards, load each gateway this long and report the growth of its RSS",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="where the table and plots go"
    )


def options(args: argparse.Namespace, cache_hit: bool) -> Options:
    return Options(
        n_latency=args.n_latency,
        duration=args.duration,
        concurrency=tuple(int(c) for c in args.concurrency.split(",") if c),
        cache_hit=cache_hit,
    )
