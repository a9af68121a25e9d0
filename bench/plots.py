"""PNG plots next to the benchmark's table: the distribution of per-request latency (c=1) per
case and target, throughput against concurrency, and RSS over a memory soak.

matplotlib (the `bench` extra) draws them off-screen (Agg backend).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cases import Target

COLOURS = {"direct": "#7f7f7f", "inferq": "#1f77b4", "LiteLLM": "#d62728"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency(targets: Sequence[Target], path: Path, title: str) -> None:
    """Cumulative distribution of every c=1 request's latency (all repetitions pooled)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cases = [("non-stream request, c=1: latency", "totals", "latency"),
             ("64-token stream, c=1: time to first token", "firsts", "ttft")]  # fmt: skip
    for ax, (label, attr, case) in zip(axes, cases, strict=True):
        for t in targets:
            values = sorted(v for run in t.runs for v in getattr(getattr(run, case), attr))
            if not values:
                continue
            share = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, share, label=t.name, color=COLOURS.get(t.name), linewidth=1.6)
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("share of requests at or below")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(targets: Sequence[Target], path: Path, title: str) -> None:
    """Requests/s and streams/s against concurrency (median of repetitions, range as bars)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (kind, label) in zip(
        axes, (("rps", "non-stream requests/s"), ("sps", "64-token streams/s")), strict=True
    ):
        for t in targets:
            levels = sorted(t.runs[0].rps)
            per_level = [[getattr(run, kind)[c] for run in t.runs] for c in levels]
            med = [sorted(v)[len(v) // 2] for v in per_level]
            low = [m - min(v) for m, v in zip(med, per_level, strict=True)]
            high = [max(v) - m for m, v in zip(med, per_level, strict=True)]
            ax.errorbar(levels, med, yerr=[low, high], label=t.name, marker="o", capsize=3,
                        color=COLOURS.get(t.name))  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(f"{label} (log scale)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak(targets: Sequence[Target], path: Path, title: str) -> None:
    """RSS of all of a gateway's processes over its memory soak."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in targets:
        if t.soak:
            minutes = [m for m, _ in t.soak]
            total = [sum(mb.values()) for _, mb in t.soak]
            ax.plot(minutes, total, marker=".", label=t.name, color=COLOURS.get(t.name))
    ax.set_xlabel("minutes of load (c=32)")
    ax.set_ylabel("RSS, all processes (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(targets: Sequence[Target], out: Path, name: str, title: str) -> list[Path]:
    """Every plot of a run into `out` as `<name>-*.png`; the paths written."""
    paths = [out / f"{name}-latency.png", out / f"{name}-throughput.png"]
    latency(targets, paths[0], title)
    throughput(targets, paths[1], title)
    if any(t.soak for t in targets):
        paths.append(out / f"{name}-soak.png")
        soak(targets, paths[-1], title)
    return paths
