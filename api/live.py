"""Which model groups have a live worker: a view refreshed in the background, once a second.

A request for a group nobody serves is refused at once (or moves on along its alias chain)
instead of waiting in a queue until its deadline.
"""

import asyncio
import logging
from contextlib import suppress

from broker.connection import Redis
from broker.errors import BrokerError
from broker.keys import Keys
from broker.registry import live_workers

log = logging.getLogger("inferq.api")


class LiveGroups:
    """The set of groups with at least one live worker, as of the last refresh."""

    def __init__(self, redis: Redis, keys: Keys, interval: float = 1.0) -> None:
        self._redis = redis
        self._keys = keys
        self._interval = interval
        self.groups: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> frozenset[str]:
        """Read the worker registry now (raises BrokerError when Redis is down)."""
        self.groups = frozenset(w.group for w in await live_workers(self._redis, self._keys))
        return self.groups

    def start(self) -> None:
        """Refresh in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name="live-groups")

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with suppress(BrokerError):  # requests report the outage themselves
                await self.refresh()
            await asyncio.sleep(self._interval)
