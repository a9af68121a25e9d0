"""Broker errors, translated once from redis-py at this layer's boundary.

BrokerError
  ├── BrokerUnavailable   Redis cannot be reached (connect refused, timeout, reset)
  └── ReplyLost           the reply channel dropped messages for a job (gap or reconnect)
"""


class BrokerError(Exception):
    """Base of every error raised by `broker`."""


class BrokerUnavailable(BrokerError):
    """Redis is unreachable; callers answer 503 and retry later."""


class ReplyLost(BrokerError):
    """Messages for a job were lost on the way back; the answer would be truncated."""


class QueueFull(BrokerError):
    """A model group's queue holds `limit` jobs already; the job was not added."""

    def __init__(self, group: str, depth: int, limit: int) -> None:
        super().__init__(f"model group {group} has {depth} jobs queued (limit {limit})")
        self.group = group
        self.depth = depth
        self.limit = limit


class ReplyAborted(BrokerError):
    """The reader of a reply stream stopped waiting (e.g. its client disconnected)."""


class BrokerRefused(BrokerError):
    """Redis is there but refused a command (out of memory, read-only replica, bad key)."""
