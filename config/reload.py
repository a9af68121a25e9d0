"""Reading a config file again: has it changed, can the running fabric take it, what changed."""

import os
from dataclasses import dataclass
from pathlib import Path

from inferq.config.loader import load_config
from inferq.config.model import GatewayConfig


@dataclass(frozen=True)
class Stamp:
    """What `stat` says about the file; a new stamp means the file may have changed."""

    inode: int
    size: int
    mtime_ns: int


class ConfigFile:
    """The config file a process was started with, watched by polling `stat`.

    Polling needs no dependency, works on every file system (bind mounts, ConfigMaps that swap a
    symlink), and costs one `stat` a second.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp = self._read_stamp()

    def changed(self) -> bool:
        """True once per change of the file since the last call (or since it was opened)."""
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True

    def load(self) -> GatewayConfig:
        """Parse the file as it is now; raises ConfigError naming each problem."""
        self._stamp = self._read_stamp()
        return load_config(self.path)

    def _read_stamp(self) -> Stamp | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return Stamp(st.st_ino, st.st_size, st.st_mtime_ns)


def reload_blocker(old: GatewayConfig, new: GatewayConfig) -> str | None:
    """Why `new` cannot replace `old` without a restart, or None when it can."""
    if new.fabric.key_prefix != old.fabric.key_prefix:
        return (
            f"inferq_settings.key_prefix changed ({old.fabric.key_prefix!r} -> "
            f"{new.fabric.key_prefix!r}); that moves every queue, so it needs a restart"
        )
    where = (old.cache.host, old.cache.port, old.cache.password)
    if (new.cache.host, new.cache.port, new.cache.password) != where:
        return "cache_params host, port or password changed; the cache's Redis needs a restart"
    return None


def describe_change(old: GatewayConfig, new: GatewayConfig) -> str:
    """A short account of what a reload changes, for the log and `inferq reload`."""
    parts = []
    added = sorted(set(new.groups) - set(old.groups))
    removed = sorted(set(old.groups) - set(new.groups))
    changed = sorted(g for g in set(new.groups) & set(old.groups) if new.groups[g] != old.groups[g])
    if added:
        parts.append(f"groups added: {', '.join(added)}")
    if removed:
        parts.append(f"groups removed: {', '.join(removed)}")
    if changed:
        parts.append(f"deployments changed in: {', '.join(changed)}")
    names = set(old.aliases) | set(new.aliases)
    aliases = sorted(a for a in names if old.aliases.get(a) != new.aliases.get(a))
    if aliases:
        parts.append(f"aliases changed: {', '.join(aliases)}")
    if new.fallbacks != old.fallbacks:
        parts.append("fallbacks changed")
    for name in ("router", "cache", "fabric", "budgets", "budget_webhook"):
        if getattr(new, name) != getattr(old, name):
            parts.append(f"{name} settings changed")
    if new.master_key != old.master_key:
        parts.append("master key changed")
    return "; ".join(parts) or "no change"
