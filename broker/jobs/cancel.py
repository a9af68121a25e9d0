"""Cancellation: API processes announce abandoned jobs; every worker hears it.

A worker running the job aborts its backend call; one that picks the job up later skips it
(workers remember recent cancellations for a while).
"""

from collections import OrderedDict
from collections.abc import Callable

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys


async def cancel(redis: Redis, keys: Keys, job_id: str) -> None:
    """Tell every worker that `job_id` is no longer wanted."""
    async with translate_errors():
        await redis.publish(keys.cancel(), job_id.encode())


class CancelListener:
    """Remembers recent cancellations and calls `on_cancel(job_id)`; fed by a Subscriber on
    `keys.cancel()` (a worker process shares one subscription for all its channels)."""

    def __init__(self, on_cancel: Callable[[str], None]) -> None:
        self._on_cancel = on_cancel
        self._recent: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._recent

    def heard(self, data: bytes) -> None:
        """A job id arrived on the cancel channel."""
        job_id = data.decode()
        self._recent[job_id] = None
        while len(self._recent) > 100_000:
            self._recent.popitem(last=False)
        self._on_cancel(job_id)
