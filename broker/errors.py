"""Broker errors, translated once from redis-py at this layer's boundary.

BrokerError
  ├── BrokerUnavailable   Redis cannot be reached (connect refused, timeout, reset)
  ├── BrokerRefused       Redis is there but refused a command
  ├── ReplyLost           the reply channel dropped messages for a job (gap or reconnect)
  ├── ReplyAborted        the reader of a reply stream stopped waiting
  ├── QueueFull           a lane of a model group is at its admission limit
  └── InvalidBody         a request body that is not a valid OpenAI request
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


class InvalidBody(BrokerError):
    """A request body is not a valid OpenAI request; `param` names the first bad field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
