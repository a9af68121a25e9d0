"""The tables `make bench` and `make bench-compare` print and write next to their plots.

Figures are medians over repetitions, with the range in brackets when there were several. An
"added" figure is the gateway's minus the direct call's of the same round, and a ratio is taken
round by round too, so load on a shared machine that comes and goes cancels out where it can.
"""

import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.cases import CPU_CASE, Target, scalar


def commit() -> str:
    """The commit measured (`+dirty` when the worktree has changes)."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return run.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def header(measured: str, repeat: int) -> list[str]:
    """When, what (`measured`: the commit when the run started) and under which load."""
    load1, load5, _ = os.getloadavg()
    return [
        f"commit {measured}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, load average {load1:.1f} / {load5:.1f} (1 / 5 min), "
        f"{repeat} repetition(s), targets taking turns",
    ]


def _cell(values: Sequence[float], digits: int = 2) -> str:
    med = statistics.median(values)
    if min(values) == max(values):  # one round, or a figure taken once per run (memory)
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in [head, *rows]]  # fmt: skip
    return [line[0], "-" * len(line[0]), *line[1:]]


FIGURES = [
    ("non-stream latency p50 (ms), c=1", "latency_p50"),
    ("non-stream latency p99 (ms), c=1", "latency_p99"),
    ("64-token stream TTFT p50 (ms), c=1", "ttft_p50"),
    ("64-token stream TTFT p99 (ms), c=1", "ttft_p99"),
    (f"non-stream requests/s, c={CPU_CASE}", f"rps_c{CPU_CASE}"),
    (f"64-token streams/s, c={CPU_CASE}", f"sps_c{CPU_CASE}"),
    ("cache hit p50 (ms), c=1", "hit_p50"),
    ("cache hit p99 (ms), c=1", "hit_p99"),
]


def figures(targets: Sequence[Target]) -> list[str]:
    """Every measured figure of every target."""
    rows = []
    for label, key in FIGURES:
        cells = [[scalar(r, key) for r in t.runs] for t in targets]
        if all(math.isnan(v) for c in cells for v in c):  # all NaN: the case did not run
            continue
        rows.append([label, *(_cell(c) for c in cells)])
    return _table(["case", *(t.name for t in targets)], rows)


def sweep(targets: Sequence[Target]) -> list[str]:
    """Throughput against concurrency."""
    levels = sorted(targets[0].runs[0].rps)
    rows = []
    for kind, label in (("rps", "non-stream requests/s"), ("sps", "64-token streams/s")):
        for c in levels:
            rows.append([f"{label}, c={c}",
                         *(_cell([scalar(r, f"{kind}_c{c}") for r in t.runs], 1)
                           for t in targets)])  # fmt: skip
    return _table(["case", *(t.name for t in targets)], rows)


def resources(gateways: Sequence[Target]) -> list[str]:
    """CPU per request and RSS, per process tree and summed."""
    rows = []
    for t in gateways:
        names = list(t.gateway.processes)
        for name in [*names, "all"] if len(names) > 1 else names:
            key = "cpu_ms" if name == "all" else f"cpu_ms_{name}"
            cpu = _cell([scalar(r, key) for r in t.runs])
            idle = t.idle.rss if t.idle else {}
            after = t.after.rss if t.after else {}
            if name == "all":
                rss = [sum(idle.values()), sum(after.values())]
            else:
                rss = [idle.get(name, math.nan), after.get(name, math.nan)]
            rows.append([f"{t.name} {name}", cpu, *(f"{mb:.1f}" for mb in rss)])
    head = ["gateway process(es)", f"CPU ms / non-stream request, c={CPU_CASE}", "RSS idle (MB)",
            "RSS after the run (MB)"]  # fmt: skip
    return _table(head, rows)


def soak(gateways: Sequence[Target]) -> list[str]:
    """RSS over the memory soak, when one ran."""
    lines: list[str] = []
    for t in gateways:
        if not t.soak:
            continue
        samples = ", ".join(f"{m:g} min {sum(mb.values()):.1f}" for m, mb in t.soak)
        first, last = t.soak[0][1], t.soak[-1][1]
        growth = sum(last.values()) - sum(first.values())
        each = ", ".join(f"{name} {last[name] - first[name]:+.1f}" for name in first)
        lines.append(f"{t.name} memory soak ({t.soak[-1][0]:g} min at c=32, RSS of all its "
                     f"processes, MB): {samples}; growth {growth:+.1f} MB ({each})")  # fmt: skip
    return lines


@dataclass(frozen=True)
class Headline:
    """One figure of issue 15's table: how it is computed for a gateway, and its target."""

    label: str
    value: Callable[[Target, Target, int], float]  # (gateway, direct, round) -> figure
    higher_is_better: bool
    target: str  # printed as is
    met: Callable[[float, float], bool] | None  # (inferq's figure, ratio) -> target met?


