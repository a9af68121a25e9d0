"""CPU time and resident memory of processes and all their descendants, read from /proc (Linux).

A gateway is several processes (inferq: API, worker, Redis; `--processes N` adds children under
each), so each figure is summed over a named root's whole tree.
"""

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces), or None if gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """`root` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """User + system CPU time of the tree under `root`."""
    ticks = 0
    for pid in tree(root):
        if fields := _stat_fields(pid):
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(root: int) -> float:
    """Resident memory of the tree under `root`, in MB (10^6 bytes)."""
    kb = 0
    for pid in tree(root):
        try:
            status = (PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kb += int(line.split()[1])
    return kb * 1024 / 1e6


@dataclass(frozen=True)
class Usage:
    """CPU seconds and RSS (MB) per named process tree, at one moment."""

    cpu: dict[str, float]
    rss: dict[str, float]

    @classmethod
    def now(cls, processes: dict[str, int]) -> "Usage":
        return cls(
            {name: cpu_seconds(pid) for name, pid in processes.items()},
            {name: rss_mb(pid) for name, pid in processes.items()},
        )

    def cpu_since(self, before: "Usage") -> dict[str, float]:
        """CPU seconds spent per tree between `before` and this snapshot."""
        return {name: self.cpu[name] - before.cpu.get(name, 0.0) for name in self.cpu}
