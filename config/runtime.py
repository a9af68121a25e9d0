"""Process environment read once at each entry point: Redis URL, config file, log format."""

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CONFIG = Path(__file__).with_name("minimal_config.yaml")
_TRUE = frozenset({"1", "true", "yes", "on"})
CRASH_BEFORE_TERMINAL = "before-terminal"


@dataclass(frozen=True)
class RuntimeEnv:
    """What an inferq process reads from its environment (and nothing else does)."""

    redis_url: str
    config_path: Path
    log_level: str
    log_json: bool = False  # $INFERQ_LOG_JSON: one JSON object per log line (containers)
    # $INFERQ_CRASH_AT, for the fault tests only: a worker SIGKILLs itself at this point of a
    # job (CRASH_BEFORE_TERMINAL: with the backend's whole answer in hand, before its terminal
    # message), so a death at a moment no timing can hit is tested deterministically.
    crash_at: str | None = None


def runtime_env(config_arg: str | None = None, redis_arg: str | None = None) -> RuntimeEnv:
    """Resolve config path (argument, $INFERQ_CONFIG, shipped default) and $REDIS_URL."""
    config = config_arg or os.environ.get("INFERQ_CONFIG") or str(DEFAULT_CONFIG)
    return RuntimeEnv(
        redis_url=redis_arg or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        config_path=Path(config),
        log_level=os.environ.get("INFERQ_LOG_LEVEL", "INFO").upper(),
        log_json=os.environ.get("INFERQ_LOG_JSON", "").strip().lower() in _TRUE,
        crash_at=os.environ.get("INFERQ_CRASH_AT") or None,
    )