def _added(key: str) -> Callable[[Target, Target, int], float]:
    return lambda t, d, i: scalar(t.runs[i], key) - scalar(d.runs[i], key)


def _own(key: str) -> Callable[[Target, Target, int], float]:
    return lambda t, d, i: scalar(t.runs[i], key)


def _rss(when: str) -> Callable[[Target, Target, int], float]:
    def value(t: Target, d: Target, i: int) -> float:
        usage = t.idle if when == "idle" else t.after
        return sum(usage.rss.values()) if usage else float("nan")

    return value


HEADLINES = [
    Headline("added latency, non-stream, c=1, p50 (ms)", _added("latency_p50"), False,
             "<= 1.0 ms", lambda v, r: v <= 1.0),
    Headline("added TTFT, 64-token stream, c=1, p50 (ms)", _added("ttft_p50"), False,
             "<= 1.0 ms", lambda v, r: v <= 1.0),
    Headline(f"non-stream requests/s, c={CPU_CASE}", _own(f"rps_c{CPU_CASE}"), True,
             ">= 5x LiteLLM", lambda v, r: r >= 5),
    Headline(f"64-token streams/s, c={CPU_CASE}", _own(f"sps_c{CPU_CASE}"), True,
             ">= 25x LiteLLM", lambda v, r: r >= 25),
    Headline("CPU per non-stream request, all processes (ms)", _own("cpu_ms"), False,
             "<= 1.0 ms", lambda v, r: v <= 1.0),
    Headline("memory idle, all processes (MB)", _rss("idle"), False, "<= 120 MB",
             lambda v, r: v <= 120),
    Headline("memory after the run, all processes (MB)", _rss("after"), False, "", None),
]  # fmt: skip


def headline(direct: Target, inferq: Target, other: Target | None) -> list[str]:
    """Issue 15's figures for inferq (and `other`, with inferq's advantage over it: ratio > 1
    means inferq is better), with the issue's targets."""
    rows = []
    rounds = range(len(inferq.runs))
    for h in HEADLINES:
        ours = [h.value(inferq, direct, i) for i in rounds]
        row = [h.label]
        ratio = float("nan")
        if other:
            theirs = [h.value(other, direct, i) for i in rounds]
            ratios = [(a / b if h.higher_is_better else b / a) if a and b else float("nan")
                      for a, b in zip(ours, theirs, strict=True)]  # fmt: skip
            ratio = statistics.median(ratios)
            row += [_cell(theirs), _cell(ours), _cell(ratios, 1) + "x"]
        else:
            row += [_cell(ours)]
        verdict = ""
        if h.met and (other or "LiteLLM" not in h.target):
            verdict = "OK" if h.met(statistics.median(ours), ratio) else "MISSED"
        row.append(f"{h.target} {verdict}".strip())
        rows.append(row)
    head = ["figure", *([other.name, "inferq", "inferq advantage"] if other else ["inferq"]),
            "target (issue 15)"]  # fmt: skip
    return _table(head, rows)


def publish(lines: Sequence[str], out: Path, name: str) -> Path:
    """Print `lines` and write them to `out/<name>.txt`."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.txt"
    text = "\n".join(lines) + "\n"
    print("\n" + text, end="", flush=True)
    path.write_text(text)
    return path
